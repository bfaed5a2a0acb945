"""TV-L1 flow for one index shard: ``flow/{split}/shard-{k}.h5`` (glue; see regiongraph.flow.stage)."""

from regiongraph.flow.stage import compute_flow_shard
from regiongraph.jobs import start_job

params = snakemake.params
start_job(snakemake.log[0], params.device)  # the torch backend sizes its own threads
compute_flow_shard(
    snakemake.input.index,
    int(snakemake.wildcards.k),
    snakemake.output[0],
    backend=params.backend,
    bound=params.bound,
    tvl1=dict(params.tvl1),
    workers=snakemake.threads,
    device=params.device,
    batch_size=params.batch_size,
    kernel=params.kernel,
    jpeg_decode=params.jpeg_decode,
)
