"""Rule boxes_shard: object boxes on the box frames of one shard's videos (regiongraph.detect)."""

from regiongraph.detect.stage import BoxSettings, extract_boxes_shard
from regiongraph.jobs import start_job

params = snakemake.params
settings = BoxSettings(**params.settings)
detector = settings.backend != "annotations"
log = start_job(snakemake.log[0], params.device, snakemake.threads if detector else None)
counts = extract_boxes_shard(
    index_path=snakemake.input.index,
    shard=int(snakemake.wildcards.k),
    output=snakemake.output[0],
    settings=settings,
    num_frames=params.num_frames,
    frame_stride=params.frame_stride,
    sampling=params.sampling,
    views=params.views,
    box_every=params.box_every,
    device=params.device,
    weights_cache=params.weights_cache,
    box_annotations=None if detector else list(snakemake.input.extra),
    box_classes=snakemake.input.get("classes"),
)
log.info("boxes %s shard %s: %s", snakemake.wildcards.split, snakemake.wildcards.k, counts)
