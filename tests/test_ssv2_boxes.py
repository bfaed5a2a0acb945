"""Something-Else's box part files on the decoded SSv2 frames: the boxes stage reads the parts,
counts videos without annotations and annotations past a video's end."""

from __future__ import annotations

import json
import logging
import shutil

import numpy as np
import pytest

from regiongraph.dataset.archive import extract_archive
from regiongraph.dataset.index import build_index
from regiongraph.dataset.ssv2 import split_ssv2
from regiongraph.dataset.toy import SSV2_BOX_FILES, iter_videos
from regiongraph.dataset.video import DecodeSettings, decode_videos
from regiongraph.detect.stage import BoxSettings, extract_boxes_shard
from regiongraph.io import open_shard
from tests.conftest import TINY_TOY

STEM = "20bn-something-something-v2"


@pytest.fixture(scope="module")
def indexed(tiny_ssv2_download, tmp_path_factory):
    """The tiny SSv2 download extracted, decoded, split and indexed (one shard per split)."""
    zips, labels, _ = tiny_ssv2_download
    root = tmp_path_factory.mktemp("ssv2-indexed")
    extract_archive(zips, root / "videos", stem=STEM)
    decode_videos(root / "videos" / STEM, root / "raw", DecodeSettings(None, 90))
    split = split_ssv2(labels, root / "raw", root / "frames")
    index = build_index(split.videos, {"train": 1, "validation": 1, "test": 1}, 1, "loop")
    path = root / "validation.parquet"
    index.splits["validation"].to_parquet(path)
    return path, index.splits["validation"]


def _boxes(index_path, out, parts):
    return extract_boxes_shard(
        index_path, 0, out, BoxSettings(per_frame=4), 8, 2, "uniform",
        device="cpu", weights_cache=out.parent / "downloads", box_annotations=[str(p) for p in parts],
    )


def test_the_part_files_give_each_frame_its_true_boxes(tiny_ssv2_download, indexed, tmp_path):
    _, _, boxes_dir = tiny_ssv2_download
    index_path, rows = indexed
    parts = [boxes_dir / name for name in SSV2_BOX_FILES]
    counts = _boxes(index_path, tmp_path / "shard-000.h5", parts)
    assert counts == {"videos": len(rows), "dropped": 0, "unannotated": 0, "beyond_length": 0}
    truth = {video.video_id: video for video in iter_videos(TINY_TOY)}
    checked = 0
    with open_shard(tmp_path / "shard-000.h5", "boxes") as shard:
        for row in rows.itertuples():
            group = shard[row.video_id]
            frames = group["frame_indices"][()]
            for t, frame in enumerate(frames):
                expected = sorted(truth[row.video_id].boxes[frame], key=lambda v: v["object"])
                n = len(expected)
                assert group["mask"][t].sum() == n
                want = np.clip(
                    np.array([v["box"] for v in expected], np.float32).reshape(-1, 4),
                    0,
                    [row.width, row.height, row.width, row.height],
                )
                np.testing.assert_allclose(group["boxes"][t, :n], want)
                checked += n
    assert checked > 0


def test_videos_without_annotations_and_frames_past_the_end_are_counted(tiny_ssv2_download, indexed, tmp_path, caplog):
    _, _, boxes_dir = tiny_ssv2_download
    index_path, rows = indexed
    parts = [tmp_path / name for name in SSV2_BOX_FILES]
    for name in SSV2_BOX_FILES:
        shutil.copy(boxes_dir / name, tmp_path / name)
    data = [json.loads(p.read_text()) for p in parts]
    long_id, missing_id = rows.video_id.iloc[0], rows.video_id.iloc[1]
    for part in data:
        part.pop(missing_id, None)
        if long_id in part:
            n = int(rows.set_index("video_id").loc[long_id, "n_frames"])
            last = part[long_id][-1]
            part[long_id] += [dict(last, name=f"{long_id}/{n + k:04d}.jpg") for k in (1, 2, 3)]
    for path, part in zip(parts, data, strict=True):
        path.write_text(json.dumps(part))
    with caplog.at_level(logging.WARNING):
        counts = _boxes(index_path, tmp_path / "shard-000.h5", parts)
    assert counts["unannotated"] == 1 and counts["beyond_length"] == 1
    assert counts["videos"] == len(rows) and counts["dropped"] == 0
    messages = [r.getMessage() for r in caplog.records]
    n = int(rows.set_index("video_id").loc[long_id, "n_frames"])
    assert any(
        m.startswith(f"{long_id}: the box annotations number frames up to {n + 3:04d}.jpg, the video has {n} frames")
        for m in messages
    )
    assert any(m.startswith(f"{missing_id}: not in the box annotations") for m in messages)
    with open_shard(tmp_path / "shard-000.h5", "boxes") as shard:
        assert not shard[missing_id]["mask"][()].any()
        assert shard[long_id]["mask"][()].any()


def test_the_parts_cut_per_shard_give_the_same_boxes_and_class_ids(tiny_ssv2_download, indexed, tmp_path):
    from regiongraph.detect.annotations import BoxAnnotations, shard_box_annotations, shard_fragment

    _, _, boxes_dir = tiny_ssv2_download
    index_path, rows = indexed
    parts = [boxes_dir / name for name in SSV2_BOX_FILES]
    # two shards of the validation split, by the video's position
    owners = {video_id: ("validation", i % 2) for i, video_id in enumerate(rows.video_id)}
    counts = shard_box_annotations(parts, owners, {"validation": 2}, tmp_path / "cut")
    assert counts == {"annotated": 24, "in_index": len(rows), "unannotated": 0}
    classes = json.loads((tmp_path / "cut" / "classes.json").read_text())
    whole = BoxAnnotations.load(parts)
    assert classes == whole.class_names
    for k in (0, 1):
        fragments = [shard_fragment(tmp_path / "cut", "validation", k, p) for p in range(2)]
        held = set().union(*(json.loads(f.read_text()) for f in fragments))
        assert held == {v for v, (_, shard) in owners.items() if shard == k}
        cut = BoxAnnotations.load(fragments, class_names=classes)
        for video_id in held:
            a = cut.video_boxes(video_id, [0, 1, 2, 3], 40, 64, 4)
            b = whole.video_boxes(video_id, [0, 1, 2, 3], 40, 64, 4)
            np.testing.assert_array_equal(a.boxes, b.boxes)
            np.testing.assert_array_equal(a.classes, b.classes)
    twice = tmp_path / "twice.json"
    twice.write_text(json.dumps({rows.video_id.iloc[0]: []}))
    with pytest.raises(ValueError, match=f"twice.json: video '{rows.video_id.iloc[0]}' is also in"):
        shard_box_annotations([*parts, twice], owners, {"validation": 2}, tmp_path / "cut2")
