# Stage 5: object boxes on the box frames of each clip, one job per shard.


rule boxes_shard:
    input:
        index=results("index/{split}.parquet"),
        extra=BOXES_INPUTS,
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
        views=split_views,
        device=job_device(BOXES_DETECTOR),
        weights_cache=results("weights/downloads"),
    script:
        "../scripts/boxes.py"


rule boxes:
    input:
        shard_paths(BOX_SHARDS),


register_target("boxes", rules.boxes.input)
