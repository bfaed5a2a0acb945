# Config in one place: validated against the schema (defaults filled in) before any job runs,
# then turned into small named values and input functions the rule files use.
import os

from snakemake.exceptions import WorkflowError

from regiongraph.config import ConfigError, validate_config
from regiongraph.console import dropped_report, failed_jobs_report, print_console_report

try:
    validate_config(
        config,
        os.path.join(workflow.basedir, "config", "schema.yaml"),
        workflow.config_settings.configfiles,
    )
except ConfigError as error:
    raise WorkflowError(str(error)) from None

SPLITS = ["train", "validation", "test"]
LABELED_SPLITS = ["train", "validation"]
RESULTS = config["results"]


def results(path):
    """A path under the results folder."""
    return os.path.join(RESULTS, path)


def logs(path):
    return os.path.join(RESULTS, "logs", path)


def benchmarks(path):
    return os.path.join(RESULTS, "benchmarks", path)


def shard_ids(split):
    """Zero-padded shard numbers of a split: fixed by config, so the DAG is known up front."""
    return [f"{k:03d}" for k in range(config["shards"][split])]


def shard_paths(pattern, splits=SPLITS, **fields):
    """Expand a per-shard output pattern with {split} and {k} over the configured shards."""
    return [
        pattern.format(split=split, k=k, **fields)
        for split in splits
        for k in shard_ids(split)
    ]


# The synthetic set is written only under its own folder, never to a path the user configured:
# with source toy, dataset paths that point anywhere else are a mistake that would overwrite a
# real download, so the run stops before any job.
TOY = config["dataset"]["source"] == "toy"
TOY_ROOT = os.path.join("resources", "toy")
TOY_ARCHIVES = os.path.join(TOY_ROOT, "archives")
TOY_ANNOTATIONS = os.path.join(TOY_ROOT, "annotations")
ARCHIVES = os.path.normpath(config["dataset"]["archives"])
ANNOTATIONS = os.path.normpath(config["dataset"]["annotations"])
if TOY and (ARCHIVES, ANNOTATIONS) != (TOY_ARCHIVES, TOY_ANNOTATIONS):
    raise WorkflowError(
        f"dataset.source is toy (the default), but dataset.archives ({ARCHIVES}) or "
        f"dataset.annotations ({ANNOTATIONS}) points outside the synthetic set's folder "
        f"{TOY_ROOT}: set dataset.source: archives to use a download there (the synthetic "
        "set would overwrite it), or remove both paths to run the synthetic set"
    )
if not TOY and {ARCHIVES, ANNOTATIONS} & {TOY_ARCHIVES, TOY_ANNOTATIONS}:
    raise WorkflowError(
        f"dataset.source is archives, but dataset.archives ({ARCHIVES}) or "
        f"dataset.annotations ({ANNOTATIONS}) is the synthetic set's folder: set both to "
        "your download"
    )


def box_annotations_path():
    """The Something-Else style box file: configured, or the toy set's own."""
    if config["dataset"]["box_annotations"]:
        return config["dataset"]["box_annotations"]
    if TOY:
        return os.path.join(ANNOTATIONS, "something-else-boxes.json")
    return None


TARGETS = {}


def register_target(stage, paths):
    """Each rule file registers what its stage produces; `all` asks for every stage."""
    TARGETS[stage] = list(paths)


def all_targets():
    return [path for paths in TARGETS.values() for path in paths]


wildcard_constraints:
    split="train|validation|test",
    k=r"\d{3}",
    stream="rgb|flow",


def dropped_shard_inputs():
    """Every flow, boxes and features shard the run makes: each records the videos it left out."""
    return [
        path
        for stage in ("flow", "boxes", "features")
        for path in TARGETS.get(stage, [])
    ]


onsuccess:
    print_console_report(
        dropped_report(
            results("index/dropped.csv"), results("index/index-dropped.csv")
        )
    )


onerror:
    print_console_report(failed_jobs_report(log))
