"""Rule dropped: gather every stage's dropped videos into index/dropped.csv (regiongraph.io)."""

import pandas as pd

from regiongraph.io import merge_dropped, read_dropped, shard_drops, summarise_dropped, write_csv
from regiongraph.jobs import start_job

log = start_job(snakemake.log[0])
tables = [read_dropped(snakemake.input.index)]
tables += [pd.DataFrame(shard_drops(path)) for path in snakemake.input.shards]
merged = merge_dropped(tables)
write_csv(snakemake.output[0], merged)
log.info("\n".join(summarise_dropped(merged)) or "no video was left out")
