# Stage 8: the graph heads (Wang & Gupta 2018) trained on the cached features, one job per
# stream that trains every configured head in one pass (each batch read once, then evaluated
# per model; two streams: late fusion).
# Checkpoints (gcn/{model}/{stream}/checkpoints/epoch-{n}.pt) are not declared outputs, so a
# killed or rerun job resumes from them instead of Snakemake deleting them.
# Two threads per job: with two streams on 2 cores, the two jobs share the machine; raise it
# with --set-threads train_model=8.


rule train_model:
    input:
        **GCN_TRAIN_INPUTS,
        labels=results("index/labels.csv"),
    output:
        models=GCN_MODEL_FILES,
        train_logs=GCN_TRAIN_LOGS,
    log:
        logs("gcn/{stream}/train.log"),
    benchmark:
        benchmarks("gcn/{stream}/train.tsv")
    conda:
        ENVS["torch"]
    threads: 2
    resources:
        mem_mb=6000,
        runtime=240,
        gpu=gpus(True),
    params:
        models=GCN["models"],
        settings=GCN_TRAIN_SETTINGS,
        features=GCN_FEATURES,
        seed=config["seed"],
        device=job_device(True),
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
        ENVS["torch"]
    threads: 1
    resources:
        mem_mb=6000,
        runtime=60,
        gpu=gpus(True),
    params:
        streams=GCN_STREAMS,
        features=GCN_FEATURES,
        views=EVALUATE["views"],
        crops=EVALUATE["crops"],
        arch=BACKBONE["arch"],
        data=RESULTS_DATA,
        device=job_device(True),
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
        ENVS["cv"]
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
