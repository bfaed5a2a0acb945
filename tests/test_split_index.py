"""split and index: label mapping, links, everything dropped is reported with its reason."""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import pandas as pd
import pytest

from regiongraph.dataset.annotations import AnnotationError, read_labels, split_videos
from regiongraph.dataset.archive import extract_archive
from regiongraph.dataset.index import build_index, stable_shard

RAW = "20bn-something-something-v1"


@pytest.fixture
def extracted(tiny_download, tmp_path) -> tuple[Path, Path]:
    """(annotations copy, raw frame folder) ready to be split and indexed."""
    archives, annotations = tiny_download
    extract_archive(archives, tmp_path / "raw")
    shutil.copytree(annotations, tmp_path / "annotations")
    return tmp_path / "annotations", tmp_path / "raw" / RAW


def _tree_digest(folder: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(folder.rglob("*")):
        digest.update(str(path.relative_to(folder)).encode())
        if path.is_file():
            digest.update(path.read_bytes())
    return digest.hexdigest()


def test_labels_by_row_order_and_links(extracted, tmp_path):
    annotations, raw = extracted
    before = _tree_digest(raw)
    result = split_videos(annotations, raw, tmp_path / "frames")
    labels = read_labels(annotations / "something-something-v1-labels.csv")
    assert result.labels == labels
    train = (annotations / "something-something-v1-train.csv").read_text().splitlines()
    video_id, label = train[0].split(";")
    row = result.videos.set_index("video_id").loc[video_id]
    assert row.label_index == labels.index(label)
    link = tmp_path / "frames" / "train" / str(labels.index(label)) / video_id
    assert link.is_symlink() and link.resolve() == (raw / video_id).resolve()
    assert sorted(os.listdir(link)) == sorted(os.listdir(raw / video_id))
    test_id = (annotations / "something-something-v1-test.csv").read_text().split()[0]
    assert (tmp_path / "frames" / "test" / "unlabeled" / test_id).is_symlink()
    assert result.dropped.empty
    assert _tree_digest(raw) == before, "raw frames must never be moved or modified"
    # a rerun replaces the links and still leaves raw frames alone
    split_videos(annotations, raw, tmp_path / "frames")
    assert _tree_digest(raw) == before


def test_duplicate_label_is_an_error(extracted, tmp_path):
    annotations, raw = extracted
    path = annotations / "something-something-v1-labels.csv"
    lines = path.read_text().splitlines()
    path.write_text("\n".join([*lines, lines[1]]) + "\n")
    with pytest.raises(AnnotationError, match=rf"labels.csv:{len(lines) + 1}: duplicate label '{lines[1]}'"):
        split_videos(annotations, raw, tmp_path / "frames")
    assert not (tmp_path / "frames").exists()


def _with_bad_rows(annotations: Path) -> dict[str, str]:
    """An unknown label, a duplicate id and an id without frames, as real CSVs can have."""
    train_csv = annotations / "something-something-v1-train.csv"
    val_csv = annotations / "something-something-v1-validation.csv"
    train = train_csv.read_text().splitlines()
    unknown_id = train[0].split(";")[0]
    train[0] = f"{unknown_id};Juggling something with one hand"
    duplicate_id = train[1].split(";")[0]
    val = val_csv.read_text().splitlines()
    val.append(f"{duplicate_id};{train[1].split(';')[1]}")
    val.append("999999;" + train[2].split(";")[1])  # no frame folder
    val.append("999998;Juggling something with one hand")
    train_csv.write_text("\n".join(train) + "\n")
    val_csv.write_text("\n".join(val) + "\n")
    return {"unknown": unknown_id, "duplicate": duplicate_id, "missing": "999999"}


def test_unknown_labels_stop_the_split_listing_each_with_its_count(extracted, tmp_path):
    annotations, raw = extracted
    _with_bad_rows(annotations)
    with pytest.raises(AnnotationError) as error:
        split_videos(annotations, raw, tmp_path / "frames")
    message = str(error.value)
    assert "2 videos carry labels that are not in" in message and "labels.csv" in message
    assert "'Juggling something with one hand': 2 videos (first at" in message
    assert "something-something-v1-train.csv:1" in message
    assert "index.unknown_labels: drop" in message
    assert not (tmp_path / "frames").exists()  # nothing linked before the error


def test_bad_rows_are_reported_and_the_run_goes_on(extracted, tmp_path):
    annotations, raw = extracted
    ids = _with_bad_rows(annotations)
    result = split_videos(annotations, raw, tmp_path / "frames", unknown_labels="drop")
    reasons = result.dropped.set_index(["video_id", "split"])["reason"]
    assert "unknown label 'Juggling something with one hand'" in reasons[(ids["unknown"], "train")]
    assert "unknown label" in reasons[("999998", "validation")]
    assert "duplicate id" in reasons[(ids["duplicate"], "validation")]
    assert "first listed in train" in reasons[(ids["duplicate"], "validation")]
    assert "no frame folder" in reasons[("999999", "validation")]
    kept = set(result.videos.video_id)
    assert ids["unknown"] not in kept and ids["duplicate"] in kept and "999999" not in kept
    assert len(kept) == 24 - 1  # every other video is still linked
    assert (result.videos[result.videos.video_id == ids["duplicate"]].split == "train").all()
    # the listing keeps every video with a usable label once, linked or not: the evaluation
    # scores the one without frames, and cannot score those with unknown labels
    listed = result.listed.set_index("video_id")
    assert listed.loc["999999", "split"] == "validation" and "999998" not in listed.index
    assert ids["unknown"] not in listed.index and len(listed) == 24 - 1 + 1
    assert listed.index.is_unique


@pytest.mark.parametrize("video_id", ["../../etc", "12a", "", "1/2"])
def test_a_video_id_that_is_not_a_number_is_refused_before_any_path(extracted, tmp_path, video_id):
    annotations, raw = extracted
    test_csv = annotations / "something-something-v1-test.csv"
    lines = test_csv.read_text().splitlines()
    test_csv.write_text("\n".join([*lines, f"{video_id};x" if not video_id else video_id]) + "\n")
    with pytest.raises(AnnotationError, match=rf"test.csv:{len(lines) + 1}: video id .* is not a number"):
        split_videos(annotations, raw, tmp_path / "frames")
    assert not (tmp_path / "frames").exists()


def _index(extracted, tmp_path, **kwargs):
    annotations, raw = extracted
    result = split_videos(annotations, raw, tmp_path / "frames")
    settings = {"shards": {"train": 3, "validation": 2, "test": 1}, "min_frames": 1, "short_videos": "drop"}
    settings.update(kwargs)
    return result, build_index(result.videos, **settings)


def test_index_columns_sizes_and_shards(extracted, tmp_path):
    split, result = _index(extracted, tmp_path)
    train = result.splits["train"]
    assert list(train.columns) == [
        "video_id", "split", "label", "label_index", "n_frames", "height", "width", "frame_dir", "shard"
    ]
    first = train.iloc[0]
    frames = sorted(os.listdir(first.frame_dir))
    assert first.n_frames == len(frames) and frames[0] == "00001.jpg"
    assert first.height == 40 and 48 <= first.width <= 64
    assert set(train.shard) <= {0, 1, 2}
    assert all(stable_shard(v, 3) == s for v, s in zip(train.video_id, train.shard, strict=True))
    assert sum(len(t) for t in result.splits.values()) == 24
    assert (result.splits["test"].label_index == -1).all()


def test_stable_shard_is_stable_and_spread():
    assert stable_shard("12345", 256) == stable_shard("12345", 256)
    counts = pd.Series([stable_shard(str(i), 8) for i in range(4000)]).value_counts()
    assert len(counts) == 8 and counts.min() > 400


def _video_dir(tmp_path: Path, split_result, n: int = 0) -> tuple[str, Path]:
    row = split_result.videos.iloc[n]
    return row.video_id, Path(row.raw_dir)


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        ("gap", "missing frame 00002.jpg"),
        ("zero", "zero-byte JPEG"),
        ("truncated", "truncated JPEG (no end-of-image marker)"),
    ],
)
def test_bad_frames_are_reported(extracted, tmp_path, damage, reason):
    annotations, raw = extracted
    split = split_videos(annotations, raw, tmp_path / "frames")
    video_id, folder = _video_dir(tmp_path, split, 2)
    frame = folder / "00002.jpg"
    os.chmod(frame, 0o644)
    if damage == "gap":
        frame.unlink()
    elif damage == "zero":
        frame.write_bytes(b"")
    else:
        frame.write_bytes(frame.read_bytes()[:-200])
    result = build_index(split.videos, {"train": 1, "validation": 1, "test": 1}, 1, "drop")
    dropped = result.dropped.set_index("video_id")
    assert reason in dropped.loc[video_id, "reason"]
    if damage != "gap":
        assert str(frame) in dropped.loc[video_id, "reason"]
    kept = {v for t in result.splits.values() for v in t.video_id}
    assert video_id not in kept and len(kept) == 23


def test_short_videos_drop_or_loop(extracted, tmp_path):
    split, dropped_run = _index(extracted, tmp_path, min_frames=8)
    n_frames, splits = {}, {}
    for row in split.videos.itertuples():
        n_frames[row.video_id] = len(os.listdir(row.frame_dir))
        splits[row.video_id] = row.split
    short = {v for v, n in n_frames.items() if n < 8}
    short_train = {v for v in short if splits[v] == "train"}
    assert short_train and short - short_train, "the tiny toy set must have short videos in every split"
    reasons = dropped_run.dropped.set_index("video_id")["reason"]
    assert set(reasons.index) == short_train  # evaluation splits keep their short videos
    for video_id in short_train:
        assert f"too short: {n_frames[video_id]} frames < index.min_frames 8" == reasons[video_id]
    kept = {v for name, t in dropped_run.splits.items() if name != "train" for v in t.video_id}
    assert short - short_train <= kept
    loop = build_index(split.videos, {"train": 1, "validation": 1, "test": 1}, 8, "loop")
    assert loop.dropped.empty
    assert sum(len(t) for t in loop.splits.values()) == 24
