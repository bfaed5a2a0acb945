"""Rule features_shard: I3D + RoIAlign features of one shard (regiongraph.features.cache)."""

from regiongraph.features.cache import BackboneSettings, FeatureJob, cache_features_shard
from regiongraph.features.clips import ClipSettings
from regiongraph.jobs import start_job

params = snakemake.params
log = start_job(snakemake.log[0], params.device, snakemake.threads)
stream = snakemake.wildcards.stream
counts = cache_features_shard(
    index_path=snakemake.input.index,
    shard=int(snakemake.wildcards.k),
    output=snakemake.output[0],
    weights_path=snakemake.input.weights,
    clip=ClipSettings(
        stream=stream, per_frame=params.per_frame, views=params.views, crops=params.crops, **params.clip
    ),
    backbone=BackboneSettings(**params.backbone),
    boxes_path=snakemake.input.boxes,
    boxes_backend=params.boxes_backend,
    job=FeatureJob(
        device=params.device,
        batch_size=params.batch_size,
        workers=params.workers,
        jpeg_decode=params.jpeg_decode,
    ),
    flow_path=snakemake.input.flow[0] if stream == "flow" else None,
)
log.info(
    "features %s %s shard %s: %s", stream, snakemake.wildcards.split, snakemake.wildcards.k, counts
)
