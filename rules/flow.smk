# Stage 4: TV-L1 optical flow per index shard (OpenCV on the CPU, or the batched torch port).


rule flow_shard:
    input:
        index=results("index/{split}.parquet"),
    output:
        FLOW_SHARDS,
    log:
        logs("flow/{split}/shard-{k}.log"),
    benchmark:
        benchmarks("flow/{split}/shard-{k}.tsv")
    conda:
        FLOW_ENV
    threads: FLOW["threads"]
    resources:
        mem_mb=4000,
        runtime=240,
        gpu=gpus(FLOW_TORCH),
    params:
        backend=FLOW["backend"],
        bound=FLOW["bound"],
        tvl1=FLOW["tvl1"],
        batch_size=FLOW["batch_size"],
        kernel=FLOW["kernel"],
        jpeg_decode=FLOW["jpeg_decode"],
        device=job_device(FLOW_TORCH),
    script:
        "../scripts/flow.py"


rule flow:
    input:
        shard_paths(FLOW_SHARDS),


register_target("flow", rules.flow.input)
