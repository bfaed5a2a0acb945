# Every video left out, by any stage, in one table: the split and index stages' own lists and
# what each flow, boxes and features shard recorded (regiongraph.io.dropped).


rule dropped:
    input:
        index=results("index/index-dropped.csv"),
        shards=dropped_shard_inputs(),
    output:
        results("index/dropped.csv"),
    log:
        logs("dropped.log"),
    benchmark:
        benchmarks("dropped.tsv")
    conda:
        "../envs/cv.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    script:
        "../scripts/dropped.py"


register_target("dropped", rules.dropped.output)
