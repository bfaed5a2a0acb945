# Config in one place: validated against the schema (defaults filled in) before any job runs,
# then turned into the named values and input functions the rule files use; rule bodies only
# name them. Only light modules of the package are imported here (config, console, sources), so
# that the workflow parses in any Snakemake environment.
import os

from snakemake.exceptions import WorkflowError

from regiongraph.backbones import arch_problems, backbone_spec
from regiongraph.config import ConfigError, validate_config
from regiongraph.console import dropped_report, failed_jobs_report, print_console_report
from regiongraph.sources import is_url

try:
    validate_config(
        config,
        os.path.join(workflow.basedir, "config", "schema.yaml"),
        workflow.config_settings.configfiles,
    )
except ConfigError as error:
    raise WorkflowError(str(error)) from None

SPLITS = ["train", "validation", "test"]
DATASET = config["dataset"]["name"]
SSV2 = DATASET == "ssv2"
# An SSv2 run writes under {results}/ssv2/: its index, shards and heads never overwrite an
# SSv1 run's (or the demo's) in the same results folder.
RESULTS = os.path.join(config["results"], "ssv2") if SSV2 else config["results"]
DEVICE = config["device"]
ENVS = {
    "cv": "../envs/cv.yaml",
    "torch": "../envs/torch.yaml",
    "detectron2": "../envs/detectron2.yaml",
}


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


def gpus(uses_gpu):
    """The `gpu` resource of a rule: 1 when it can use one and the config allows a GPU."""
    return 1 if uses_gpu and DEVICE != "cpu" else 0


def job_device(uses_gpu):
    """The `device` a job claims and computes on: the config's, or cpu for CPU-only work."""
    return DEVICE if uses_gpu else "cpu"


def local_file(path_or_url):
    """A configured weights file as a rule input, so that replacing it reruns its users; a
    URL is fetched by the job itself (into results/weights/downloads)."""
    return [path_or_url] if path_or_url and not is_url(path_or_url) else []


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
    model="baseline|similarity|spatiotemporal|joint",


# --- dataset (rules/dataset.smk): its own file, since SSv1 and SSv2 differ there -------------
include: "common_dataset.smk"


# --- flow (rules/flow.smk) ---------------------------------------------------------------------
# The torch backend needs torch (and a GPU when device allows one); OpenCV needs neither.
FLOW = config["flow"]
FLOW_TORCH = FLOW["backend"] == "torch"
FLOW_ENV = ENVS["torch" if FLOW_TORCH else "cv"]
FLOW_SHARDS = results("flow/{split}/shard-{k}.h5")

# --- boxes (rules/boxes.smk) -------------------------------------------------------------------
# The backend decides the conda env, the job's size and whether it asks for a GPU.
BOXES = config["boxes"]
BOXES_DETECTOR = BOXES["backend"] != "annotations"
BOXES_ENV = ENVS[
    {"annotations": "cv", "torchvision": "torch", "detectron2": "detectron2"}[
        BOXES["backend"]
    ]
]
BOXES_JOB = (
    {"threads": 2, "mem_mb": 8000, "runtime": 240}
    if BOXES_DETECTOR
    else {"threads": 1, "mem_mb": 2000, "runtime": 30}
)
if not BOXES_DETECTOR and not BOX_ANNOTATION_FILES:
    raise WorkflowError(
        "boxes.backend is annotations but dataset.box_annotations is not set "
        "(and dataset.source is not toy): give a Something-Else style JSON or choose a detector"
    )
# The annotation file, or the detector's local weights file: reruns when either changes.
BOXES_INPUTS = local_file(BOXES["weights"]) if BOXES_DETECTOR else BOX_ANNOTATION_FILES
BOX_SHARDS = results("boxes/{split}/shard-{k}.h5")
# SSv2 with Something-Else's part files (several GB of JSON): the box_annotations rule reads
# them once and cuts them into one small file per shard and part (the names of
# regiongraph.detect.annotations.shard_fragment), so that no boxes job parses them whole.
BOXES_SHARDED = SSV2 and not BOXES_DETECTOR
BOX_FRAGMENTS_DIR = results("boxes/annotations")
BOX_CLASSES = os.path.join(BOX_FRAGMENTS_DIR, "classes.json")
BOX_FRAGMENT = os.path.join(BOX_FRAGMENTS_DIR, "{split}", "shard-{k}.part{part}.json")
BOX_FRAGMENTS = [
    path
    for part in range(len(BOX_ANNOTATION_FILES))
    for path in shard_paths(BOX_FRAGMENT, part=part)
]


def boxes_shard_inputs(wildcards):
    """What a boxes job reads beside the index: the annotation files (or its shard's cut of
    them and the class list), or the detector's local weights."""
    if not BOXES_SHARDED:
        return {"extra": BOXES_INPUTS}
    return {
        "extra": [
            BOX_FRAGMENT.format(split=wildcards.split, k=wildcards.k, part=part)
            for part in range(len(BOX_ANNOTATION_FILES))
        ],
        "classes": BOX_CLASSES,
    }


# --- backbone: weights, fine-tuning, features (rules/backbone.smk) ------------------------------
# The arch's spec (regiongraph/backbones.py) decides its map, box frames and normalisation.
BACKBONE = config["backbone"]
BOX_EVERY = backbone_spec(BACKBONE["arch"]).box_every
if arch_problems(BACKBONE):
    raise WorkflowError("\n".join(arch_problems(BACKBONE)))
BACKBONE_ARCH = {
    key: BACKBONE[key]
    for key in (
        "arch",
        "conv1_temporal_stride",
        "pool1_temporal",
        "res5_stride",
        "width_per_group",
    )
}
BACKBONE_CLIP = {
    key: BACKBONE[key]
    for key in (
        "arch",
        "num_frames",
        "frame_stride",
        "sampling",
        "resize_short",
        "crop_size",
        "mean",
        "std",
    )
}
if local_file(BACKBONE["weights"]) and not os.path.isfile(BACKBONE["weights"]):
    raise WorkflowError(
        f"backbone.weights: {BACKBONE['weights']} does not exist (a path or URL of the Caffe2 "
        "pickle, or null for random weights)"
    )
FEATURE_SHARDS = results("features/{stream}/{split}/shard-{k}.h5")
FEATURE_TARGETS = [
    path
    for stream in BACKBONE["streams"]
    for path in shard_paths(FEATURE_SHARDS, stream=stream)
]


def finetune_flow_input(wildcards):
    """The train split's flow shards, for the flow stream only."""
    if wildcards.stream != "flow":
        return []
    return shard_paths(FLOW_SHARDS, splits=["train"])


def features_flow_input(wildcards):
    """The shard's flow, for the flow stream only."""
    if wildcards.stream != "flow":
        return []
    return [FLOW_SHARDS.format(split=wildcards.split, k=wildcards.k)]


# The test protocol: validation and test videos get evaluate.views x evaluate.crops clips, train
# videos one (their boxes and features are computed per split).
EVALUATE = config["evaluate"]


def split_views(wildcards):
    """Temporal views per video of the job's split."""
    return 1 if wildcards.split == "train" else EVALUATE["views"]


def split_crops(wildcards):
    """Spatial crops per view of the job's split."""
    return 1 if wildcards.split == "train" else EVALUATE["crops"]


# What the results are of, beside the paper's figures: the synthetic set is "demo data".
RESULTS_DATA = "demo data" if TOY else DATASET


# --- GCN heads (rules/gcn.smk) -------------------------------------------------------------------
GCN = config["gcn"]
GCN_STREAMS = GCN["streams"]
# the training settings of one head; the model and the stream come from the wildcards
GCN_TRAIN_SETTINGS = {
    key: value
    for key, value in GCN.items()
    if key not in ("models", "streams", "eval_batch_size")
}
# what every feature shard a head reads must have been made with (checked by the reader)
GCN_FEATURES = {
    "clip": BACKBONE_CLIP,
    "backbone": BACKBONE_ARCH,
    "boxes_backend": BOXES["backend"],
    "per_frame": BOXES["per_frame"],
}
# One training job per stream writes every head's model and log ("{stream}": the wildcard).
GCN_MODEL_FILES = [
    results(f"gcn/{model}/{{stream}}/model.pt") for model in GCN["models"]
]
GCN_TRAIN_LOGS = [
    results(f"gcn/{model}/{{stream}}/train_log.csv") for model in GCN["models"]
]
# Feature shards of a split; "{stream}" stays a wildcard, filled in per job.
GCN_TRAIN_INPUTS = {
    split: shard_paths(FEATURE_SHARDS, [split], stream="{stream}")
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
            shard_paths(FEATURE_SHARDS, ["validation"], stream=stream),
        ),
        (f"test_{stream}", shard_paths(FEATURE_SHARDS, ["test"], stream=stream)),
    )
}


# --- the end of a run ----------------------------------------------------------------------------
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
