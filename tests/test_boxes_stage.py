"""The boxes stage: shard format, sampled frames, dropped videos, missing annotations."""

import json
import logging
from pathlib import Path

import cv2
import h5py
import numpy as np
import pandas as pd
import pytest
import torch

from regiongraph.dataset.sampling import sample_clip_frames
from regiongraph.detect.stage import BoxSettings, extract_boxes_shard
from regiongraph.io import open_shard, shard_drops

NUM_FRAMES, STRIDE = 8, 2  # 4 box frames per clip


def _dataset(tmp_path, videos):
    """Frame folders of tiny JPEGs and an index; ``videos``: (video_id, n_frames, h, w, shard)."""
    rows = []
    for video_id, n_frames, height, width, shard in videos:
        folder = tmp_path / "frames" / video_id
        folder.mkdir(parents=True)
        for i in range(n_frames):
            image = np.full((height, width, 3), (i * 10) % 256, np.uint8)
            cv2.imwrite(str(folder / f"{i + 1:05d}.jpg"), image)
        rows.append(
            dict(
                video_id=video_id,
                split="validation",
                label="x",
                label_index=0,
                n_frames=n_frames,
                height=height,
                width=width,
                frame_dir=str(folder),
                shard=shard,
            )
        )
    index = tmp_path / "index.parquet"
    pd.DataFrame(rows).to_parquet(index)
    return index


def _annotations(tmp_path, video_ids):
    """Object '0000' on every frame of each video at a box that moves 1 pixel per frame."""
    data = {
        vid: [
            {
                "name": f"{vid}/{f + 1:04d}.jpg",
                "labels": [
                    {
                        "box2d": {"x1": f, "y1": 2, "x2": f + 10, "y2": 12},
                        "category": "cup",
                        "standard_category": "0000",
                    }
                ],
            }
            for f in range(40)
        ]
        for vid in video_ids
    }
    path = tmp_path / "se.json"
    path.write_text(json.dumps(data))
    return path


def extract(index, out, settings, num_frames=NUM_FRAMES, stride=STRIDE, **kwargs):
    """The boxes stage on shard 0 of ``index`` (uniform sampling, CPU, downloads beside ``out``)."""
    kwargs.setdefault("device", "cpu")
    kwargs.setdefault("weights_cache", Path(out).parent / "downloads")
    return extract_boxes_shard(index, 0, out, settings, num_frames, stride, "uniform", **kwargs)


def test_annotations_shard_has_the_documented_format(tmp_path):
    index = _dataset(tmp_path, [("11", 30, 24, 40, 0), ("12", 5, 24, 32, 0), ("13", 9, 24, 40, 1)])
    notes = _annotations(tmp_path, ["11", "12", "13"])
    out = tmp_path / "boxes" / "shard-000.h5"
    counts = extract(index, out, BoxSettings(per_frame=3),
        NUM_FRAMES,
        STRIDE,
        box_annotations=notes,
    )
    # both videos are shorter than the 40 annotated frames
    assert counts == {"videos": 2, "dropped": 0, "unannotated": 0, "beyond_length": 2}
    expect = {
        "backend": "annotations",
        "per_frame": 3,
        "num_frames": 8,
        "frame_stride": 2,
        "sampling": "uniform",
        "source": "annotations",
    }
    with open_shard(out, "boxes", expect=expect) as shard:
        assert sorted(shard) == ["11", "12"]  # shard 1's video is not here
        settings = json.loads(shard.attrs["settings"])
        for key in ("weights_checksum", "min_size", "score_threshold", "annotations_checksum"):
            assert key in settings
        assert settings["annotations_checksum"][0].startswith("sha256:")
        assert list(shard.attrs["class_names"]) == ["0000"]
        for vid, n_frames, width in (("11", 30, 40), ("12", 5, 32)):
            group = shard[vid]
            frames = sample_clip_frames(n_frames, NUM_FRAMES, STRIDE).box_frames
            assert group["frame_indices"][:].tolist() == frames.tolist()
            assert group["boxes"].shape == (4, 3, 4) and group["boxes"].dtype == np.float32
            assert group["scores"].dtype == np.float32 and group["classes"].dtype == np.int32
            assert group["mask"].dtype == bool and group["frame_indices"].dtype == np.int64
            assert (group.attrs["height"], group.attrs["width"]) == (24, width)
            mask = group["mask"][:]
            assert mask[:, 0].all() and not mask[:, 1:].any()
            # the box of frame f starts at x = f (clipped to the frame)
            expected_x1 = np.minimum(frames, width).astype(np.float32)
            np.testing.assert_array_equal(group["boxes"][:, 0, 0], expected_x1)
            assert (group["classes"][:, 1:] == -1).all() and (group["boxes"][:, 1:] == 0).all()


def test_corrupt_frame_drops_the_video_and_the_shard_completes(tmp_path):
    index = _dataset(tmp_path, [("21", 20, 24, 40, 0), ("22", 20, 24, 40, 0)])
    box_frame = sample_clip_frames(20, NUM_FRAMES, STRIDE).box_frames[1]
    (tmp_path / "frames" / "22" / f"{box_frame + 1:05d}.jpg").write_bytes(b"\x00garbage")
    out = tmp_path / "shard-000.h5"
    counts = extract(index, out, BoxSettings(),
        NUM_FRAMES,
        STRIDE,
        box_annotations=_annotations(tmp_path, ["21", "22"]),
    )
    assert counts["dropped"] == 1 and counts["videos"] == 1
    with open_shard(out, "boxes") as shard:
        assert list(shard) == ["21"]
    rows = pd.DataFrame(shard_drops(out))
    assert rows[["video_id", "split", "stage"]].values.tolist() == [["22", "validation", "boxes"]]
    assert f"{box_frame + 1:05d}.jpg" in rows["reason"][0]


def test_video_missing_from_annotations_warns_and_has_no_valid_boxes(tmp_path, caplog):
    index = _dataset(tmp_path, [("31", 20, 24, 40, 0), ("32", 20, 24, 40, 0)])
    out = tmp_path / "shard-000.h5"
    with caplog.at_level(logging.WARNING):
        counts = extract(index, out, BoxSettings(),
            NUM_FRAMES,
            STRIDE,
            box_annotations=_annotations(tmp_path, ["31"]),
        )
    assert counts["unannotated"] == 1
    assert any(
        "32" in r.getMessage() and "not in the box annotations" in r.getMessage()
        for r in caplog.records
    )
    with h5py.File(out) as shard:
        assert shard["31"]["mask"][:].any()
        assert not shard["32"]["mask"][:].any()
        assert (shard["32"]["classes"][:] == -1).all()


def test_annotations_backend_needs_a_file(tmp_path):
    index = _dataset(tmp_path, [("41", 20, 24, 40, 0)])
    with pytest.raises(ValueError, match="dataset.box_annotations"):
        extract(index, tmp_path / "o.h5", BoxSettings(),
            NUM_FRAMES,
            STRIDE,
            box_annotations=None,
        )
    assert not (tmp_path / "o.h5").exists()


def test_bad_settings_name_the_key():
    with pytest.raises(ValueError, match="boxes.backend"):
        BoxSettings(backend="yolo")
    with pytest.raises(ValueError, match="boxes.source: proposals needs"):
        BoxSettings(backend="torchvision", source="proposals")
    with pytest.raises(ValueError, match="boxes.batch_size"):
        BoxSettings(batch_size=0)


def test_torchvision_stage_batches_across_videos(tmp_path):
    from regiongraph.detect.torchvision_backend import build_model

    torch.manual_seed(0)
    weights = tmp_path / "random.pth"
    torch.save(build_model("fasterrcnn_resnet50_fpn").state_dict(), weights)
    index = _dataset(tmp_path, [("51", 12, 32, 48, 0), ("52", 9, 32, 40, 0), ("53", 3, 32, 48, 0)])
    (tmp_path / "frames" / "53" / "00001.jpg").write_bytes(b"")  # zero-byte frame: dropped
    settings = BoxSettings(
        backend="torchvision",
        weights=str(weights),
        per_frame=2,
        min_size=48,
        score_threshold=0.05,
        batch_size=3,
        rpn_top_n=50,
    )
    out = tmp_path / "shard-000.h5"
    counts = extract(index, out, settings, NUM_FRAMES, STRIDE, device="cpu"
    )
    assert counts == {"videos": 2, "dropped": 1, "unannotated": 0, "beyond_length": 0}
    with open_shard(out, "boxes", expect={"backend": "torchvision", "min_size": 48}) as shard:
        settings_recorded = json.loads(shard.attrs["settings"])
        assert settings_recorded["weights_checksum"].startswith("sha256:")
        assert settings_recorded["fp16"] is False  # no autocast on the CPU
        assert len(shard.attrs["class_names"]) == 91
        for vid, width in (("51", 48), ("52", 40)):
            group = shard[vid]
            boxes, mask = group["boxes"][:], group["mask"][:]
            # one row per box frame (4 of the 8 uniformly sampled frames), each once
            assert boxes.shape == (4, 2, 4) and mask.any()
            assert group["frame_indices"][:].tolist() == sorted(set(group["frame_indices"][:]))
            valid = boxes[mask]  # a random detector may find nothing on a flat grey frame
            assert (valid[:, 2] <= width).all() and (valid[:, 3] <= 32).all()
            assert (valid[:, 2] > valid[:, 0]).all()
            assert (np.diff(group["scores"][:], axis=1) <= 0).all()
    assert [row["video_id"] for row in shard_drops(out)] == ["53"]


def test_torchvision_missing_weights_name_the_key(tmp_path):
    index = _dataset(tmp_path, [("61", 20, 24, 40, 0)])
    settings = BoxSettings(backend="torchvision", weights=str(tmp_path / "none.pth"))
    with pytest.raises(FileNotFoundError, match="boxes.weights") as error:
        extract(index, tmp_path / "o.h5", settings, 8, 2)
    assert "fasterrcnn_resnet50_fpn_coco-258fb6c6.pth" in str(error.value)
    with pytest.raises(ValueError, match="boxes.weights is not set"):
        extract(index, tmp_path / "o.h5", BoxSettings(backend="torchvision"),
            8,
            2,
            device="cpu",
        )
