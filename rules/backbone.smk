# Stages 6-7: backbone weights (download + convert), optional fine-tuning, feature caching.
# weights/{rgb,flow}.pt -> weights/finetuned/{stream}.pt -> features/{stream}/{split}/shard-{k}.h5


rule weights:
    input:
        local_file(BACKBONE["weights"]),
    output:
        rgb=results("weights/rgb.pt"),
        flow=results("weights/flow.pt"),
    log:
        logs("weights/weights.log"),
    benchmark:
        benchmarks("weights/weights.tsv")
    conda:
        ENVS["torch"]
    threads: 1
    resources:
        mem_mb=4000,
        runtime=60,
    params:
        weights=BACKBONE["weights"],
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
        ENVS["torch"]
    threads: 2
    resources:
        mem_mb=16000,
        runtime=1440,
        gpu=gpus(True),
    params:
        clip=BACKBONE_CLIP,
        backbone=BACKBONE_ARCH,
        finetune=BACKBONE["finetune"],
        seed=config["seed"],
        device=job_device(True),
        jpeg_decode=BACKBONE["jpeg_decode"],
        checkpoints=results("weights/finetune/{stream}"),
    script:
        "../scripts/finetune.py"


rule finetune:
    input:
        expand(results("weights/finetuned/{stream}.pt"), stream=BACKBONE["streams"]),


rule features_shard:
    input:
        index=results("index/{split}.parquet"),
        boxes=BOX_SHARDS,
        weights=results("weights/finetuned/{stream}.pt"),
        flow=features_flow_input,
    output:
        FEATURE_SHARDS,
    log:
        logs("features/{stream}/{split}/shard-{k}.log"),
    benchmark:
        benchmarks("features/{stream}/{split}/shard-{k}.tsv")
    conda:
        ENVS["torch"]
    threads: 2
    resources:
        mem_mb=16000,
        runtime=240,
        gpu=gpus(True),
    params:
        clip=BACKBONE_CLIP,
        backbone=BACKBONE_ARCH,
        per_frame=BOXES["per_frame"],
        boxes_backend=BOXES["backend"],
        views=split_views,
        crops=split_crops,
        batch_size=BACKBONE["batch_size"],
        workers=BACKBONE["workers"],
        jpeg_decode=BACKBONE["jpeg_decode"],
        device=job_device(True),
    script:
        "../scripts/features.py"


rule features:
    input:
        FEATURE_TARGETS,


register_target("weights", rules.weights.output)
register_target("finetune", rules.finetune.input)
register_target("features", rules.features.input)
