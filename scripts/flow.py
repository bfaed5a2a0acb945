"""TV-L1 flow for one index shard: ``flow/{split}/shard-{k}.h5`` (glue; see regiongraph.flow.stage)."""

from regiongraph.flow.stage import compute_flow_shard
from regiongraph.gpus import claim_gpu_slot
from regiongraph.runlog import log_to_file

log_to_file(snakemake.log[0])
# the torch backend may run on a GPU: one per job when several jobs share a machine
claim_gpu_slot(snakemake.params.device if snakemake.params.backend == "torch" else "cpu")
compute_flow_shard(
    snakemake.input.index,
    int(snakemake.wildcards.k),
    snakemake.output[0],
    backend=snakemake.params.backend,
    bound=snakemake.params.bound,
    tvl1=dict(snakemake.params.tvl1),
    workers=snakemake.threads,
    device=snakemake.params.device,
    batch_size=snakemake.params.batch_size,
    kernel=snakemake.params.kernel,
)
