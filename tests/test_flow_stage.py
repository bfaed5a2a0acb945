"""The flow stage on a tiny index: HDF5 layout, bad input, kill-and-rerun, determinism."""

from __future__ import annotations

import logging
from pathlib import Path

import cv2
import h5py
import numpy as np
import pandas as pd
import pytest

from regiongraph.flow import stage as flow_stage
from regiongraph.flow import triton_tvl1
from regiongraph.flow.opencv_backend import opencv_video_flow
from regiongraph.flow.params import TVL1Params
from regiongraph.flow.quantize import quantize_flow
from regiongraph.flow.stage import compute_flow_shard
from regiongraph.flow.storage import read_flow
from regiongraph.flow.synthetic import translated_pair
from regiongraph.io import open_shard, shard_drops, shard_writer

H, W = 40, 56
# cheap settings: the stage is under test here, not the solver
FAST = {"nscales": 2, "warps": 1, "inner_iterations": 5, "outer_iterations": 2}
BOUND = 20.0


def _write_video(folder: Path, frames: list[np.ndarray]) -> None:
    folder.mkdir(parents=True)
    for i, frame in enumerate(frames):
        colour = cv2.merge([frame, np.clip(frame.astype(int) + 10, 0, 255).astype(np.uint8), frame])
        cv2.imwrite(str(folder / f"{i + 1:05d}.jpg"), colour, [cv2.IMWRITE_JPEG_QUALITY, 95])


@pytest.fixture
def shard_index(tmp_path: Path) -> Path:
    """An index with, in shard 0: two good videos, a one-frame video, a video with a corrupt
    JPEG and one whose third frame is larger; in shard 1: one more good video."""
    rng = np.random.default_rng(0)
    frames_root = tmp_path / "frames" / "validation" / "3"
    videos = {}
    for vid, n in (("101", 4), ("102", 3), ("200", 3)):
        a, b = translated_pair(rng, H, W, 1.5, -0.5)
        videos[vid] = [a, b, a, b][:n]
    videos["103"] = [translated_pair(rng, H, W, 1.0, 0.0)[0]]
    a, b = translated_pair(rng, H, W, 1.0, 0.0)
    videos["104"] = [a, b, a]
    a, b = translated_pair(rng, H, W, 0.5, 0.5)
    videos["105"] = [a, b, cv2.resize(a, (W + 8, H + 4))]
    for vid, frames in videos.items():
        _write_video(frames_root / vid, frames)
    corrupt = frames_root / "104" / "00002.jpg"
    corrupt.write_bytes(corrupt.read_bytes()[:100])  # truncated JPEG
    rows = []
    for vid, frames in videos.items():
        rows.append(
            {
                "video_id": vid, "split": "validation", "label": "Pushing something", "label_index": 3,
                "n_frames": len(frames), "height": H, "width": W, "frame_dir": str(frames_root / vid),
                "shard": 1 if vid == "200" else 0,
            }
        )
    path = tmp_path / "index" / "validation.parquet"
    path.parent.mkdir()
    pd.DataFrame(rows).to_parquet(path, index=False)
    return path


def _run(index: Path, output: Path, **kwargs) -> dict:
    options = {"backend": "opencv", "bound": BOUND, "tvl1": FAST, "workers": 1}
    options.update(kwargs)
    return compute_flow_shard(index, 0, output, **options)


def test_shard_layout_settings_and_reader(shard_index, tmp_path, caplog):
    output = tmp_path / "flow" / "validation" / "shard-000.h5"
    with caplog.at_level(logging.WARNING):
        counts = _run(shard_index, output)
    assert counts == {"videos": 3, "dropped": 2, "pairs": 3 + 2 + 2}
    with open_shard(output, stage="flow", expect={"backend": "opencv", "bound": BOUND, "warps": 1}) as handle:
        assert sorted(handle) == ["101", "102", "105"]  # shard 1's video and the dropped ones absent
        dataset = handle["101/flow"]
        assert dataset.dtype == np.uint8 and dataset.shape == (3, H, W, 2)
        assert dataset.chunks == (1, H, W, 2) and dataset.compression == "gzip"
        settings = json_settings(handle)
        assert settings["tau"] == 0.25 and settings["lambda"] == 0.15 and settings["nscales"] == 2
        assert settings["median_filtering"] == 5 and settings["inner_iterations"] == 5
        assert handle["105/flow"].shape == (2, H, W, 2)  # the larger third frame was resized
    assert any("105" in m and "resized" in m for m in caplog.messages)

    # the reader de-quantises with the shard's bound; frames in any order, with repeats
    frames = np.stack([cv2.imread(str(Path(shard_index.parent.parent, "frames/validation/3/101", f"{i:05d}.jpg")), 0) for i in (1, 2, 3, 4)])
    expected = opencv_video_flow(frames, TVL1Params.from_config(FAST))
    flow, indices = read_flow(output, "101")
    np.testing.assert_array_equal(indices, [0, 1, 2])
    assert flow.dtype == np.float32
    assert np.abs(flow - np.clip(expected, -BOUND, BOUND)).max() <= BOUND / 255 + 1e-4
    # (dx, dy) order: the content moved by (+1.5, -0.5) px (FAST settings underestimate it)
    assert 0.8 < flow[0, 10:-10, 10:-10, 0].mean() < 2.0
    assert -1.0 < flow[0, 10:-10, 10:-10, 1].mean() < -0.1
    some, indices = read_flow(output, "101", frames=[2, 0, 2])
    np.testing.assert_array_equal(indices, [2, 0, 2])
    np.testing.assert_array_equal(some, flow[[2, 0, 2]])
    with pytest.raises(IndexError, match="101.*0..2"):
        read_flow(output, "101", frames=[3])
    with pytest.raises(KeyError, match="104"):
        read_flow(output, "104")


def json_settings(handle: h5py.File) -> dict:
    import json

    return json.loads(handle.attrs["settings"])


def test_bad_videos_are_recorded_in_the_shard(shard_index, tmp_path):
    output = tmp_path / "shard-000.h5"
    _run(shard_index, output)
    dropped = pd.DataFrame(shard_drops(output)).set_index("video_id")
    assert sorted(dropped.index) == ["103", "104"]
    assert (dropped["stage"] == "flow").all() and (dropped["split"] == "validation").all()
    assert "00002.jpg" in dropped.loc["104", "reason"] and "corrupt" in dropped.loc["104", "reason"]
    assert "1 frame" in dropped.loc["103", "reason"]
    # a rerun writes the same record
    _run(shard_index, output)
    assert len(shard_drops(output)) == 2


def _datasets(path: Path) -> dict[str, bytes]:
    with h5py.File(path, "r") as handle:
        return {vid: handle[vid]["flow"][()].tobytes() for vid in handle}


def test_rerun_is_byte_identical_and_independent_of_worker_count(shard_index, tmp_path, caplog):
    first, second = tmp_path / "a" / "shard-000.h5", tmp_path / "b" / "shard-000.h5"
    _run(shard_index, first, workers=1)
    with caplog.at_level(logging.WARNING):
        _run(shard_index, second, workers=2)  # worker processes
    assert _datasets(first) == _datasets(second)
    # warnings logged in worker processes reach the parent's log
    assert any("105" in m and "resized" in m for m in caplog.messages)


def test_torch_backend_writes_the_same_shard_layout(shard_index, tmp_path):
    reference, output = tmp_path / "cv.h5", tmp_path / "torch.h5"
    _run(shard_index, reference)
    # batch of 3 pairs: batches span videos, and the last one is partial
    _run(shard_index, output, backend="torch", device="cpu", batch_size=3)
    with open_shard(output, stage="flow", expect={"backend": "torch", "kernel": "auto"}) as handle:
        assert sorted(handle) == ["101", "102", "105"]
    cv_data, torch_data = _datasets(reference), _datasets(output)
    for vid in cv_data:
        a = np.frombuffer(cv_data[vid], np.uint8).astype(int)
        b = np.frombuffer(torch_data[vid], np.uint8).astype(int)
        assert (np.abs(a - b) <= 1).mean() >= 0.99, vid
    # deterministic: the same again, byte for byte, also with another batch size
    again = tmp_path / "torch-again.h5"
    _run(shard_index, again, backend="torch", device="cpu", batch_size=16)
    assert _datasets(again) == torch_data
    # frames decoded by torchvision on the solver's device (nvJPEG on a GPU; libjpeg here,
    # which decodes as OpenCV does): the same flow, and the same videos dropped
    decoded = tmp_path / "torch-device-jpeg.h5"
    _run(shard_index, decoded, backend="torch", device="cpu", batch_size=3, jpeg_decode="device")
    assert _datasets(decoded) == torch_data
    same = ("video_id", "split", "stage")  # the reason's words may differ: checked before decoding
    assert [[d[k] for k in same] for d in shard_drops(decoded)] == [[d[k] for k in same] for d in shard_drops(output)]


def test_killed_write_leaves_no_shard_and_keeps_the_old_one(shard_index, tmp_path, monkeypatch):
    output = tmp_path / "flow" / "shard-000.h5"
    _run(shard_index, output)
    before = output.read_bytes()
    calls = {"n": 0}
    real_write = flow_stage.write_video_flow

    def dying_write(handle, video_id, quantized, pool=None):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt("killed")  # as a job killed half-way
        return real_write(handle, video_id, quantized, pool)

    monkeypatch.setattr(flow_stage, "write_video_flow", dying_write)
    with pytest.raises(KeyboardInterrupt):
        _run(shard_index, output, tvl1={**FAST, "warps": 2})
    assert output.read_bytes() == before  # the earlier complete shard is untouched
    assert [p.name for p in output.parent.iterdir()] == ["shard-000.h5"]  # no temporary left

    # a shard written without completing (an old writer, a copy cut short) is refused
    fresh = tmp_path / "flow" / "shard-001.h5"
    with pytest.raises(RuntimeError):
        with shard_writer(fresh, "flow", {"bound": BOUND}) as handle:
            handle.create_group("101")
            raise RuntimeError("killed")
    assert not fresh.exists()
    with h5py.File(fresh, "w") as handle:
        handle.attrs["stage"] = "flow"
        handle.attrs["settings"] = '{"bound": 20.0}'
        handle.attrs["complete"] = False
    with pytest.raises(ValueError, match="incomplete"):
        read_flow(fresh, "101")


def test_bad_settings_name_the_key(shard_index, tmp_path):
    with pytest.raises(ValueError, match="flow.backend"):
        _run(shard_index, tmp_path / "x.h5", backend="farneback")
    with pytest.raises(ValueError, match="flow.tvl1"):
        _run(shard_index, tmp_path / "x.h5", tvl1={"tau": 0.25, "wraps": 3})
    with pytest.raises(ValueError, match="flow.bound"):
        _run(shard_index, tmp_path / "x.h5", bound=0)
    with pytest.raises(ValueError, match="flow.kernel"):
        _run(shard_index, tmp_path / "x.h5", backend="torch", kernel="cuda-graphs")
    if triton_tvl1.available() and not triton_tvl1.interpreting():
        with pytest.raises(ValueError, match="flow.kernel 'triton' runs on CUDA, not on cpu"):
            _run(shard_index, tmp_path / "x.h5", backend="torch", device="cpu", kernel="triton")
    assert not (tmp_path / "x.h5").exists()


def test_quantised_output_matches_quantize_flow_of_opencv(shard_index, tmp_path):
    output = tmp_path / "shard-000.h5"
    _run(shard_index, output)
    frames = np.stack([cv2.imread(str(shard_index.parent.parent / "frames/validation/3/102" / f"{i:05d}.jpg"), 0) for i in (1, 2, 3)])
    expected = quantize_flow(opencv_video_flow(frames, TVL1Params.from_config(FAST)), BOUND)
    with open_shard(output) as handle:
        np.testing.assert_array_equal(handle["102/flow"][()], expected)


def test_schema_rejects_bad_flow_config_and_fills_opencv_defaults():
    import copy

    import yaml
    from snakemake.exceptions import WorkflowError
    from snakemake.utils import validate

    repo = Path(__file__).resolve().parents[1]
    schema = str(repo / "config" / "schema.yaml")
    config = yaml.safe_load((repo / "config" / "config.yaml").read_text())
    for section, key, value, message in (
        ("flow", "backend", "farneback", "farneback"),
        ("tvl1", "wraps", 3, "wraps"),
        ("tvl1", "median_filtering", 7, "7 is not one of"),
        ("flow", "kernel", "fused", "fused"),
    ):
        bad = copy.deepcopy(config)
        (bad["flow"] if section == "flow" else bad["flow"]["tvl1"])[key] = value
        with pytest.raises(WorkflowError, match=message):
            validate(bad, schema)
    bare = copy.deepcopy(config)
    del bare["flow"]["tvl1"]
    validate(bare, schema)
    assert TVL1Params.from_config(bare["flow"]["tvl1"]) == TVL1Params()  # OpenCV's defaults
