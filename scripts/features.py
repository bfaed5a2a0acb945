"""Rule features_shard: I3D + RoIAlign features of one shard (regiongraph.features.cache)."""

import torch

from regiongraph.features.cache import BackboneSettings, cache_features_shard
from regiongraph.features.clips import ClipSettings
from regiongraph.gpus import claim_gpu_slot
from regiongraph.runlog import log_to_file

log = log_to_file(snakemake.log[0])
claim_gpu_slot(snakemake.params.device)  # one GPU per job when several jobs share a machine
torch.set_num_threads(snakemake.threads)
params = snakemake.params
stream = snakemake.wildcards.stream
counts = cache_features_shard(
    index_path=snakemake.input.index,
    shard=int(snakemake.wildcards.k),
    output=snakemake.output[0],
    weights_path=snakemake.input.weights,
    clip=ClipSettings(stream=stream, per_frame=params.per_frame, **params.clip),
    backbone=BackboneSettings(**params.backbone),
    boxes_path=snakemake.input.boxes,
    boxes_backend=params.boxes_backend,
    flow_path=snakemake.input.flow[0] if stream == "flow" else None,
    device=params.device,
    batch_size=params.batch_size,
    workers=params.workers,
)
log.info(
    "features %s %s shard %s: %s", stream, snakemake.wildcards.split, snakemake.wildcards.k, counts
)
