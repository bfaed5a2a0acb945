"""The fused Triton TV-L1 kernel: the eager port's function, OpenCV's parity, per-pair stopping.

The kernel runs here in Triton's CPU interpreter (a child process with TRITON_INTERPRET=1:
slow, small frames); on a GPU bench/flow.py measures it (docs/flow_h100.md).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from regiongraph.flow import triton_tvl1
from regiongraph.flow.median_network import median_network_source
from regiongraph.flow.opencv_backend import create_tvl1
from regiongraph.flow.params import TVL1Params
from regiongraph.flow.quantize import quantize_flow
from regiongraph.flow.torch_tvl1 import resolve_kernel

REPO = Path(__file__).resolve().parents[1]
needs_triton = pytest.mark.skipif(not triton_tvl1.available(), reason="triton is not installed")
sys.path.insert(0, str(Path(__file__).parent))
from triton_interpreted import SHIFTS, SMALL  # noqa: E402


def test_generated_median_networks_are_current():
    source = Path(triton_tvl1.__file__).read_text()
    begin = source.index("do not edit by hand")
    begin = source.index("\n", begin) + 1
    end = source.index("\n\n\n_window_median3 = _jit(")
    assert source[begin:end] + "\n" == median_network_source()


def test_kernel_choice():
    cpu = torch.device("cpu")
    assert resolve_kernel("auto", cpu, TVL1Params()) == "eager"
    assert resolve_kernel("eager", torch.device("cuda"), TVL1Params(gamma=0.2)) == "eager"
    with pytest.raises(ValueError, match="flow.kernel must be one of"):
        resolve_kernel("fused", cpu, TVL1Params())
    if triton_tvl1.available():
        assert resolve_kernel("auto", torch.device("cuda"), TVL1Params()) == "triton"
        # the illumination term needs the third channel: auto falls back, triton refuses
        assert resolve_kernel("auto", torch.device("cuda"), TVL1Params(gamma=0.1)) == "eager"
        with pytest.raises(ValueError, match="gamma == 0 only"):
            resolve_kernel("triton", cpu, TVL1Params(gamma=0.1))


@needs_triton
@pytest.mark.skipif(triton_tvl1.interpreting(), reason="this process runs Triton's interpreter")
def test_kernel_on_the_cpu_asks_for_the_interpreter():
    from regiongraph.flow.torch_tvl1 import tvl1_flow

    with pytest.raises(ValueError, match="TRITON_INTERPRET=1"):
        tvl1_flow(torch.zeros(1, 20, 20), torch.zeros(1, 20, 20), TVL1Params(), kernel="triton")


@pytest.fixture(scope="module")
def interpreted(tmp_path_factory) -> dict[str, np.ndarray]:
    if not triton_tvl1.available():
        pytest.skip("triton is not installed")
    out = tmp_path_factory.mktemp("triton") / "results.npz"
    env = {**os.environ, "TRITON_INTERPRET": "1", "PYTHONPATH": str(REPO)}
    subprocess.run(
        [sys.executable, str(Path(__file__).parent / "triton_interpreted.py"), str(out)],
        check=True,
        env=env,
        timeout=900,
    )
    with np.load(out) as data:
        return dict(data)


@pytest.mark.slow  # Triton's CPU interpreter: about a minute for the whole module
@pytest.mark.parametrize("case", ["median5", "median3_early_stop", "no_median"])
def test_kernel_computes_the_eager_ports_function(interpreted, case):
    fused, eager = interpreted[f"{case}/triton"], interpreted[f"{case}/eager"]
    assert fused.shape == (3, 37, 53, 2)
    assert np.linalg.norm(eager, axis=-1).mean() > 0.5  # the pairs move
    epe = np.linalg.norm(fused - eager, axis=-1)
    assert epe.mean() < 1e-3, epe.mean()
    assert np.percentile(epe, 99) < 1e-2


@pytest.mark.slow  # Triton's CPU interpreter: about a minute for the whole module
@pytest.mark.parametrize("case", ["median5", "median3_early_stop"])
def test_kernel_matches_opencv(interpreted, case):
    overrides = dict(SMALL)
    if case == "median3_early_stop":
        overrides.update(median_filtering=3, epsilon=0.05)
    solver = create_tvl1(TVL1Params(**overrides))
    first, second = interpreted[f"{case}/first"], interpreted[f"{case}/second"]
    reference = np.stack([solver.calc(a, b, None) for a, b in zip(first, second, strict=True)])
    fused = interpreted[f"{case}/triton"]
    assert np.linalg.norm(fused - reference, axis=-1).mean() <= 0.15
    levels = np.abs(quantize_flow(fused, 20).astype(int) - quantize_flow(reference, 20).astype(int))
    assert (levels <= 1).mean() >= 0.99


@pytest.mark.slow  # Triton's CPU interpreter: about a minute for the whole module
def test_pairs_stop_separately_inside_the_kernel(interpreted):
    iterations = interpreted["median5/iterations"]
    levels_times_warps = SMALL["nscales"] * SMALL["warps"]
    # identical frames: the first iteration of every warp moves nothing and meets the rule
    assert iterations[1] == levels_times_warps
    np.testing.assert_array_equal(interpreted["median5/triton"][1], 0)
    assert iterations[0] > levels_times_warps and iterations[2] > levels_times_warps
    maximum = levels_times_warps * SMALL["inner_iterations"] * SMALL["outer_iterations"]
    assert iterations.max() <= maximum
    # the larger epsilon stops the moving pairs sooner
    assert (interpreted["median3_early_stop/iterations"] <= iterations).all()
    assert interpreted["median3_early_stop/iterations"].sum() < iterations.sum()
    # a pair's flow does not depend on what else is in the batch
    np.testing.assert_array_equal(interpreted["median5/alone"][0], interpreted["median5/triton"][0])


@pytest.mark.slow  # Triton's CPU interpreter: about a minute for the whole module
def test_kernel_recovers_translations_with_opencv_defaults(interpreted):
    fused = interpreted["translations_opencv_defaults/triton"]
    for flow, (dx, dy) in zip(fused, SHIFTS, strict=True):
        inner = flow[8:-8, 8:-8]
        assert np.hypot(inner[..., 0] - dx, inner[..., 1] - dy).mean() < 0.1, (dx, dy)
