"""Rule finetune_stream: fine-tune one stream's backbone on the train split
(regiongraph.features.finetune); epochs 0 passes the weights through."""

import torch

from regiongraph.features.cache import BackboneSettings
from regiongraph.features.clips import ClipSettings
from regiongraph.features.finetune import FinetuneSettings, finetune_backbone
from regiongraph.gpus import claim_gpu_slot
from regiongraph.runlog import log_to_file

log = log_to_file(snakemake.log[0])
claim_gpu_slot(snakemake.params.device)  # one GPU per job when several jobs share a machine
torch.set_num_threads(snakemake.threads)
params = snakemake.params
tuning = dict(params.finetune)
clip = ClipSettings(
    stream=snakemake.wildcards.stream,
    training=True,
    temporal_jitter=tuning.pop("temporal_jitter"),
    random_crop=tuning.pop("random_crop"),
    seed=params.seed,
    **params.clip,
)
result = finetune_backbone(
    index_path=snakemake.input.index,
    labels_path=snakemake.input.labels,
    weights_in=snakemake.input.weights,
    weights_out=snakemake.output[0],
    checkpoint_dir=params.checkpoints,
    clip=clip,
    backbone=BackboneSettings(**params.backbone),
    settings=FinetuneSettings(seed=params.seed, **tuning),
    flow_paths=dict(enumerate(snakemake.input.flow)),
    device=params.device,
    manifest_path=snakemake.input.manifest,
)
log.info("finetune %s: %s", snakemake.wildcards.stream, result)
