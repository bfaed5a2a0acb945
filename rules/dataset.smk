# Stages 1-3: (toy dataset), extract, split, index.


if TOY:

    rule toy_dataset:
        output:
            parts=directory(TOY_ARCHIVES),
            labels=ANNOTATION_CSVS["labels"],
            train=ANNOTATION_CSVS["train"],
            validation=ANNOTATION_CSVS["validation"],
            test=ANNOTATION_CSVS["test"],
            boxes=TOY_BOXES,
        log:
            logs("toy_dataset.log"),
        benchmark:
            benchmarks("toy_dataset.tsv")
        conda:
            ENVS["cv"]
        threads: 1
        resources:
            mem_mb=2000,
            runtime=30,
        params:
            settings=config["dataset"]["toy"],
            seed=config["seed"],
        script:
            "../scripts/toy.py"


rule extract:
    input:
        parts=ARCHIVES,
    output:
        manifest=results("raw/manifest.json"),
    log:
        logs("extract.log"),
    benchmark:
        benchmarks("extract.tsv")
    conda:
        ENVS["cv"]
    threads: 1
    resources:
        mem_mb=2000,
        runtime=600,
    params:
        raw=results("raw/frames"),
        max_member_bytes=config["extract"]["max_member_bytes"],
    script:
        "../scripts/extract.py"


rule split:
    input:
        **ANNOTATION_CSVS,
        manifest=results("raw/manifest.json"),
    output:
        frames=directory(results("frames")),
        videos=results("split/videos.parquet"),
        listed=results("split/listed.parquet"),
        dropped=results("split/dropped.csv"),
        labels=results("split/labels.csv"),
    log:
        logs("split.log"),
    benchmark:
        benchmarks("split.tsv")
    conda:
        ENVS["cv"]
    threads: 1
    resources:
        mem_mb=4000,
        runtime=60,
    params:
        raw_frames=results("raw/frames/20bn-something-something-v1"),
        unknown_labels=config["index"]["unknown_labels"],
    script:
        "../scripts/split.py"


rule index:
    input:
        videos=results("split/videos.parquet"),
        dropped=results("split/dropped.csv"),
        labels=results("split/labels.csv"),
    output:
        train=results("index/train.parquet"),
        validation=results("index/validation.parquet"),
        test=results("index/test.parquet"),
        dropped=results("index/index-dropped.csv"),
        labels=results("index/labels.csv"),
    log:
        logs("index.log"),
    benchmark:
        benchmarks("index.tsv")
    conda:
        ENVS["cv"]
    threads: 8
    resources:
        mem_mb=8000,
        runtime=120,
    params:
        shards=config["shards"],
        min_frames=config["index"]["min_frames"],
        short_videos=config["index"]["short_videos"],
    script:
        "../scripts/index.py"


register_target("index", rules.index.output)
