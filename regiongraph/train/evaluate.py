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
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from regiongraph.io import atomic_path, write_csv, write_json, write_parquet
from regiongraph.train.data import FeatureShardDataset, feature_loader
from regiongraph.train.loop import evaluate, load_model, resolve_device
from regiongraph.train.metrics import (
    classification_metrics,
    confusion_matrix,
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
    batch_size: int = 32,
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


def evaluate_model(
    model_paths: Mapping[str, str | os.PathLike],
    val_shards: Mapping[str, Sequence[str | os.PathLike]],
    test_shards: Mapping[str, Sequence[str | os.PathLike]],
    train_logs: Mapping[str, str | os.PathLike],
    labels_path: str | os.PathLike,
    outputs: Mapping[str, str | os.PathLike],
    model_name: str,
    expect: Mapping[str, Mapping[str, Any]] | None = None,
    device: str = "auto",
    batch_size: int = 32,
) -> dict[str, Any]:
    """Write every evaluation output of one model (``outputs`` maps names to paths).

    ``model_paths``, ``val_shards``, ``test_shards`` and ``train_logs`` are keyed by stream
    (``rgb``, ``flow``); ``expect`` by stream too. ``outputs`` keys: ``metrics``,
    ``per_class``, ``confusion``, ``curves``, ``val_predictions``, ``test_predictions``.
    """
    label_names = read_labels(labels_path)
    num_classes = len(label_names)
    expect = expect or {}
    val_scores: dict[str, StreamScores] = {}
    test_scores: dict[str, StreamScores] = {}
    for stream, model_path in model_paths.items():
        val_scores[stream] = predict(
            model_path, val_shards[stream], expect.get(stream), device, batch_size
        )
        if not val_scores[stream].video_ids:
            raise ValueError(f"no validation videos in {list(map(str, val_shards[stream]))}")
        test_scores[stream] = predict(
            model_path,
            test_shards[stream],
            expect.get(stream),
            device,
            batch_size,
            require_labels=False,
        )
    streams = list(model_paths)
    per_stream = {
        stream: {**classification_metrics(s.probabilities, s.labels, num_classes), "stream": stream}
        for stream, s in val_scores.items()
    }
    if len(streams) > 1:
        final_val, final_test = late_fusion(val_scores), late_fusion(test_scores)
        stream_name = "+".join(streams)
    else:
        final_val, final_test = val_scores[streams[0]], test_scores[streams[0]]
        stream_name = streams[0]
    metrics = {
        **classification_metrics(final_val.probabilities, final_val.labels, num_classes),
        "stream": stream_name,
        "model": model_name,
        "num_classes": num_classes,
        "chance": 1.0 / num_classes,
        "majority_class_rate": float(
            np.bincount(final_val.labels, minlength=num_classes).max() / len(final_val.labels)
        ),
    }
    if len(streams) > 1:
        metrics["streams"] = per_stream
    write_json(outputs["metrics"], metrics)

    predicted = final_val.probabilities.argmax(axis=1)
    matrix = confusion_matrix(predicted, final_val.labels, num_classes)
    write_csv(outputs["per_class"], per_class_table(matrix, label_names))
    plot_confusion(
        matrix, label_names, outputs["confusion"], title=f"{model_name} ({stream_name}), validation"
    )
    logs = {stream: pd.read_csv(path) for stream, path in train_logs.items()}
    plot_curves(logs, outputs["curves"], title=model_name)

    top5 = np.argsort(-final_val.probabilities, axis=1, kind="stable")[:, : min(5, num_classes)]
    frame = pd.DataFrame(
        {
            "video_id": final_val.video_ids,
            "label_index": final_val.labels,
            "label": [label_names[i] for i in final_val.labels],
            "predicted_index": predicted,
            "predicted": [label_names[i] for i in predicted],
            "correct": predicted == final_val.labels,
            "top5": [row.tolist() for row in top5],
            "probabilities": [row.astype(np.float32).tolist() for row in final_val.probabilities],
        }
    )
    if len(streams) > 1:  # each stream's own guess beside the fused one
        for stream, scores in val_scores.items():
            by_id = dict(zip(scores.video_ids, scores.probabilities.argmax(axis=1), strict=True))
            frame[f"predicted_index_{stream}"] = [
                int(by_id.get(v, -1)) for v in final_val.video_ids
            ]
    write_parquet(outputs["val_predictions"], frame)
    write_test_predictions(outputs["test_predictions"], final_test, label_names)
    log.info(
        "%s (%s): %s",
        model_name,
        stream_name,
        {k: metrics[k] for k in ("top1", "top5", "mean_class_accuracy", "n_videos")},
    )
    return metrics
