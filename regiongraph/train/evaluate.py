"""Evaluate trained heads: metrics, per-class accuracy, pictures, predictions, late fusion.

Per model, ``gcn/{model}/`` receives (docs/formats.md):

- ``metrics.json``: ``top1``, ``top5``, ``mean_class_accuracy`` (fractions in 0..1) and
  ``n_videos`` on the validation split, and ``stream``. With one stream configured these are
  that stream's numbers. With two (``gcn.streams: [rgb, flow]``) the top level is the
  two-stream late fusion (the average of the streams' softmax, Simonyan & Zisserman 2014;
  ``stream: "rgb+flow"``) and ``streams`` holds each stream's own metrics.
- ``per_class.csv``, ``confusion.png``, ``val_predictions.parquet`` and
  ``test_predictions.csv`` describe the same final prediction (fused when two streams).
- ``curves.png``: the training curves of every stream.

``test_predictions.csv`` is the original leaderboard format: one ``video_id;label text`` line
per test video, no header.

Every validation and test video the CSVs list is scored, readable or not: a video that no
stream has features for (its frames do not decode, its folder is missing) gets the prior, the
train split's class frequencies, as its scores. ``metrics.json`` counts it in ``n_videos`` and
lists it under ``from_prior`` with the reason it was left out; ``val_predictions.parquet``
flags it (``from_prior``). Validation and test predictions are in the order the CSVs list the
videos.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from regiongraph.gpus import resolve_device
from regiongraph.io import (
    atomic_path,
    merge_dropped,
    read_dropped,
    shard_drops,
    write_csv,
    write_json,
    write_parquet,
)
from regiongraph.train.data import FeatureShardDataset, feature_loader
from regiongraph.train.loop import evaluate, load_model
from regiongraph.train.metrics import (
    classification_metrics,
    confusion_matrix,
    paper_comparison,
    per_class_table,
    read_labels,
    softmax,
)
from regiongraph.train.plots import plot_confusion, plot_curves

log = logging.getLogger(__name__)


@dataclass
class StreamScores:
    """Softmax scores of one stream over a split, by video id."""

    video_ids: list[str]
    labels: np.ndarray
    probabilities: np.ndarray


def predict(
    model_path: str | os.PathLike,
    shard_paths: Sequence[str | os.PathLike],
    expect: Mapping[str, Any] | None = None,
    device: str = "auto",
    batch_size: int = 64,
    require_labels: bool = True,
) -> StreamScores:
    """Softmax scores of the head in ``model_path`` for every video of ``shard_paths``.

    The shards must match the features the head was trained on (the record in ``model.pt``),
    besides ``expect``.
    """
    torch_device = resolve_device(device)
    model, record = load_model(model_path, torch_device)
    expected = {**record["features"], **(expect or {})}
    regions = record["architecture"]["model"] != "baseline"
    dataset = FeatureShardDataset(shard_paths, expected, require_labels, regions=regions)
    if len(dataset) == 0:
        return StreamScores(
            [], np.zeros(0, dtype=np.int64), np.zeros((0, record["architecture"]["num_classes"]))
        )
    result = evaluate(model, feature_loader(dataset, batch_size), torch_device)
    dataset.close()
    return StreamScores(result.video_ids, result.labels, softmax(result.logits.astype(np.float64)))


def late_fusion(streams: Mapping[str, StreamScores]) -> StreamScores:
    """Average of the streams' softmax per video (videos missing from a stream use the others).

    The order is the first stream's, followed by videos only the others have.
    """
    order: list[str] = []
    sums: dict[str, np.ndarray] = {}
    counts: dict[str, int] = {}
    labels: dict[str, int] = {}
    for name, scores in streams.items():
        for video, label, prob in zip(
            scores.video_ids, scores.labels, scores.probabilities, strict=True
        ):
            if video not in sums:
                order.append(video)
                sums[video], counts[video], labels[video] = prob.copy(), 1, int(label)
            else:
                if labels[video] != int(label):
                    raise ValueError(
                        f"video {video!r} has label {labels[video]} in one stream, {label} in {name}"
                    )
                sums[video] += prob
                counts[video] += 1
    if not order:
        first = next(iter(streams.values()))
        return StreamScores([], np.zeros(0, dtype=np.int64), first.probabilities[:0])
    probabilities = np.stack([sums[v] / counts[v] for v in order])
    return StreamScores(order, np.array([labels[v] for v in order], dtype=np.int64), probabilities)


def write_test_predictions(
    path: str | os.PathLike, scores: StreamScores, label_names: Sequence[str]
) -> None:
    """``video_id;label text`` per test video, no header (the leaderboard's submission format)."""
    predicted = scores.probabilities.argmax(axis=1) if len(scores.video_ids) else []
    lines = [
        f"{video};{label_names[int(p)]}\n"
        for video, p in zip(scores.video_ids, predicted, strict=True)
    ]
    with atomic_path(path) as tmp:
        tmp.write_text("".join(lines))


def class_prior(train_labels: Sequence[int], num_classes: int) -> np.ndarray:
    """The train split's class frequencies: the scores of a video nothing can be read of."""
    counts = np.bincount(np.asarray(train_labels, dtype=np.int64), minlength=num_classes)
    if counts.sum() == 0:
        return np.full(num_classes, 1.0 / num_classes)
    return counts[:num_classes] / counts.sum()


def complete_with_prior(
    scores: StreamScores, listed: pd.DataFrame, prior: np.ndarray
) -> tuple[StreamScores, list[str]]:
    """Scores for every video of ``listed`` (``video_id, label_index``), in its order; the
    videos without scores get ``prior``. Returns the scores and the ids that got the prior."""
    by_id = {video: i for i, video in enumerate(scores.video_ids)}
    extra = sorted(set(by_id) - set(listed["video_id"]))
    if extra:
        raise ValueError(
            f"scored videos not listed in the split: {extra[:5]}; the features do not belong to "
            "this split listing (rerun the index stage)"
        )
    probabilities = np.empty((len(listed), len(prior)))
    labels = listed["label_index"].to_numpy(dtype=np.int64)
    missing: list[str] = []
    for row, (video, label) in enumerate(zip(listed["video_id"], labels, strict=True)):
        found = by_id.get(video)
        if found is None:
            probabilities[row] = prior
            missing.append(video)
            continue
        if int(scores.labels[found]) != int(label):
            raise ValueError(
                f"video {video!r} has label {int(scores.labels[found])} in its features but "
                f"{int(label)} in the split listing"
            )
        probabilities[row] = scores.probabilities[found]
    return StreamScores(list(listed["video_id"]), labels, probabilities), missing


def drop_reasons(
    dropped_paths: Sequence[str | os.PathLike], shard_paths: Sequence[str | os.PathLike]
) -> dict[str, str]:
    """Why each video was left out (the first stage that dropped it), from the split and
    index stages' tables and the feature shards' own records."""
    tables = [read_dropped(path) for path in dropped_paths]
    tables += [pd.DataFrame(shard_drops(path)) for path in shard_paths]
    reasons: dict[str, str] = {}
    for row in merge_dropped(tables).itertuples():
        reasons.setdefault(row.video_id, f"{row.stage}: {row.reason}")
    return reasons


@dataclass
class EvaluationInputs:
    """What :func:`evaluate_model` reads; the mappings are keyed by stream (``rgb``, ``flow``)."""

    model_paths: Mapping[str, str | os.PathLike]
    val_shards: Mapping[str, Sequence[str | os.PathLike]]
    test_shards: Mapping[str, Sequence[str | os.PathLike]]
    train_logs: Mapping[str, str | os.PathLike]
    labels_path: str | os.PathLike
    listed_path: str | os.PathLike  # split/listed.parquet: every listed video
    train_index_path: str | os.PathLike  # index/train.parquet: the class prior
    dropped_paths: Sequence[str | os.PathLike] = ()  # tables saying why videos were left out


def _stream_scores(inputs: EvaluationInputs, expect, device: str, batch_size: int):
    val_scores: dict[str, StreamScores] = {}
    test_scores: dict[str, StreamScores] = {}
    for stream, model_path in inputs.model_paths.items():
        wanted = (expect or {}).get(stream)
        val_scores[stream] = predict(
            model_path, inputs.val_shards[stream], wanted, device, batch_size
        )
        test_scores[stream] = predict(
            model_path, inputs.test_shards[stream], wanted, device, batch_size, require_labels=False
        )
    return val_scores, test_scores


def _fused(scores: Mapping[str, StreamScores]) -> StreamScores:
    return late_fusion(scores) if len(scores) > 1 else next(iter(scores.values()))


def evaluate_model(
    inputs: EvaluationInputs,
    outputs: Mapping[str, str | os.PathLike],
    model_name: str,
    *,
    arch: str,
    data: str,
    expect: Mapping[str, Mapping[str, Any]] | None = None,
    device: str = "auto",
    batch_size: int = 64,
) -> dict[str, Any]:
    """Write every evaluation output of one model (``outputs`` maps names to paths).

    ``outputs`` keys: ``metrics``, ``per_class``, ``confusion``, ``curves``,
    ``val_predictions``, ``test_predictions``; ``expect`` is keyed by stream. ``arch`` (the
    backbone) and ``data`` (``demo data``, or the dataset's name) place the result beside the
    paper's SSv1 figure in ``metrics.json``'s ``paper``.
    """
    label_names = read_labels(inputs.labels_path)
    num_classes = len(label_names)
    listed = pd.read_parquet(inputs.listed_path)
    prior = class_prior(pd.read_parquet(inputs.train_index_path)["label_index"], num_classes)
    val_scores, test_scores = _stream_scores(inputs, expect, device, batch_size)
    streams = list(inputs.model_paths)
    stream_name = "+".join(streams)
    final_val, val_prior = complete_with_prior(
        _fused(val_scores), listed[listed["split"] == "validation"], prior
    )
    final_test, _ = complete_with_prior(_fused(test_scores), listed[listed["split"] == "test"], prior)
    if not final_val.video_ids:
        raise ValueError(f"{inputs.listed_path}: the validation split lists no video")
    shards = [path for stream in streams for path in inputs.val_shards[stream]]
    reasons = drop_reasons(inputs.dropped_paths, shards)
    metrics = {
        **classification_metrics(final_val.probabilities, final_val.labels, num_classes),
        "stream": stream_name,
        "model": model_name,
        "num_classes": num_classes,
        "chance": 1.0 / num_classes,
        "majority_class_rate": float(
            np.bincount(final_val.labels, minlength=num_classes).max() / len(final_val.labels)
        ),
        "n_from_prior": len(val_prior),
        "from_prior": [
            {"video_id": video, "reason": reasons.get(video, "no features in any stream")}
            for video in val_prior
        ],
    }
    if val_prior:
        log.warning(
            "%s: %d validation videos could not be read and were scored with the class prior: %s",
            model_name,
            len(val_prior),
            metrics["from_prior"][:5],
        )
    if len(streams) > 1:
        metrics["streams"] = {
            stream: {
                **classification_metrics(s.probabilities, s.labels, num_classes),
                "stream": stream,
            }
            for stream, s in val_scores.items()
            if len(s.video_ids)
        }
    rgb = metrics["streams"]["rgb"] if len(streams) > 1 and "rgb" in val_scores else None
    rgb_top1 = rgb["top1"] if rgb else (metrics["top1"] if streams == ["rgb"] else None)
    metrics["paper"] = {**paper_comparison(model_name, arch, data, rgb_top1), "stream": "rgb"}
    write_json(outputs["metrics"], metrics)
    _write_pictures(inputs, outputs, final_val, label_names, model_name, stream_name)
    _write_val_predictions(outputs["val_predictions"], final_val, val_scores, label_names, val_prior)
    write_test_predictions(outputs["test_predictions"], final_test, label_names)
    log.info(
        "%s (%s): %s",
        model_name,
        stream_name,
        {k: metrics[k] for k in ("top1", "top5", "mean_class_accuracy", "n_videos", "n_from_prior")},
    )
    return metrics


def _write_pictures(inputs, outputs, final_val, label_names, model_name, stream_name) -> None:
    predicted = final_val.probabilities.argmax(axis=1)
    matrix = confusion_matrix(predicted, final_val.labels, len(label_names))
    write_csv(outputs["per_class"], per_class_table(matrix, label_names))
    plot_confusion(
        matrix, label_names, outputs["confusion"], title=f"{model_name} ({stream_name}), validation"
    )
    logs = {stream: pd.read_csv(path) for stream, path in inputs.train_logs.items()}
    plot_curves(logs, outputs["curves"], title=model_name)


def _write_val_predictions(path, final_val, val_scores, label_names, from_prior) -> None:
    predicted = final_val.probabilities.argmax(axis=1)
    top5 = np.argsort(-final_val.probabilities, axis=1, kind="stable")[:, : min(5, len(label_names))]
    prior_ids = set(from_prior)
    frame = pd.DataFrame(
        {
            "video_id": final_val.video_ids,
            "label_index": final_val.labels,
            "label": [label_names[i] for i in final_val.labels],
            "predicted_index": predicted,
            "predicted": [label_names[i] for i in predicted],
            "correct": predicted == final_val.labels,
            "from_prior": [v in prior_ids for v in final_val.video_ids],
            "top5": [row.tolist() for row in top5],
            "probabilities": [row.astype(np.float32).tolist() for row in final_val.probabilities],
        }
    )
    if len(val_scores) > 1:  # each stream's own guess beside the fused one
        for stream, scores in val_scores.items():
            by_id = dict(zip(scores.video_ids, scores.probabilities.argmax(axis=1), strict=True))
            frame[f"predicted_index_{stream}"] = [
                int(by_id.get(v, -1)) for v in final_val.video_ids
            ]
    write_parquet(path, frame)
