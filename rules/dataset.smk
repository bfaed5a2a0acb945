# Stages 1-3: (toy dataset), extract, (decode: SSv2's videos), split, index.


if TOY:

    rule toy_dataset:
        output:
            **TOY_OUTPUTS,
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
            dataset=DATASET,
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
        raw=EXTRACTED,
        stem=ARCHIVE_STEM,
        max_member_bytes=config["extract"]["max_member_bytes"],
    script:
        "../scripts/extract.py"


if SSV2:

    rule decode:
        input:
            manifest=results("raw/manifest.json"),
        output:
            summary=results("raw/decode.json"),
            dropped=results("raw/decode-dropped.csv"),
        log:
            logs("decode.log"),
        benchmark:
            benchmarks("decode.tsv")
        conda:
            ENVS["cv"]
        threads: FRAMES["threads"]
        resources:
            mem_mb=4000,
            runtime=1440,
        params:
            videos=os.path.join(EXTRACTED, ARCHIVE_STEM),
            frames=RAW_FRAMES,
            short_side=FRAMES["short_side"],
            jpeg_quality=FRAMES["jpeg_quality"],
        script:
            "../scripts/decode.py"

    rule split:
        input:
            **SPLIT_INPUTS,
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
            mem_mb=8000,
            runtime=60,
        params:
            raw_frames=RAW_FRAMES,
            decode_dropped=results("raw/decode-dropped.csv"),
            unknown_labels=config["index"]["unknown_labels"],
        script:
            "../scripts/split_ssv2.py"

else:

    rule split:
        input:
            **SPLIT_INPUTS,
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
            raw_frames=RAW_FRAMES,
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
