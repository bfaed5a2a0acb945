"""Check every linked video cheaply, drop or keep short ones, assign shards, write the index."""

import pandas as pd

from regiongraph.dataset.index import build_index
from regiongraph.io import merge_dropped, read_dropped, write_csv, write_parquet
from regiongraph.jobs import start_job

start_job(snakemake.log[0])
videos = pd.read_parquet(snakemake.input.videos)
result = build_index(
    videos,
    shards=dict(snakemake.params.shards),
    min_frames=snakemake.params.min_frames,
    short_videos=snakemake.params.short_videos,
    workers=snakemake.threads,
)
for split, table in result.splits.items():
    write_parquet(snakemake.output[split], table)
# what the split stage left out, then what this one did: the dropped rule adds later stages'
write_csv(snakemake.output.dropped, merge_dropped([read_dropped(snakemake.input.dropped), result.dropped]))
write_csv(snakemake.output.labels, pd.read_csv(snakemake.input.labels))
