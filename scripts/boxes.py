"""Rule boxes_shard: object boxes on the box frames of one shard's videos (regiongraph.detect)."""

from regiongraph.detect.stage import BoxSettings, extract_boxes_shard
from regiongraph.gpus import claim_gpu_slot
from regiongraph.runlog import log_to_file

log = log_to_file(snakemake.log[0])
settings = BoxSettings(**snakemake.params.settings)
if settings.backend != "annotations":
    import torch

    claim_gpu_slot(snakemake.params.device)  # one GPU per job when several jobs share a machine

    torch.set_num_threads(snakemake.threads)
counts = extract_boxes_shard(
    index_path=snakemake.input.index,
    shard=int(snakemake.wildcards.k),
    output=snakemake.output[0],
    settings=settings,
    num_frames=snakemake.params.num_frames,
    frame_stride=snakemake.params.frame_stride,
    sampling=snakemake.params.sampling,
    device=snakemake.params.device,
    box_annotations=list(snakemake.input.extra) if settings.backend == "annotations" else None,
    weights_cache=snakemake.params.weights_cache,
)
log.info("boxes %s shard %s: %s", snakemake.wildcards.split, snakemake.wildcards.k, counts)
