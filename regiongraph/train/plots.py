"""Pictures for the report: the confusion matrix and the training curves (matplotlib, Agg)."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")  # no display on cluster nodes; must precede pyplot
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from regiongraph.io import atomic_path  # noqa: E402

# Above this many classes the axes carry no tick labels (SSv1 has 174); the most confused
# pairs are still named in the legend box.
MAX_TICK_LABELS = 30


def top_confused_pairs(matrix: np.ndarray, count: int = 5) -> list[tuple[int, int, int]]:
    """The ``count`` largest off-diagonal cells as ``(true, predicted, videos)``, largest first."""
    off = matrix.copy()
    np.fill_diagonal(off, 0)
    flat = np.argsort(-off, axis=None, kind="stable")[:count]
    pairs = []
    for index in flat:
        true, predicted = np.unravel_index(index, off.shape)
        if off[true, predicted] > 0:
            pairs.append((int(true), int(predicted), int(off[true, predicted])))
    return pairs


def _short(text: str, width: int = 40) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def plot_confusion(
    matrix: np.ndarray,
    label_names: Sequence[str],
    path: str | os.PathLike,
    title: str = "",
    top_pairs: int = 5,
) -> None:
    """Row-normalised confusion matrix; the ``top_pairs`` most confused pairs ringed, numbered
    and named in a panel beside it."""
    totals = matrix.sum(axis=1, keepdims=True)
    normalised = np.divide(
        matrix, totals, out=np.zeros(matrix.shape, dtype=float), where=totals > 0
    )
    classes = len(label_names)
    size = min(5 + classes * 0.2, 12)
    fig, (ax, text_ax) = plt.subplots(
        1, 2, figsize=(size + 5, size), gridspec_kw={"width_ratios": [size, 5]}
    )
    image = ax.imshow(normalised, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.02, label="fraction of the true class")
    if classes <= MAX_TICK_LABELS:
        names = [_short(n, 48) for n in label_names]
        ax.set_xticks(range(classes), names, rotation=90, fontsize=7)
        ax.set_yticks(range(classes), names, fontsize=7)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(title or "confusion matrix")
    lines = []
    for rank, (true, predicted, videos) in enumerate(
        top_confused_pairs(matrix, top_pairs), start=1
    ):
        ax.plot(predicted, true, "o", markersize=14, markerfacecolor="none", markeredgecolor="red")
        ax.annotate(
            str(rank),
            (predicted, true),
            xytext=(8, 8),
            textcoords="offset points",
            color="red",
            fontsize=9,
        )
        lines.append(
            f"{rank}. {_short(label_names[true])}\n   → {_short(label_names[predicted])}  ({videos} videos)"
        )
    text_ax.axis("off")
    summary = "\n".join(lines) if lines else "no confusions"
    text_ax.text(0, 0.5, "Most confused (true → predicted)\n\n" + summary, fontsize=8, va="center")
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)


def plot_curves(logs: Mapping[str, pd.DataFrame], path: str | os.PathLike, title: str = "") -> None:
    """Loss and top-1 per epoch, train and validation, one colour per stream."""
    fig, (loss_ax, top1_ax) = plt.subplots(1, 2, figsize=(10, 4))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for index, (stream, frame) in enumerate(logs.items()):
        colour = colours[index % len(colours)]
        for split, style in (("train", "--"), ("val", "-")):
            loss_ax.plot(
                frame["epoch"],
                frame[f"{split}_loss"],
                style,
                color=colour,
                label=f"{stream} {split}",
            )
            top1_ax.plot(
                frame["epoch"],
                frame[f"{split}_top1"],
                style,
                color=colour,
                label=f"{stream} {split}",
            )
    loss_ax.set(xlabel="epoch", ylabel="cross-entropy", title="loss")
    top1_ax.set(xlabel="epoch", ylabel="top-1 (fraction)", title="top-1 accuracy", ylim=(0, 1))
    for ax in (loss_ax, top1_ax):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
