# Space-Time Region Graphs (Wang & Gupta, ECCV 2018) on Something-Something v1.
# A table of contents: config and its schema, one rule file per stage, and the targets.
import os

from snakemake.utils import min_version

min_version("9.0")


configfile: os.path.join(workflow.basedir, "config", "config.yaml")


report: "report/workflow.rst"


include: "rules/common.smk"
include: "rules/execution.smk"
include: "rules/dataset.smk"
include: "rules/flow.smk"
include: "rules/boxes.smk"
include: "rules/backbone.smk"
include: "rules/gcn.smk"
include: "rules/dropped.smk"


rule all:
    default_target: True
    input:
        all_targets(),
