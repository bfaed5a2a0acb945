"""Rule finetune_stream: fine-tune one stream's backbone on the train split
(regiongraph.train.finetune); epochs 0 passes the weights through."""


from regiongraph.features.cache import BackboneSettings
from regiongraph.features.clips import ClipSettings
from regiongraph.jobs import start_job
from regiongraph.train.finetune import FinetuneSettings, finetune_backbone

log = start_job(snakemake.log[0], snakemake.params.device, snakemake.threads)
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
    jpeg_decode=params.jpeg_decode,
)
log.info("finetune %s: %s", snakemake.wildcards.stream, result)
