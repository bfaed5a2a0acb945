"""Classification metrics of the evaluation, from scores and labels (numpy and pandas only).

``top1`` and ``top5``: the fraction of videos whose true class is the highest, or among the five
highest, scores; ``mean_class_accuracy``: the mean over the classes present of each class's
top-1 accuracy (recall), which weighs rare classes as much as frequent ones. All in 0..1.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from regiongraph.io import write_csv

# Top-1 on the Something-Something v1 validation split as Wang & Gupta (ECCV 2018) report it for
# their RGB models with a ResNet-50 I3D backbone (§5.2, Table 1): the backbone alone, and with
# the joint graph head (similarity + spatial-temporal graphs). The similarity-only and
# spatial-temporal-only heads have no row here.
PAPER_SSV1_TOP1 = {
    ("i3d_r50", "baseline"): ("I3D (ResNet-50)", 0.416),
    ("i3d_r50", "joint"): ("I3D + joint GCN, STRG (ResNet-50)", 0.433),
    ("i3d_nl_r50", "baseline"): ("Non-local I3D (ResNet-50)", 0.444),
    ("i3d_nl_r50", "joint"): ("Non-local I3D + joint GCN (ResNet-50)", 0.461),
}
DEMO_DATA = "demo data"


def paper_comparison(model: str, arch: str, data: str, top1: float | None) -> dict[str, Any]:
    """The paper's SSv1 figure for this head and backbone (None when it reports none), beside
    this run's top-1; ``data`` says what the run was on (``demo data`` for the synthetic set,
    else ``ssv1`` or ``ssv2``), since only an SSv1 run is comparable: the gap is given for
    ``ssv1`` only."""
    row, paper_top1 = PAPER_SSV1_TOP1.get((arch, model), (None, None))
    return {
        "data": data,
        "paper_dataset": "Something-Something v1 validation, RGB",
        "paper_row": row,
        "paper_top1": paper_top1,
        "gap_to_paper": None
        if paper_top1 is None or top1 is None or data != "ssv1"
        else round(top1 - paper_top1, 4),
    }


def read_labels(path: str | os.PathLike) -> list[str]:
    """``index/labels.csv`` (``label_index, label``) as a list indexed by label index."""
    frame = pd.read_csv(path, dtype={"label": str}, keep_default_na=False)
    if list(frame.columns[:2]) != ["label_index", "label"]:
        raise ValueError(f"{path}: expected columns label_index,label; found {list(frame.columns)}")
    if not np.array_equal(frame["label_index"].to_numpy(), np.arange(len(frame))):
        raise ValueError(f"{path}: label_index must run 0..{len(frame) - 1} in order")
    return frame["label"].tolist()


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=1, keepdims=True)


def classification_metrics(
    scores: np.ndarray, labels: np.ndarray, num_classes: int
) -> dict[str, Any]:
    """Top-1, top-5 and mean class accuracy (the mean over classes present of their recall)."""
    labels = np.asarray(labels)
    n = len(labels)
    if n == 0:
        raise ValueError("no labelled videos to compute metrics on")
    order = np.argsort(-scores, axis=1, kind="stable")
    k = min(5, num_classes)
    top1 = order[:, 0] == labels
    top5 = (order[:, :k] == labels[:, None]).any(axis=1)
    per_class = [top1[labels == c].mean() for c in range(num_classes) if (labels == c).any()]
    return {
        "top1": float(top1.mean()),
        "top5": float(top5.mean()),
        "mean_class_accuracy": float(np.mean(per_class)),
        "n_videos": int(n),
    }


def confusion_matrix(predicted: np.ndarray, labels: np.ndarray, num_classes: int) -> np.ndarray:
    """``matrix[true, predicted]`` counts."""
    matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(matrix, (labels, predicted), 1)
    return matrix


def per_class_table(matrix: np.ndarray, label_names: Sequence[str]) -> pd.DataFrame:
    """One row per class: videos, correct, accuracy, and the class it is most often taken for."""
    totals = matrix.sum(axis=1)
    correct = np.diag(matrix)
    off = matrix.copy()
    np.fill_diagonal(off, 0)
    confused = off.argmax(axis=1)
    has_confusion = off.max(axis=1) > 0
    return pd.DataFrame(
        {
            "label_index": np.arange(len(label_names)),
            "label": list(label_names),
            "n_videos": totals,
            "correct": correct,
            "accuracy": np.where(totals > 0, correct / np.maximum(totals, 1), np.nan),
            "most_confused_with": [
                label_names[c] if ok else "" for c, ok in zip(confused, has_confusion, strict=True)
            ],
            "confused_count": np.where(has_confusion, off.max(axis=1), 0),
        }
    )


def gather_metrics(
    paths: Mapping[str, str | os.PathLike], out_path: str | os.PathLike
) -> pd.DataFrame:
    """One row per model from each ``metrics.json``, for the report's table."""
    rows = []
    for model, path in paths.items():
        data = json.loads(Path(path).read_text())
        rows.append(
            {
                "model": model,
                "stream": data["stream"],
                "top1": round(data["top1"], 4),
                "top5": round(data["top5"], 4),
                "mean_class_accuracy": round(data["mean_class_accuracy"], 4),
                "n_videos": data["n_videos"],
                "chance": round(data.get("chance", float("nan")), 4),
                "majority_class_rate": round(data.get("majority_class_rate", float("nan")), 4),
                "data": data.get("paper", {}).get("data"),
                "paper_row": data.get("paper", {}).get("paper_row"),
                "paper_top1": data.get("paper", {}).get("paper_top1"),
            }
        )
    frame = pd.DataFrame(rows)
    write_csv(out_path, frame)
    return frame
