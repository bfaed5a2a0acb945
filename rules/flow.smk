# Stage 4: TV-L1 optical flow per index shard (OpenCV on the CPU, or the batched torch port).

# The torch backend needs torch (and a GPU when device allows one); OpenCV needs neither.
FLOW_TORCH = config["flow"]["backend"] == "torch"
FLOW_GPU = 1 if FLOW_TORCH and config["device"] != "cpu" else 0
FLOW_ENV = "../envs/torch.yaml" if FLOW_TORCH else "../envs/cv.yaml"


rule flow_shard:
    input:
        index=results("index/{split}.parquet"),
    output:
        results("flow/{split}/shard-{k}.h5"),
    log:
        logs("flow/{split}/shard-{k}.log"),
    benchmark:
        benchmarks("flow/{split}/shard-{k}.tsv")
    conda:
        FLOW_ENV
    threads: config["flow"]["threads"]
    resources:
        mem_mb=4000,
        runtime=240,
        gpu=FLOW_GPU,
    params:
        backend=config["flow"]["backend"],
        bound=config["flow"]["bound"],
        tvl1=config["flow"]["tvl1"],
        batch_size=config["flow"]["batch_size"],
        kernel=config["flow"]["kernel"],
        device=config["device"],
    script:
        "../scripts/flow.py"


rule flow:
    input:
        shard_paths(results("flow/{split}/shard-{k}.h5")),


register_target("flow", shard_paths(results("flow/{split}/shard-{k}.h5")))
