"""The two TV-L1 backends: OpenCV, and the batched PyTorch port that computes the same function.

Frames are small (64x48 to 96x64) natural-looking scenes (texture at several scales, edges,
text, JPEG) moved by exact translations or warped by smooth random fields.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from regiongraph.flow.opencv_backend import create_tvl1, opencv_video_flow
from regiongraph.flow.params import TVL1Params
from regiongraph.flow.quantize import quantize_flow
from regiongraph.flow.synthetic import textured_scene, translated_pair, warped_pair
from regiongraph.flow.torch_tvl1 import (
    centred_gradient,
    median_blur,
    pyramid_down,
    remap_cubic,
    resize_to,
    torch_pairs_flow,
    torch_video_flow,
)

torch.set_num_threads(1)
MARGIN = 8  # interior: away from the border where the moved content is not visible
SHIFTS = [(0.3, -0.2), (0.7, 0.45), (3.0, -2.0), (-4.5, 1.25)]


def _as_tensor(image: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))[None, None]


@pytest.fixture(scope="module")
def scene() -> np.ndarray:
    return textured_scene(np.random.default_rng(5), 48, 64)


def test_pyramid_resize_matches_cv_resize(scene):
    down = cv2.resize(scene, None, fx=0.8, fy=0.8, interpolation=cv2.INTER_LINEAR)
    got = pyramid_down(_as_tensor(scene), 0.8)[0, 0].numpy()
    assert got.shape == down.shape == (38, 51)  # sizes rounded as OpenCV rounds them
    np.testing.assert_allclose(got, down, atol=1e-3)
    up = cv2.resize(down, (64, 48), interpolation=cv2.INTER_LINEAR)
    np.testing.assert_allclose(resize_to(_as_tensor(down), 48, 64)[0, 0].numpy(), up, atol=1e-3)


def test_remap_cubic_matches_cv_remap_with_zero_border(scene):
    rng = np.random.default_rng(1)
    flow = np.stack([cv2.GaussianBlur(rng.normal(0, 1, scene.shape).astype(np.float32), (0, 0), 6) for _ in range(2)])
    flow *= 4 / np.abs(flow).max()  # up to 4 px: some samples fall outside the image
    gx, gy = np.meshgrid(np.arange(64, dtype=np.float32), np.arange(48, dtype=np.float32))
    expected = cv2.remap(scene, gx + flow[0], gy + flow[1], cv2.INTER_CUBIC)
    got = remap_cubic(_as_tensor(scene), torch.from_numpy(flow)[None])[0, 0].numpy()
    np.testing.assert_allclose(got, expected, atol=2e-3)


def test_median_and_centred_gradient_match_opencv(scene):
    for ksize in (3, 5):
        np.testing.assert_array_equal(
            median_blur(_as_tensor(scene), ksize)[0, 0].numpy(), cv2.medianBlur(scene, ksize)
        )
    dx, dy = centred_gradient(_as_tensor(scene))
    # tvl1flow.cpp centeredGradient: half central differences, one-sided halves at the borders
    ex = np.empty_like(scene)
    ex[:, 1:-1] = 0.5 * (scene[:, 2:] - scene[:, :-2])
    ex[:, 0] = 0.5 * (scene[:, 1] - scene[:, 0])
    ex[:, -1] = 0.5 * (scene[:, -1] - scene[:, -2])
    ey = np.empty_like(scene)
    ey[1:-1] = 0.5 * (scene[2:] - scene[:-2])
    ey[0] = 0.5 * (scene[1] - scene[0])
    ey[-1] = 0.5 * (scene[-1] - scene[-2])
    np.testing.assert_allclose(dx[0, 0].numpy(), ex, atol=1e-4)
    np.testing.assert_allclose(dy[0, 0].numpy(), ey, atol=1e-4)


@pytest.fixture(scope="module")
def translations():
    rng = np.random.default_rng(0)
    pairs = [translated_pair(rng, 48, 64, dx, dy) for dx, dy in SHIFTS]
    return np.stack([a for a, _ in pairs]), np.stack([b for _, b in pairs])


def _interior_epe(flow: np.ndarray, dx: float, dy: float) -> float:
    inner = flow[MARGIN:-MARGIN, MARGIN:-MARGIN]
    return float(np.hypot(inner[..., 0] - dx, inner[..., 1] - dy).mean())


@pytest.mark.parametrize("backend", ["opencv", "torch"])
def test_translations_recovered_within_a_tenth_of_a_pixel(translations, backend):
    first, second = translations
    params = TVL1Params()  # OpenCV's defaults
    if backend == "opencv":
        solver = create_tvl1(params)
        flows = [solver.calc(a, b, None) for a, b in zip(first, second, strict=True)]
    else:
        flows = torch_pairs_flow(first, second, params, "cpu")
    for flow, (dx, dy) in zip(flows, SHIFTS, strict=True):
        assert flow.shape == (48, 64, 2)
        assert _interior_epe(flow, dx, dy) < 0.1, (backend, dx, dy)


@pytest.fixture(scope="module")
def realistic_pairs():
    rng = np.random.default_rng(11)
    pairs = [warped_pair(rng, 64, 96, magnitude=m) for m in (1.0, 2.5, 4.0)]
    return np.stack([a for a, _, _ in pairs]), np.stack([b for _, b, _ in pairs])


@pytest.mark.parametrize(
    "overrides",
    [{}, {"gamma": 0.1, "median_filtering": 3, "epsilon": 0.05}],
    ids=["opencv-defaults", "illumination-term"],
)
def test_torch_matches_opencv_on_realistic_pairs(realistic_pairs, overrides):
    first, second = realistic_pairs
    params = TVL1Params(**overrides)
    solver = create_tvl1(params)
    reference = np.stack([solver.calc(a, b, None) for a, b in zip(first, second, strict=True)])
    assert np.linalg.norm(reference, axis=-1).mean() > 0.5  # real motion, not a trivial field
    got = torch_pairs_flow(first, second, params, "cpu")
    epe = np.linalg.norm(got - reference, axis=-1)
    assert epe.mean() <= 0.15, epe.mean()
    levels = np.abs(quantize_flow(got, 20).astype(int) - quantize_flow(reference, 20).astype(int))
    assert (levels <= 1).mean() >= 0.99


def test_pairs_in_a_batch_stop_separately():
    """A pair that meets the epsilon rule at once (identical frames) must not change, nor
    change, the flow of a pair that keeps iterating: batched == one at a time."""
    rng = np.random.default_rng(3)
    a, b, _ = warped_pair(rng, 48, 64, magnitude=2.0)
    still = textured_scene(rng, 48, 64).astype(np.uint8)
    params = TVL1Params(nscales=3, warps=2, epsilon=0.05)
    first = np.stack([still, a, still])
    second = np.stack([still, b, still])
    batched = torch_pairs_flow(first, second, params, "cpu")
    alone = torch_pairs_flow(a[None], b[None], params, "cpu")[0]
    np.testing.assert_allclose(batched[1], alone, atol=1e-5)
    assert np.abs(batched[0]).max() == 0 and np.abs(batched[2]).max() == 0
    # checking for stopped pairs less often changes the work done, not the result
    from regiongraph.flow.torch_tvl1 import tvl1_flow

    sparse = tvl1_flow(torch.from_numpy(first), torch.from_numpy(second), params, check_every=7)
    np.testing.assert_allclose(sparse.permute(0, 2, 3, 1).numpy(), batched, atol=1e-5)


def test_video_helpers_agree_and_give_t_minus_one_fields():
    rng = np.random.default_rng(4)
    a, b = translated_pair(rng, 32, 40, 1.0, 0.5)
    frames = np.stack([a, b, a])
    params = TVL1Params(nscales=2, warps=2, inner_iterations=10, outer_iterations=2)
    cv_flow = opencv_video_flow(frames, params)
    torch_flow = torch_video_flow(frames, params, "cpu", batch_size=1)
    assert cv_flow.shape == torch_flow.shape == (2, 32, 40, 2)
    assert np.linalg.norm(cv_flow - torch_flow, axis=-1).mean() < 0.05
    # frame 1 -> 2 undoes frame 0 -> 1
    assert cv_flow[0, 10:-10, 10:-10, 0].mean() == pytest.approx(1.0, abs=0.15)
    assert cv_flow[1, 10:-10, 10:-10, 0].mean() == pytest.approx(-1.0, abs=0.15)


def test_torch_rejects_mismatched_or_tiny_frames():
    from regiongraph.flow.torch_tvl1 import tvl1_flow

    with pytest.raises(ValueError, match="one shape"):
        tvl1_flow(torch.zeros(1, 8, 8), torch.zeros(1, 8, 9), TVL1Params())
    with pytest.raises(ValueError, match="too small"):
        tvl1_flow(torch.zeros(1, 2, 8), torch.zeros(1, 2, 8), TVL1Params())
