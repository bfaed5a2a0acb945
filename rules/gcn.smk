# Stage 8: the graph heads (Wang & Gupta 2018) trained on the cached features, one job per
# model and stream, then evaluated per model (two streams: late fusion).
# Checkpoints (gcn/{model}/{stream}/checkpoints/epoch-{n}.pt) are not declared outputs, so a
# killed or rerun job resumes from them instead of Snakemake deleting them.
# One thread per job: the heads are small, and on 2 cores two models train side by side
# faster than one with two contended threads; raise it with --set-threads train_model=8.

GCN = config["gcn"]
GCN_STREAMS = GCN["streams"]
GCN_DEVICE_GPU = 0 if config["device"] == "cpu" else 1
# What the feature shards must record (docs/formats.md); a mismatch is an error naming both.
GCN_EXPECT_FEATURES = {
    "arch": config["backbone"]["arch"],
    "num_frames": config["backbone"]["num_frames"],
    "frame_stride": config["backbone"]["frame_stride"],
    "crop_size": config["backbone"]["crop_size"],
    "resize_short": config["backbone"]["resize_short"],
    "boxes_backend": config["boxes"]["backend"],
    "per_frame": config["boxes"]["per_frame"],
}
GCN_TRAIN_SETTINGS = {
    key: value
    for key, value in GCN.items()
    if key not in ("models", "streams", "eval_batch_size")
}


wildcard_constraints:
    model="baseline|similarity|spatiotemporal|joint",


# Feature shards of a split; "{stream}" stays a wildcard, filled in per job.
GCN_FEATURES = results("features/{stream}/{split}/shard-{k}.h5")
GCN_TRAIN_INPUTS = {
    split: shard_paths(GCN_FEATURES, [split], stream="{stream}")
    for split in ("train", "validation")
}
# The evaluation reads, per configured stream, the trained head, its log and the shards.
GCN_EVALUATE_INPUTS = {
    name: path
    for stream in GCN_STREAMS
    for name, path in (
        (f"model_{stream}", results(f"gcn/{{model}}/{stream}/model.pt")),
        (f"train_log_{stream}", results(f"gcn/{{model}}/{stream}/train_log.csv")),
        (
            f"validation_{stream}",
            shard_paths(GCN_FEATURES, ["validation"], stream=stream),
        ),
        (f"test_{stream}", shard_paths(GCN_FEATURES, ["test"], stream=stream)),
    )
}


rule train_model:
    input:
        **GCN_TRAIN_INPUTS,
        labels=results("index/labels.csv"),
    output:
        model=results("gcn/{model}/{stream}/model.pt"),
        train_log=results("gcn/{model}/{stream}/train_log.csv"),
    log:
        logs("gcn/{model}/{stream}/train.log"),
    benchmark:
        benchmarks("gcn/{model}/{stream}/train.tsv")
    conda:
        "../envs/torch.yaml"
    threads: 1
    resources:
        mem_mb=6000,
        runtime=240,
        gpu=GCN_DEVICE_GPU,
    params:
        settings=GCN_TRAIN_SETTINGS,
        expect=GCN_EXPECT_FEATURES,
        seed=config["seed"],
        device=config["device"],
    script:
        "../scripts/train.py"


rule evaluate_model:
    input:
        **GCN_EVALUATE_INPUTS,
        labels=results("index/labels.csv"),
        # every listed validation and test video is scored, readable or not
        listed=results("split/listed.parquet"),
        train_index=results("index/train.parquet"),
        dropped=results("index/index-dropped.csv"),
    output:
        metrics=results("gcn/{model}/metrics.json"),
        per_class=results("gcn/{model}/per_class.csv"),
        confusion=report(
            results("gcn/{model}/confusion.png"),
            caption="../report/confusion.rst",
            category="GCN",
            subcategory="{model}",
            labels={"model": "{model}", "figure": "confusion matrix"},
        ),
        curves=report(
            results("gcn/{model}/curves.png"),
            caption="../report/curves.rst",
            category="GCN",
            subcategory="{model}",
            labels={"model": "{model}", "figure": "training curves"},
        ),
        val_predictions=results("gcn/{model}/val_predictions.parquet"),
        test_predictions=results("gcn/{model}/test_predictions.csv"),
    log:
        logs("gcn/{model}/evaluate.log"),
    benchmark:
        benchmarks("gcn/{model}/evaluate.tsv")
    conda:
        "../envs/torch.yaml"
    threads: 1
    resources:
        mem_mb=6000,
        runtime=60,
        gpu=GCN_DEVICE_GPU,
    params:
        streams=GCN_STREAMS,
        expect=GCN_EXPECT_FEATURES,
        device=config["device"],
        batch_size=GCN["eval_batch_size"],
    script:
        "../scripts/evaluate.py"


rule gcn_metrics_table:
    input:
        expand(results("gcn/{model}/metrics.json"), model=GCN["models"]),
    output:
        report(
            results("gcn/metrics_table.csv"),
            caption="../report/metrics_table.rst",
            category="GCN",
            labels={"model": "all", "figure": "metrics table"},
        ),
    log:
        logs("gcn/metrics_table.log"),
    benchmark:
        benchmarks("gcn/metrics_table.tsv")
    conda:
        "../envs/cv.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    params:
        models=GCN["models"],
    script:
        "../scripts/gcn_metrics_table.py"


rule train:
    input:
        expand(
            results("gcn/{model}/{stream}/model.pt"),
            model=GCN["models"],
            stream=GCN_STREAMS,
        ),


rule evaluate:
    input:
        expand(
            results("gcn/{model}/{name}"),
            model=GCN["models"],
            name=["metrics.json", "test_predictions.csv"],
        ),
        results("gcn/metrics_table.csv"),


register_target("train", rules.train.input)
register_target("evaluate", rules.evaluate.input)
