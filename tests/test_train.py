"""Feature-shard dataset, resumable training, metrics and evaluation outputs (CPU, tiny data)."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pandas as pd
import pytest
import torch

from regiongraph.io import ShardMismatchError, shard_writer
from regiongraph.train import loop
from regiongraph.train.checkpoints import checkpoint_epochs
from regiongraph.train.data import (
    EpochShuffle,
    FeatureShardDataset,
    feature_loader,
    feature_statistics,
)
from regiongraph.train.evaluate import (
    EvaluationInputs,
    StreamScores,
    evaluate_model,
    late_fusion,
    predict,
)
from regiongraph.train.loop import LearningRateSchedule, TrainSettings, train_heads, train_model
from regiongraph.train.metrics import (
    classification_metrics,
    confusion_matrix,
    gather_metrics,
    per_class_table,
    read_labels,
)
from regiongraph.train.plots import top_confused_pairs

FRAMES, PER_FRAME, CHANNELS = 4, 3, 16
SETTINGS = {
    "stream": "rgb",
    "arch": "i3d_r50",
    "weights_checksum": "sha256:abc",
    "num_frames": 8,
    "frame_stride": 2,
    "crop_size": 64,
    "resize_short": 72,
    "boxes_backend": "annotations",
    "per_frame": PER_FRAME,
}


def make_feature_shard(path, labels, seed=0, prefix="v", signal=2.0, **settings):
    """A features shard in the docs/formats.md layout; class ``c`` shifts channel ``c`` so
    that the features carry the label (a learnable signal)."""
    rng = np.random.default_rng(seed)
    labels = np.asarray(labels, dtype=np.int64)
    n = len(labels)
    global_ = rng.normal(size=(n, CHANNELS)).astype(np.float16)
    roi = rng.normal(size=(n, FRAMES, PER_FRAME, CHANNELS)).astype(np.float16)
    for row, label in enumerate(labels):
        if label >= 0:
            global_[row, label] += signal
            roi[row, :, :, label] += signal
    corner = rng.uniform(0, 40, size=(n, FRAMES, PER_FRAME, 2))
    boxes = np.concatenate(
        [corner, corner + rng.uniform(5, 24, size=corner.shape)], axis=-1
    ).astype(np.float32)
    mask = rng.random((n, FRAMES, PER_FRAME)) > 0.2
    ids = [f"{prefix}{seed}_{i}" for i in range(n)]
    with shard_writer(path, "features", {**SETTINGS, **settings}) as handle:
        handle.create_dataset(
            "video_id", data=np.array(ids, dtype=object), dtype=h5py.string_dtype()
        )
        handle.create_dataset("label_index", data=labels)
        handle.create_dataset("global", data=global_, chunks=(1, CHANNELS) if n else None)
        handle.create_dataset(
            "roi", data=roi, chunks=(1, FRAMES, PER_FRAME, CHANNELS) if n else None
        )
        handle.create_dataset("boxes", data=boxes)
        handle.create_dataset("mask", data=mask)
    return ids


def _labels(n, classes, seed):
    return np.random.default_rng(seed).integers(0, classes, size=n)


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    root = tmp_path_factory.mktemp("features")
    train = [root / "train-000.h5", root / "train-001.h5"]
    make_feature_shard(train[0], _labels(16, 4, 1), seed=1)
    make_feature_shard(train[1], _labels(12, 4, 2), seed=2)
    val = [root / "validation-000.h5"]
    make_feature_shard(val[0], _labels(12, 4, 3), seed=3)
    test = [root / "test-000.h5"]
    make_feature_shard(test[0], [-1] * 5, seed=4, prefix="t")
    labels = root / "labels.csv"
    names = [
        "Moving something up",
        "Pushing something, so that it falls",
        "Covering something",
        "Lifting",
    ]
    pd.DataFrame({"label_index": range(4), "label": names}).to_csv(labels, index=False)
    return {"train": train, "validation": val, "test": test, "labels": labels, "names": names}


def small_settings(**overrides):
    values = dict(
        model="joint",
        epochs=3,
        batch_size=8,
        optimizer="sgd",
        lr=0.05,
        warmup_epochs=0,
        hidden=8,
        seed=3,
        device="cpu",
        keep_checkpoints=None,  # every epoch kept: tests resume from any of them
    )
    values.update(overrides)
    return TrainSettings(**values)


def test_dataset_items_are_dicts_read_lazily(shards):
    dataset = FeatureShardDataset(shards["train"], expect={"stream": "rgb", "num_frames": 8})
    assert len(dataset) == 28 and dataset.channels == CHANNELS
    assert dataset._handles == {}  # nothing but ids and labels read up front
    item = dataset[20]  # a video of the second shard
    assert set(item) == {"video_id", "label", "global", "roi", "boxes", "mask"}
    with h5py.File(shards["train"][1]) as handle:
        assert item["video_id"] == handle["video_id"].asstr()[4]
        assert item["label"] == handle["label_index"][4]
        np.testing.assert_array_equal(item["roi"].numpy(), handle["roi"][4])
        np.testing.assert_array_equal(item["mask"].numpy(), handle["mask"][4])
    assert (
        item["roi"].shape == (FRAMES, PER_FRAME, CHANNELS) and item["boxes"].dtype == torch.float32
    )
    assert list(dataset._handles) == [1]
    batch = next(iter(feature_loader(dataset, batch_size=5)))
    assert batch["roi"].shape == (5, FRAMES, PER_FRAME, CHANNELS) and len(batch["video_id"]) == 5


def test_compressed_or_differently_chunked_shards_read_the_same(shards, tmp_path):
    # The raw-chunk fast path (one uncompressed video per chunk) and HDF5's normal reads agree.
    plain = FeatureShardDataset(shards["validation"])
    with (
        h5py.File(shards["validation"][0]) as source,
        shard_writer(tmp_path / "gzip.h5", "features", SETTINGS) as target,
    ):
        for name in source:
            target.create_dataset(
                name,
                data=source[name][()],
                compression="gzip",
                chunks=True if name != "video_id" else None,
            )
    packed = FeatureShardDataset([tmp_path / "gzip.h5"])
    indices = [5, 0, 11, 3]
    a, b = plain.__getitems__(indices), packed.__getitems__(indices)
    assert a["video_id"] == b["video_id"] == [plain.video_ids[i] for i in indices]
    for name in ("label", "global", "roi", "boxes", "mask"):
        torch.testing.assert_close(a[name], b[name], rtol=0, atol=0)
    item = plain[11]
    torch.testing.assert_close(item["roi"], a["roi"][2], rtol=0, atol=0)
    assert item["label"] == int(plain.labels[11])


def test_global_only_dataset_leaves_the_regions_on_disk(shards):
    dataset = FeatureShardDataset(shards["validation"], regions=False)
    batch = dataset.__getitems__([0, 1])
    assert set(batch) == {"video_id", "label", "global"}
    assert set(dataset._arrays(0)) == {"global"}


def test_dataset_refuses_shards_from_other_settings(shards, tmp_path):
    with pytest.raises(ShardMismatchError, match=r"num_frames: shard has 8, config wants 32"):
        FeatureShardDataset(shards["train"], expect={"num_frames": 32})
    other = tmp_path / "other.h5"
    make_feature_shard(other, [0, 1], weights_checksum="sha256:def")
    with pytest.raises(
        ShardMismatchError,
        match=r"weights_checksum: 'sha256:abc' in .*train-000.h5 but 'sha256:def'",
    ):
        FeatureShardDataset([shards["train"][0], other])


def test_test_split_without_labels_is_refused_for_training(shards):
    with pytest.raises(ValueError, match=r"test-000.h5: video 't4_0' has no label"):
        FeatureShardDataset(shards["test"])
    assert len(FeatureShardDataset(shards["test"], require_labels=False)) == 5


def test_empty_validation_split_fails_before_training(shards, tmp_path):
    empty = tmp_path / "validation-000.h5"
    make_feature_shard(empty, [])
    with pytest.raises(ValueError, match="validation split has no videos"):
        train_model(small_settings(), shards["train"], [empty], 4, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_feature_statistics_match_numpy_over_valid_nodes(shards):
    dataset = FeatureShardDataset(shards["train"])
    stats = feature_statistics(dataset, max_videos=1000, batch_size=5)
    with h5py.File(shards["train"][0]) as a, h5py.File(shards["train"][1]) as b:
        glob = np.concatenate([a["global"][()], b["global"][()]]).astype(np.float64)
        mask = np.concatenate([a["mask"][()], b["mask"][()]])
        roi = np.concatenate([a["roi"][()], b["roi"][()]]).astype(np.float64)[mask]
    np.testing.assert_allclose(stats["global"][0], glob.mean(0), rtol=1e-5)
    np.testing.assert_allclose(stats["global"][1], glob.std(0), rtol=1e-4)
    np.testing.assert_allclose(stats["roi"][0], roi.mean(0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(stats["roi"][1], roi.std(0), rtol=1e-4)
    assert set(feature_statistics(FeatureShardDataset(shards["train"], regions=False))) == {
        "global"
    }


def test_epoch_shuffle_is_a_pure_function_of_seed_and_epoch():
    sampler = EpochShuffle(20, seed=4)
    sampler.set_epoch(3)
    first = list(sampler)
    assert sorted(first) == list(range(20))
    again = EpochShuffle(20, seed=4)
    again.set_epoch(3)
    assert list(again) == first  # a resumed run sees the same order
    sampler.set_epoch(4)
    assert list(sampler) != first


def test_learning_rate_schedules():
    warm = LearningRateSchedule(
        TrainSettings(epochs=4, warmup_epochs=1, lr_schedule="cosine"), steps_per_epoch=2
    )
    assert [warm(s) for s in range(3)] == pytest.approx([0.5, 1.0, 1.0])
    assert warm(5) == pytest.approx(0.5 * (1 + np.cos(np.pi * 1.5 / 3)))
    step = LearningRateSchedule(
        TrainSettings(lr_schedule="step", lr_steps=[2, 3], lr_gamma=0.1, warmup_epochs=0),
        steps_per_epoch=1,
    )
    assert [step(s) for s in range(4)] == pytest.approx([1, 1, 0.1, 0.01])


def _state(path):
    return torch.load(path, weights_only=True)["model"]


# The demo's optimiser: AdamW state (moments, step counts) and the warm-up must resume too.
DEMO_OPTIMISER = {"optimizer": "adamw", "lr": 1e-3, "warmup_epochs": 1}


def test_interrupted_training_resumes_to_the_same_weights_and_log(shards, tmp_path, monkeypatch):
    straight = train_model(
        small_settings(**DEMO_OPTIMISER), shards["train"], shards["validation"], 4, tmp_path / "a"
    )

    real = loop.train_heads_one_epoch
    calls = []

    def killed_in_epoch_3(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt("job killed")
        return real(*args, **kwargs)

    monkeypatch.setattr(loop, "train_heads_one_epoch", killed_in_epoch_3)
    with pytest.raises(KeyboardInterrupt):
        train_model(
            small_settings(**DEMO_OPTIMISER),
            shards["train"],
            shards["validation"],
            4,
            tmp_path / "b",
        )
    assert checkpoint_epochs(tmp_path / "b" / "checkpoints") == [1, 2]
    monkeypatch.setattr(loop, "train_heads_one_epoch", real)
    resumed = train_model(
        small_settings(**DEMO_OPTIMISER), shards["train"], shards["validation"], 4, tmp_path / "b"
    )

    a, b = _state(straight), _state(resumed)
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(b[key], a[key], rtol=0, atol=0, msg=key)
    log_a = pd.read_csv(tmp_path / "a" / "train_log.csv").drop(columns="seconds")
    log_b = pd.read_csv(tmp_path / "b" / "train_log.csv").drop(columns="seconds")
    assert list(log_a["epoch"]) == [1, 2, 3]
    pd.testing.assert_frame_equal(log_b, log_a)

    # gcn.resume_from: restart from epoch 1 and arrive at the same place again.
    again = train_model(
        small_settings(resume_from=1, **DEMO_OPTIMISER),
        shards["train"],
        shards["validation"],
        4,
        tmp_path / "b",
    )
    for key, value in _state(again).items():
        torch.testing.assert_close(value, a[key], rtol=0, atol=0, msg=key)
    with pytest.raises(
        FileNotFoundError, match=r"no checkpoint for epoch 7 .*found epochs \[1, 2, 3\]"
    ):
        train_model(
            small_settings(resume_from=7, **DEMO_OPTIMISER),
            shards["train"],
            shards["validation"],
            4,
            tmp_path / "b",
        )


def test_only_the_latest_checkpoints_are_kept_when_asked(shards, tmp_path):
    settings = small_settings(model="baseline", epochs=3, keep_checkpoints=2)
    train_model(settings, shards["train"], shards["validation"], 4, tmp_path)
    assert checkpoint_epochs(tmp_path / "checkpoints") == [2, 3]
    assert len(pd.read_csv(tmp_path / "train_log.csv")) == 3


def _fingerprint(path):
    return torch.load(path, map_location="cpu", weights_only=True)["fingerprint"]


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"lr": 0.1}, "settings.lr: 0.05 -> 0.1"),
        ({"model": "joint"}, "settings.model: 'baseline' -> 'joint'"),
        ({"epochs": 3}, "settings.epochs: 2 -> 3"),
        ({"num_classes": 6}, "architecture.num_classes: 4 -> 6"),
        ({"train": "other"}, "train.shards: changed"),
    ],
)
def test_checkpoints_of_another_run_are_set_aside_and_training_starts_afresh(
    shards, tmp_path, caplog, change, expected
):
    """A changed setting or changed features means a new run: no error, no resume, no hand work."""
    out = tmp_path / "run"
    base = dict(model="baseline", epochs=2)
    train_model(small_settings(**base), shards["train"], shards["validation"], 4, out)
    old = _fingerprint(out / "checkpoints" / "epoch-2.pt")

    change = dict(change)
    classes = change.pop("num_classes", 4)
    train = shards["train"]
    if change.pop("train", None):  # the features were recomputed and came out different
        train = [tmp_path / "train-new.h5"]
        make_feature_shard(train[0], _labels(20, 4, 9), seed=9)
    settings = small_settings(**{**base, **change})
    with caplog.at_level("WARNING"):
        path = train_model(settings, train, shards["validation"], classes, out)
    assert "belong to another run" in caplog.text and expected in caplog.text
    stale = out / "checkpoints.stale"
    assert checkpoint_epochs(stale) == [1, 2] and _fingerprint(stale / "epoch-2.pt") == old
    fresh = train_model(settings, train, shards["validation"], classes, tmp_path / "fresh")
    for key, value in _state(fresh).items():
        torch.testing.assert_close(_state(path)[key], value, rtol=0, atol=0, msg=key)
    assert _fingerprint(path) == _fingerprint(fresh) != old
    assert _fingerprint(out / "checkpoints" / f"epoch-{settings.epochs}.pt") == _fingerprint(path)


def test_a_finished_run_is_not_trained_twice_and_operational_settings_may_change(
    shards, tmp_path, caplog, monkeypatch
):
    out = tmp_path / "run"
    first = train_model(small_settings(epochs=2), shards["train"], shards["validation"], 4, out)
    weights = _state(first)
    monkeypatch.setattr(loop, "train_heads_one_epoch", lambda *a, **k: pytest.fail("trained again"))
    with caplog.at_level("INFO"):
        again = train_model(
            small_settings(epochs=2, keep_checkpoints=1, num_workers=0),
            shards["train"],
            shards["validation"],
            4,
            out,
        )
    assert "resuming joint/rgb from" in caplog.text
    for key, value in _state(again).items():
        torch.testing.assert_close(value, weights[key], rtol=0, atol=0, msg=key)


def test_resume_from_a_checkpoint_of_another_run_is_an_error(shards, tmp_path):
    out = tmp_path / "run"
    train_model(small_settings(epochs=2), shards["train"], shards["validation"], 4, out)
    with pytest.raises(ValueError, match=r"epoch 1.*another run \(settings.lr: 0.05 -> 0.2\)"):
        train_model(
            small_settings(epochs=2, lr=0.2, resume_from=1),
            shards["train"],
            shards["validation"],
            4,
            out,
        )
    assert checkpoint_epochs(out / "checkpoints") == [1, 2]  # nothing was moved


def test_training_learns_a_signal_in_the_features(shards, tmp_path):
    settings = small_settings(model="joint", epochs=6, lr=0.1, dropout=0.2)
    train_model(settings, shards["train"], shards["validation"], 4, tmp_path)
    log = pd.read_csv(tmp_path / "train_log.csv")
    assert log["train_loss"].iloc[-1] < log["train_loss"].iloc[0]
    assert log["val_top1"].iloc[-1] >= 0.75  # chance is 0.25; the signal is strong


def test_metrics_against_hand_made_predictions():
    # 6 classes; scores rank the classes of each video.
    scores = np.array(
        [
            [0.9, 0.1, 0.0, 0.0, 0.0, 0.0],  # true 0: top-1 right
            [0.1, 0.8, 0.0, 0.05, 0.03, 0.02],  # true 0: second place, top-5 right
            [0.0, 0.5, 0.1, 0.2, 0.15, 0.05],  # true 0: last place, top-5 wrong
            [0.0, 0.7, 0.1, 0.1, 0.1, 0.0],  # true 1: right
        ]
    )
    labels = np.array([0, 0, 0, 1])
    metrics = classification_metrics(scores, labels, 6)
    assert metrics == {
        "top1": 0.5,
        "top5": 0.75,
        "mean_class_accuracy": pytest.approx((1 / 3 + 1) / 2),
        "n_videos": 4,
    }
    matrix = confusion_matrix(scores.argmax(1), labels, 6)
    assert matrix[0, 0] == 1 and matrix[0, 1] == 2 and matrix[1, 1] == 1 and matrix.sum() == 4
    assert top_confused_pairs(matrix) == [(0, 1, 2)]
    table = per_class_table(matrix, [f"c{i}" for i in range(6)])
    assert (
        table.loc[0, "accuracy"] == pytest.approx(1 / 3)
        and table.loc[0, "most_confused_with"] == "c1"
    )
    assert np.isnan(table.loc[2, "accuracy"]) and table.loc[2, "n_videos"] == 0


def test_late_fusion_averages_softmax_and_keeps_videos_of_one_stream():
    rgb = StreamScores(["a", "b"], np.array([0, 1]), np.array([[0.4, 0.6], [0.3, 0.7]]))
    flow = StreamScores(
        ["b", "a", "c"], np.array([1, 0, 1]), np.array([[0.5, 0.5], [0.9, 0.1], [0.2, 0.8]])
    )
    fused = late_fusion({"rgb": rgb, "flow": flow})
    assert fused.video_ids == ["a", "b", "c"]
    np.testing.assert_allclose(fused.probabilities, [[0.65, 0.35], [0.4, 0.6], [0.2, 0.8]])
    assert fused.probabilities[0].argmax() == 0  # flow's confidence overrules rgb's mistake
    conflicting = StreamScores(["a"], np.array([1]), np.array([[0.5, 0.5]]))
    with pytest.raises(ValueError, match="video 'a' has label 0 in one stream, 1 in flow"):
        late_fusion({"rgb": rgb, "flow": conflicting})


def _listing(paths, split):
    rows = []
    for path in paths:
        with h5py.File(path, "r") as handle:
            ids = handle["video_id"].asstr()[()]
            rows += zip(ids, [split] * len(ids), handle["label_index"][()], strict=True)
    return pd.DataFrame(rows, columns=["video_id", "split", "label_index"]).assign(label="")


def evaluation_inputs(models, val, test, logs, shards, root, extra=(), dropped=None):
    """EvaluationInputs over the given shards: split/listed.parquet lists the first stream's
    videos and ``extra`` rows (``video_id, split, label_index``); the train index gives the prior."""
    first = next(iter(models))
    listed = pd.concat(
        [
            _listing(val[first], "validation"),
            _listing(test[first], "test"),
            pd.DataFrame(list(extra), columns=["video_id", "split", "label_index"]).assign(label=""),
        ],
        ignore_index=True,
    )
    listed.to_parquet(root / "listed.parquet")
    _listing(shards["train"], "train").to_parquet(root / "train.parquet")
    return EvaluationInputs(
        models, val, test, logs, shards["labels"], root / "listed.parquet",
        root / "train.parquet", [dropped] if dropped else [],
    )


def test_evaluation_writes_every_output_and_fuses_two_streams(shards, tmp_path):
    models, logs, val, test = {}, {}, {}, {}
    root = tmp_path / "features"
    for stream in ("rgb", "flow"):
        if stream == "rgb":
            val[stream], test[stream], train = shards["validation"], shards["test"], shards["train"]
        else:  # the same videos, features of another stream
            train = [root / "flow-train.h5"]
            make_feature_shard(train[0], _labels(16, 4, 1), seed=1, stream="flow")
            val[stream] = [root / "flow-val.h5"]
            make_feature_shard(val[stream][0], _labels(12, 4, 3), seed=3, stream="flow")
            test[stream] = [root / "flow-test.h5"]
            make_feature_shard(test[stream][0], [-1] * 5, seed=4, prefix="t", stream="flow")
        out = tmp_path / "gcn" / "joint" / stream
        models[stream] = train_model(
            small_settings(stream=stream, epochs=2), train, val[stream], 4, out
        )
        logs[stream] = out / "train_log.csv"
    names = ["metrics", "per_class", "confusion", "curves", "val_predictions", "test_predictions"]
    suffix = {
        "metrics": "json",
        "per_class": "csv",
        "confusion": "png",
        "curves": "png",
        "val_predictions": "parquet",
    }
    outputs = {
        name: tmp_path / "gcn" / "joint" / f"{name}.{suffix.get(name, 'csv')}" for name in names
    }
    inputs = evaluation_inputs(models, val, test, logs, shards, tmp_path)
    evaluate_model(inputs, outputs, "joint", arch="i3d_r50", data="ssv1", device="cpu")

    metrics = json.loads(outputs["metrics"].read_text())
    assert metrics["stream"] == "rgb+flow" and set(metrics["streams"]) == {"rgb", "flow"}
    # the paper's RGB result of I3D + joint GCN, beside this run's RGB stream
    paper = metrics["paper"]
    assert paper["paper_top1"] == 0.433 and paper["stream"] == "rgb" and paper["data"] == "ssv1"
    assert paper["gap_to_paper"] == pytest.approx(metrics["streams"]["rgb"]["top1"] - 0.433, abs=1e-4)
    assert metrics["n_videos"] == 12 and metrics["num_classes"] == 4
    for values in (metrics, metrics["streams"]["rgb"], metrics["streams"]["flow"]):
        assert all(0 <= values[key] <= 1 for key in ("top1", "top5", "mean_class_accuracy"))
    predictions = pd.read_parquet(outputs["val_predictions"])
    assert metrics["top1"] == pytest.approx(predictions["correct"].mean())
    lines = outputs["test_predictions"].read_text().splitlines()
    assert len(lines) == 5 and all(line.startswith("t4_") for line in lines)
    video, label = lines[0].split(";", 1)
    assert label in shards["names"]  # label text, commas and all
    assert len(pd.read_csv(outputs["per_class"])) == 4
    for picture in ("confusion", "curves"):
        assert outputs[picture].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert read_labels(shards["labels"])[1] == "Pushing something, so that it falls"
    table = gather_metrics({"joint": outputs["metrics"]}, tmp_path / "metrics_table.csv")
    assert table.loc[0, "model"] == "joint" and table.loc[0, "stream"] == "rgb+flow"
    assert table.loc[0, "top1"] == pytest.approx(metrics["top1"], abs=1e-4)
    assert table.loc[0, "chance"] == 0.25
    assert table.loc[0, "paper_top1"] == 0.433 and table.loc[0, "data"] == "ssv1"


def test_unreadable_validation_and_test_videos_are_scored_with_the_prior_and_flagged(
    shards, tmp_path
):
    out = tmp_path / "gcn" / "baseline" / "rgb"
    model = train_model(
        small_settings(model="baseline", epochs=1), shards["train"], shards["validation"], 4, out
    )
    dropped = tmp_path / "index-dropped.csv"
    pd.DataFrame(
        [{"video_id": "900", "split": "validation", "reason": "no frame folder x", "stage": "split"}]
    ).to_csv(dropped, index=False)
    extra = [("900", "validation", 2), ("901", "validation", 0), ("902", "test", -1)]
    inputs = evaluation_inputs(
        {"rgb": model}, {"rgb": shards["validation"]}, {"rgb": shards["test"]},
        {"rgb": out / "train_log.csv"}, shards, tmp_path, extra, dropped,
    )
    names = {"metrics": "json", "per_class": "csv", "confusion": "png", "curves": "png",
             "val_predictions": "parquet", "test_predictions": "csv"}
    outputs = {name: tmp_path / f"{name}.{suffix}" for name, suffix in names.items()}
    metrics = evaluate_model(inputs, outputs, "baseline", arch="i3d_nl_r50", data="demo data", device="cpu")

    assert metrics["n_videos"] == 12 + 2 and metrics["n_from_prior"] == 2
    # beside the paper: non-local I3D's 44.4%, but demo data is not compared
    assert metrics["paper"]["paper_top1"] == 0.444 and metrics["paper"]["data"] == "demo data"
    assert metrics["paper"]["gap_to_paper"] is None
    assert metrics["from_prior"] == [
        {"video_id": "900", "reason": "split: no frame folder x"},
        {"video_id": "901", "reason": "no features in any stream"},
    ]
    assert json.loads(outputs["metrics"].read_text())["n_from_prior"] == 2
    train_labels = np.concatenate([_listing([p], "train").label_index for p in shards["train"]])
    prior_class = int(np.bincount(train_labels, minlength=4).argmax())
    predictions = pd.read_parquet(outputs["val_predictions"]).set_index("video_id")
    assert predictions.loc[["900", "901"], "from_prior"].all()
    assert not predictions.drop(index=["900", "901"])["from_prior"].any()
    assert (predictions.loc[["900", "901"], "predicted_index"] == prior_class).all()
    np.testing.assert_allclose(
        predictions.loc["900", "probabilities"], np.bincount(train_labels, minlength=4) / len(train_labels),
        rtol=1e-6,
    )
    lines = dict(line.split(";", 1) for line in outputs["test_predictions"].read_text().splitlines())
    assert len(lines) == 5 + 1 and lines["902"] == shards["names"][prior_class]


def test_training_that_diverges_stops_with_an_error_naming_the_learning_rate(shards, tmp_path):
    settings = small_settings(model="baseline", epochs=2, lr=1e30, optimizer="sgd")
    with pytest.raises(FloatingPointError, match=r"training baseline/rgb diverged.*gcn.lr \(1e\+30\)"):
        train_model(settings, shards["train"], shards["validation"], 4, tmp_path)
    assert not (tmp_path / "model.pt").exists()


def test_a_videos_views_are_averaged_into_one_prediction(shards, tmp_path):
    """Multi-view evaluation: a validation or test shard holds views x crops rows per video;
    the video's scores are the mean of its rows' softmax, and it counts once."""
    out = tmp_path / "head"
    model_path = train_model(
        small_settings(model="baseline", epochs=1), shards["train"], shards["validation"], 4, out
    )
    labels = np.array([0, 0, 0, 2, 2, 2], dtype=np.int64)
    path = tmp_path / "views.h5"
    make_feature_shard(path, labels, seed=7, views=3)
    ids = [f"v{i // 3}" for i in range(6)]
    with h5py.File(path, "r+") as handle:  # three views each of videos v0 and v1
        del handle["video_id"]
        handle.create_dataset("video_id", data=np.array(ids, dtype=object), dtype=h5py.string_dtype())
        handle.create_dataset("view", data=np.array([0, 1, 2, 0, 1, 2]))
    scores = predict(model_path, [path], device="cpu")
    assert scores.video_ids == ["v0", "v1"] and scores.labels.tolist() == [0, 2]
    model, _ = loop.load_model(model_path)
    with h5py.File(path, "r") as handle, torch.no_grad():
        rows = torch.softmax(model(torch.from_numpy(handle["global"][()]).float()), dim=-1)
    np.testing.assert_allclose(scores.probabilities, rows.view(2, 3, -1).mean(1).numpy(), rtol=1e-5)
    np.testing.assert_allclose(scores.probabilities.sum(1), 1.0, rtol=1e-6)


def test_heads_trained_in_one_pass_equal_heads_trained_alone(shards, tmp_path):
    """One job per stream reads each batch once and steps every head; each head keeps its own
    optimiser and RNG stream, so its weights and log are those of a run of its own."""
    names = ["joint", "baseline", "similarity"]
    settings = [small_settings(model=name, epochs=2, **DEMO_OPTIMISER) for name in names]
    together = train_heads(
        settings, shards["train"], shards["validation"], 4, [tmp_path / "pass" / n for n in names]
    )
    for name, setting, path in zip(names, settings, together, strict=True):
        alone = train_model(setting, shards["train"], shards["validation"], 4, tmp_path / "alone" / name)
        for key, value in _state(alone).items():
            torch.testing.assert_close(_state(path)[key], value, rtol=0, atol=0, msg=f"{name} {key}")
        logs = [pd.read_csv(p.parent / "train_log.csv").drop(columns="seconds") for p in (path, alone)]
        pd.testing.assert_frame_equal(*logs)
        assert _fingerprint(path) == _fingerprint(alone)


def test_a_head_that_diverges_stops_and_the_others_finish(shards, tmp_path, caplog):
    healthy = small_settings(model="baseline", epochs=2)
    diverging = small_settings(model="joint", epochs=2, lr=1e30)
    with pytest.raises(FloatingPointError, match=r"training joint/rgb diverged"):
        with caplog.at_level("ERROR"):
            train_heads(
                [diverging, healthy], shards["train"], shards["validation"], 4,
                [tmp_path / "joint", tmp_path / "baseline"],
            )
    assert "the other heads go on" in caplog.text
    assert not (tmp_path / "joint" / "model.pt").exists()
    assert checkpoint_epochs(tmp_path / "baseline" / "checkpoints") == [1, 2]
    alone = train_model(healthy, shards["train"], shards["validation"], 4, tmp_path / "alone")
    for key, value in _state(alone).items():
        torch.testing.assert_close(_state(tmp_path / "baseline" / "model.pt")[key], value, rtol=0, atol=0)


def test_features_kept_in_memory_read_the_same_batches(shards, caplog):
    lazy = FeatureShardDataset(shards["train"])
    cached = FeatureShardDataset(shards["train"])
    with caplog.at_level("INFO"):
        assert cached.cache_in_memory("always", "train") is True
        assert lazy.cache_in_memory("never", "train") is False
    assert "kept in memory (gcn.cache_features: always)" in caplog.text
    assert "read from disk each epoch (gcn.cache_features: never)" in caplog.text
    cached.close()  # the arrays are in memory: no file is needed any more
    indices = [27, 0, 15, 16, 3]
    a, b = lazy.__getitems__(indices), cached.__getitems__(indices)
    assert a["video_id"] == b["video_id"]
    for name in ("global", "roi", "boxes", "mask", "label"):
        assert torch.equal(a[name], b[name]), name
    assert cached.nbytes == len(cached) * (CHANNELS * 2 + FRAMES * PER_FRAME * (CHANNELS * 2 + 16 + 1))
    with pytest.raises(ValueError, match="gcn.cache_features must be one of"):
        lazy.cache_in_memory("sometimes")
