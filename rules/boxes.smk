# Stage 5: object boxes on the box frames of each clip, one job per shard.


if BOXES_SHARDED:

    rule box_annotations:
        input:
            parts=BOX_ANNOTATION_FILES,
            train=results("index/train.parquet"),
            validation=results("index/validation.parquet"),
            test=results("index/test.parquet"),
        output:
            classes=BOX_CLASSES,
            fragments=BOX_FRAGMENTS,
        log:
            logs("boxes/annotations.log"),
        benchmark:
            benchmarks("boxes/annotations.tsv")
        conda:
            ENVS["cv"]
        threads: 1
        resources:
            mem_mb=32000,
            runtime=120,
        params:
            shards=config["shards"],
        script:
            "../scripts/box_annotations.py"


rule boxes_shard:
    input:
        unpack(boxes_shard_inputs),
        index=results("index/{split}.parquet"),
    output:
        BOX_SHARDS,
    log:
        logs("boxes/{split}/shard-{k}.log"),
    benchmark:
        benchmarks("boxes/{split}/shard-{k}.tsv")
    conda:
        BOXES_ENV
    threads: BOXES_JOB["threads"]
    resources:
        mem_mb=BOXES_JOB["mem_mb"],
        runtime=BOXES_JOB["runtime"],
        gpu=gpus(BOXES_DETECTOR),
    params:
        settings=BOXES,
        num_frames=BACKBONE["num_frames"],
        frame_stride=BACKBONE["frame_stride"],
        sampling=BACKBONE["sampling"],
        box_every=BOX_EVERY,
        views=split_views,
        device=job_device(BOXES_DETECTOR),
        weights_cache=results("weights/downloads"),
    script:
        "../scripts/boxes.py"


rule boxes:
    input:
        shard_paths(BOX_SHARDS),


register_target("boxes", rules.boxes.input)
