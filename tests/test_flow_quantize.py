"""Flow quantisation (clip, map to 0..255, round) and the TV-L1 parameter checks."""

from __future__ import annotations

import numpy as np
import pytest

from regiongraph.flow.params import TVL1Params
from regiongraph.flow.quantize import dequantize_flow, quantize_flow


def test_quantize_round_trip_within_half_a_level():
    bound = 20.0
    rng = np.random.default_rng(0)
    flow = rng.uniform(-bound, bound, (3, 7, 5, 2)).astype(np.float32)
    q = quantize_flow(flow, bound)
    assert q.dtype == np.uint8 and q.shape == flow.shape
    back = dequantize_flow(q, bound)
    assert back.dtype == np.float32
    step = 2 * bound / 255
    assert np.abs(back - flow).max() <= step / 2 + 1e-5
    # quantising the de-quantised values gives the same levels back
    np.testing.assert_array_equal(quantize_flow(back, bound), q)


def test_quantize_clips_at_the_bound_and_maps_the_ends():
    bound = 5.0
    flow = np.array([-100.0, -5.0, 0.0, 5.0, 100.0], np.float32)
    q = quantize_flow(flow, bound)
    np.testing.assert_array_equal(q, [0, 0, 128, 255, 255])  # 127.5 rounds half to even: 128
    np.testing.assert_allclose(dequantize_flow(np.array([0, 255], np.uint8), bound), [-5.0, 5.0], atol=1e-6)
    # the formula of docs/formats.md: v = q / 255 * 2 * bound - bound
    levels = np.arange(256, dtype=np.uint8)
    np.testing.assert_allclose(dequantize_flow(levels, bound), levels / 255 * 2 * bound - bound, atol=1e-5)


def test_quantize_rejects_bad_inputs():
    with pytest.raises(ValueError, match="bound"):
        quantize_flow(np.zeros(3), 0)
    with pytest.raises(ValueError, match="uint8"):
        dequantize_flow(np.zeros(3, np.float32), 20)


def test_tvl1_params_defaults_are_opencvs():
    import cv2

    solver = cv2.optflow.DualTVL1OpticalFlow_create()
    p = TVL1Params()
    assert (p.tau, p.lambda_, p.theta, p.nscales, p.warps, p.epsilon) == (
        solver.getTau(), solver.getLambda(), solver.getTheta(), solver.getScalesNumber(),
        solver.getWarpingsNumber(), solver.getEpsilon(),
    )
    assert (p.inner_iterations, p.outer_iterations, p.scale_step, p.gamma, p.median_filtering) == (
        solver.getInnerIterations(), solver.getOuterIterations(), solver.getScaleStep(),
        solver.getGamma(), solver.getMedianFiltering(),
    )


def test_tvl1_params_from_config_names_bad_keys():
    p = TVL1Params.from_config({"lambda": 0.2, "warps": 2})
    assert p.lambda_ == 0.2 and p.warps == 2 and p.to_config()["lambda"] == 0.2
    with pytest.raises(ValueError, match="innner"):
        TVL1Params.from_config({"innner_iterations": 3})
    with pytest.raises(ValueError, match="median_filtering"):
        TVL1Params.from_config({"median_filtering": 7})
    with pytest.raises(ValueError, match="scale_step"):
        TVL1Params.from_config({"scale_step": 1.0})
    with pytest.raises(ValueError, match="nscales"):
        TVL1Params.from_config({"nscales": 0})


def test_quantising_on_the_device_is_bit_identical():
    """The torch backend quantises on its device; the bytes must be quantize_flow's."""
    import torch

    from regiongraph.flow.torch_tvl1 import quantize_tensor

    rng = np.random.default_rng(7)
    for bound in (20.0, 7.5, 1.0, 0.1, 13.3):  # the last two are not float32 numbers
        step = np.float32(255.0 / (2.0 * bound))
        # values that land exactly on a half level (round half to even decides), the bounds,
        # far outside, and a spread of ordinary values
        halves = (np.arange(255, dtype=np.float32) + np.float32(0.5)) / step - np.float32(bound)
        flow = np.concatenate(
            [rng.normal(0, bound, 50_000), halves, [-1e9, 1e9, -bound, bound, 0.0]]
        ).astype(np.float32)
        expected = quantize_flow(flow, bound)
        got = quantize_tensor(torch.from_numpy(flow), bound).numpy()
        assert got.dtype == np.uint8
        np.testing.assert_array_equal(got, expected)


def test_chunks_deflated_in_threads_read_back_through_hdf5(tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    import h5py

    from regiongraph.flow.storage import deflate_frames, write_video_flow

    rng = np.random.default_rng(8)
    smooth = np.repeat(rng.integers(0, 256, (20, 1, 1, 2), dtype=np.uint8), 30, axis=1)
    videos = {"a": np.repeat(smooth, 40, axis=2), "b": rng.integers(0, 256, (3, 30, 40, 2), dtype=np.uint8)}
    with ThreadPoolExecutor(2) as pool:
        assert deflate_frames(videos["a"], pool) == deflate_frames(videos["a"])  # threads change nothing
        with h5py.File(tmp_path / "f.h5", "w") as handle:
            for vid, flow in videos.items():
                write_video_flow(handle, vid, flow, pool)
    with h5py.File(tmp_path / "f.h5", "r") as handle:
        for vid, flow in videos.items():
            dataset = handle[vid]["flow"]
            assert dataset.compression == "gzip" and dataset.chunks == (1, 30, 40, 2)
            np.testing.assert_array_equal(dataset[()], flow)
            np.testing.assert_array_equal(dataset[2], flow[2])  # one chunk alone
        assert handle["a"]["flow"].id.get_storage_size() < videos["a"].nbytes / 10  # compressed
