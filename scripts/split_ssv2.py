"""SSv2: read the labels (zip or folder) and the split, link every video's frame folder into
frames/{split}/{label_index}/{video_id} (regiongraph.dataset.ssv2)."""

import pandas as pd

from regiongraph.dataset.ssv2 import split_ssv2
from regiongraph.io import write_csv, write_parquet
from regiongraph.jobs import start_job

start_job(snakemake.log[0])
result = split_ssv2(
    annotations=snakemake.input.labels,
    raw_frames=snakemake.params.raw_frames,
    frames_out=snakemake.output.frames,
    unknown_labels=snakemake.params.unknown_labels,
    splits_folder=snakemake.input.get("splits"),
    decode_dropped=pd.read_csv(snakemake.params.decode_dropped, dtype=str, keep_default_na=False),
)
write_parquet(snakemake.output.videos, result.videos)
write_parquet(snakemake.output.listed, result.listed)
write_csv(snakemake.output.dropped, result.dropped)
labels = pd.DataFrame({"label_index": range(len(result.labels)), "label": result.labels})
write_csv(snakemake.output.labels, labels)
