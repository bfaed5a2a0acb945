# Stages 6-7: backbone weights (download + convert), optional fine-tuning, feature caching.
# weights/{rgb,flow}.pt -> weights/finetuned/{stream}.pt -> features/{stream}/{split}/shard-{k}.h5


include: "backbone_inputs.smk"


BACKBONE = config["backbone"]
BACKBONE_WEIGHTS = BACKBONE["weights"]
BACKBONE_GPU = 0 if config["device"] == "cpu" else 1
BACKBONE_ARCH = {
    key: BACKBONE[key]
    for key in (
        "arch",
        "conv1_temporal_stride",
        "pool1_temporal",
        "res5_stride",
        "width_per_group",
    )
}
BACKBONE_CLIP = {
    key: BACKBONE[key]
    for key in (
        "num_frames",
        "frame_stride",
        "sampling",
        "resize_short",
        "crop_size",
        "mean",
        "std",
    )
}

if BACKBONE["crop_size"] > BACKBONE["resize_short"]:
    raise ValueError(
        f"backbone.crop_size ({BACKBONE['crop_size']}) must not exceed "
        f"backbone.resize_short ({BACKBONE['resize_short']})"
    )
if (
    BACKBONE_WEIGHTS
    and "://" not in BACKBONE_WEIGHTS
    and not os.path.isfile(BACKBONE_WEIGHTS)
):
    raise ValueError(
        f"backbone.weights: {BACKBONE_WEIGHTS} does not exist (a path or URL of the Caffe2 "
        "pickle, or null for random weights)"
    )
# a local weights file is an input, so that replacing it reruns the conversion
BACKBONE_WEIGHTS_INPUT = (
    [BACKBONE_WEIGHTS] if BACKBONE_WEIGHTS and "://" not in BACKBONE_WEIGHTS else []
)


rule weights:
    input:
        BACKBONE_WEIGHTS_INPUT,
    output:
        rgb=results("weights/rgb.pt"),
        flow=results("weights/flow.pt"),
    log:
        logs("weights/weights.log"),
    benchmark:
        benchmarks("weights/weights.tsv")
    conda:
        "../envs/torch.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=60,
    params:
        weights=BACKBONE_WEIGHTS,
        sha256=BACKBONE["sha256"],
        arch=BACKBONE["arch"],
        width_per_group=BACKBONE["width_per_group"],
        seed=config["seed"],
        cache=results("weights/downloads"),
    script:
        "../scripts/weights.py"


rule finetune_stream:
    input:
        index=results("index/train.parquet"),
        labels=results("index/labels.csv"),
        weights=results("weights/{stream}.pt"),
        flow=finetune_flow_input,
        # the clips' raw frames: a re-extracted archive is a new fine-tuning run
        manifest=results("raw/manifest.json"),
    output:
        results("weights/finetuned/{stream}.pt"),
    log:
        logs("weights/finetune-{stream}.log"),
    benchmark:
        benchmarks("weights/finetune-{stream}.tsv")
    conda:
        "../envs/torch.yaml"
    threads: 2
    resources:
        mem_mb=16000,
        runtime=1440,
        gpu=BACKBONE_GPU,
    params:
        clip=BACKBONE_CLIP,
        backbone=BACKBONE_ARCH,
        finetune=BACKBONE["finetune"],
        seed=config["seed"],
        device=config["device"],
        checkpoints=results("weights/finetune/{stream}"),
    script:
        "../scripts/finetune.py"


rule finetune:
    input:
        expand(results("weights/finetuned/{stream}.pt"), stream=BACKBONE["streams"]),


rule features_shard:
    input:
        index=results("index/{split}.parquet"),
        boxes=results("boxes/{split}/shard-{k}.h5"),
        weights=results("weights/finetuned/{stream}.pt"),
        flow=features_flow_input,
    output:
        results("features/{stream}/{split}/shard-{k}.h5"),
    log:
        logs("features/{stream}/{split}/shard-{k}.log"),
    benchmark:
        benchmarks("features/{stream}/{split}/shard-{k}.tsv")
    conda:
        "../envs/torch.yaml"
    threads: 2
    resources:
        mem_mb=16000,
        runtime=240,
        gpu=BACKBONE_GPU,
    params:
        clip=BACKBONE_CLIP,
        backbone=BACKBONE_ARCH,
        per_frame=config["boxes"]["per_frame"],
        boxes_backend=config["boxes"]["backend"],
        batch_size=BACKBONE["batch_size"],
        workers=BACKBONE["workers"],
        device=config["device"],
    script:
        "../scripts/features.py"


rule features:
    input:
        [
            path
            for stream in BACKBONE["streams"]
            for path in shard_paths(
                results("features/{stream}/{split}/shard-{k}.h5"), stream=stream
            )
        ],


register_target("weights", rules.weights.output)
register_target("finetune", rules.finetune.input)
register_target("features", rules.features.input)
