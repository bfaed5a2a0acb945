"""Rule weights: backbone weights for both streams (regiongraph.features.weights)."""

from regiongraph.features.weights import prepare_weights
from regiongraph.jobs import start_job

log = start_job(snakemake.log[0])
meta = prepare_weights(
    source=snakemake.params.weights,
    arch=snakemake.params.arch,
    outputs={"rgb": snakemake.output.rgb, "flow": snakemake.output.flow},
    cache_dir=snakemake.params.cache,
    width_per_group=snakemake.params.width_per_group,
    seed=snakemake.params.seed,
    sha256=snakemake.params.sha256,
)
log.info("weights: %s", meta)
