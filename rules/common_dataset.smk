# Config of the dataset stages (rules/dataset.smk), included by rules/common.smk: which download
# (dataset.name ssv1 or ssv2, toy or archives), where it is read and written, and the named
# values the rule files use. Only the standard library here, as in common.smk.
import glob

# --- dataset (rules/dataset.smk) ---------------------------------------------------------------
# The synthetic set is written only under its own folder, never to a path the user configured:
# with source toy, dataset paths that point anywhere else are a mistake that would overwrite a
# real download, so the run stops before any job. The SSv2 toy set has a folder of its own.
TOY = config["dataset"]["source"] == "toy"
TOY_DEFAULTS = (
    os.path.join("resources", "toy", "archives"),
    os.path.join("resources", "toy", "annotations"),
)
TOY_ROOT = (
    os.path.join("resources", "toy", "ssv2")
    if SSV2
    else os.path.join("resources", "toy")
)
TOY_ARCHIVES = os.path.join(TOY_ROOT, "archives")
TOY_ANNOTATIONS = os.path.join(TOY_ROOT, "annotations")
ARCHIVES = os.path.normpath(config["dataset"]["archives"])
ANNOTATIONS = os.path.normpath(config["dataset"]["annotations"])
if TOY and (ARCHIVES, ANNOTATIONS) not in (
    TOY_DEFAULTS,
    (TOY_ARCHIVES, TOY_ANNOTATIONS),
):
    raise WorkflowError(
        f"dataset.source is toy (the default), but dataset.archives ({ARCHIVES}) or "
        f"dataset.annotations ({ANNOTATIONS}) points outside the synthetic set's folder "
        f"{TOY_ROOT}: set dataset.source: archives to use a download there (the synthetic "
        "set would overwrite it), or remove both paths to run the synthetic set"
    )
TOY_PATHS = set(TOY_DEFAULTS) | {TOY_ARCHIVES, TOY_ANNOTATIONS}
if not TOY and {ARCHIVES, ANNOTATIONS} & TOY_PATHS:
    raise WorkflowError(
        f"dataset.source is archives, but dataset.archives ({ARCHIVES}) or "
        f"dataset.annotations ({ANNOTATIONS}) is the synthetic set's folder: set both to "
        "your download"
    )
if TOY:
    ARCHIVES, ANNOTATIONS = TOY_ARCHIVES, TOY_ANNOTATIONS
ARCHIVE_STEM = f"20bn-something-something-{'v2' if SSV2 else 'v1'}"
# SSv1's archive holds frame folders; SSv2's holds webm videos, decoded into frame folders
EXTRACTED = results(os.path.join("raw", "videos" if SSV2 else "frames"))
RAW_FRAMES = results(os.path.join("raw", "frames", ARCHIVE_STEM))
CSV_PREFIX = "something-something-v1"
ANNOTATION_CSVS = {
    name: os.path.join(ANNOTATIONS, f"{CSV_PREFIX}-{name}.csv")
    for name in ("labels", *SPLITS)
}
SSV2_LABELS_ZIP = "20bn-something-something-download-package-labels.zip"
SSV2_TOY_BOXES = os.path.join(TOY_ROOT, "something-else")
SSV2_TOY_BOX_FILES = [
    os.path.join(SSV2_TOY_BOXES, f"bounding_box_smthsmth_part{i}.json") for i in (1, 2)
]
# what the split stage reads: SSv1's four CSVs, or SSv2's labels (zip or folder)
if SSV2:
    SPLIT_LABELS = (
        os.path.join(TOY_ANNOTATIONS, SSV2_LABELS_ZIP)
        if TOY
        else config["dataset"]["annotations"]
    )
    if not TOY and not os.path.exists(SPLIT_LABELS):
        raise WorkflowError(
            f"dataset.annotations: {SPLIT_LABELS} does not exist (the labels zip "
            f"{SSV2_LABELS_ZIP}, or a folder of its four JSONs)"
        )
    TOY_OUTPUTS = {
        "parts": directory(TOY_ARCHIVES),
        "labels": SPLIT_LABELS,
        "boxes": SSV2_TOY_BOX_FILES,
    }
else:
    TOY_OUTPUTS = {
        "parts": directory(TOY_ARCHIVES),
        **ANNOTATION_CSVS,
        "boxes": os.path.join(TOY_ANNOTATIONS, "something-else-boxes.json"),
    }


def box_annotation_files(path):
    """A Something-Else style JSON, or every bounding_box_smthsmth_part*.json of a folder."""
    if path is None or not os.path.isdir(path):
        return [path] if path else []
    files = sorted(glob.glob(os.path.join(path, "bounding_box_smthsmth_part*.json")))
    if not files:
        raise WorkflowError(
            f"dataset.box_annotations: {path} holds no bounding_box_smthsmth_part*.json "
            "(Something-Else's box files); give the folder holding them, or one JSON file"
        )
    return files


TOY_BOX_FILES = SSV2_TOY_BOX_FILES if SSV2 else [TOY_OUTPUTS["boxes"]]
BOX_ANNOTATION_FILES = (
    box_annotation_files(config["dataset"]["box_annotations"])
    if config["dataset"]["box_annotations"]
    else (TOY_BOX_FILES if TOY else [])
)


def split_folder(splits):
    """dataset.splits as a folder of Something-Else split files, or None for the official one."""
    if splits == "official":
        return None
    if splits == "compositional":
        base = config["dataset"]["box_annotations"]
        base = base if base and os.path.isdir(base) else None
        tried = (
            [
                os.path.join(base, "compositional"),
                os.path.join(base, "dataset_splits", "compositional"),
            ]
            if base
            else []
        )
        for folder in tried:
            if os.path.isdir(folder):
                return folder
        raise WorkflowError(
            "dataset.splits is compositional, but no compositional/ folder of Something-Else "
            f"split files was found (looked in {', '.join(tried) or 'dataset.box_annotations, which is not a folder'}): "
            "give the folder's path as dataset.splits"
        )
    if not os.path.isdir(splits):
        raise WorkflowError(
            f"dataset.splits: {splits} is neither official, compositional nor a folder of "
            "Something-Else split files (train.json, validation.json)"
        )
    return splits


SPLITS_FOLDER = split_folder(config["dataset"]["splits"]) if SSV2 else None
if not SSV2 and config["dataset"]["splits"] != "official":
    raise WorkflowError(
        f"dataset.splits: {config['dataset']['splits']!r} applies to ssv2 only "
        "(dataset.name is ssv1, whose CSVs are the split)"
    )
SPLIT_INPUTS = (
    {"labels": SPLIT_LABELS, "decoded": results("raw/decode.json")}
    | ({"splits": SPLITS_FOLDER} if SPLITS_FOLDER else {})
    if SSV2
    else ANNOTATION_CSVS
)
FRAMES = config["frames"]
if SSV2 and FRAMES["short_side"] and config["boxes"]["backend"] == "annotations":
    raise WorkflowError(
        f"frames.short_side ({FRAMES['short_side']}) resizes the frames, but boxes.backend is "
        "annotations, whose Something-Else boxes are in the native video's pixels: set "
        "frames.short_side: null, or choose a detector"
    )
