"""Link every listed video's frames into frames/{split}/{label_index}/{video_id}."""

import os
from pathlib import Path

import pandas as pd

from regiongraph.dataset.annotations import split_videos
from regiongraph.io import write_csv, write_parquet
from regiongraph.jobs import start_job

start_job(snakemake.log[0])
result = split_videos(
    annotations=os.path.dirname(snakemake.input.labels),
    raw_frames=Path(snakemake.params.raw_frames),
    frames_out=snakemake.output.frames,
    unknown_labels=snakemake.params.unknown_labels,
)
write_parquet(snakemake.output.videos, result.videos)
write_parquet(snakemake.output.listed, result.listed)
write_csv(snakemake.output.dropped, result.dropped)
labels = pd.DataFrame({"label_index": range(len(result.labels)), "label": result.labels})
write_csv(snakemake.output.labels, labels)
