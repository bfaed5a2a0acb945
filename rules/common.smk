# Config in one place: validated against the schema (defaults filled in) before any job runs,
# then turned into small named values and input functions the rule files use.
import os

from snakemake.utils import validate

validate(config, schema="../config/schema.yaml")

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


ARCHIVES = config["dataset"]["archives"]
ANNOTATIONS = config["dataset"]["annotations"]
TOY = config["dataset"]["source"] == "toy"


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
