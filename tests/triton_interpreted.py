"""Runs the fused Triton TV-L1 kernel in Triton's CPU interpreter; used by test_flow_triton.py.

``TRITON_INTERPRET=1`` must be set before Triton is imported, so the tests start this file in
a child process: ``python tests/triton_interpreted.py OUT.npz``. It writes the inputs, the
kernel's flow, the eager port's flow and the kernel's iteration counts for the cases below;
the test process compares them (with OpenCV too) and asserts.
"""

from __future__ import annotations

import os
import sys

import numpy as np
import torch

from regiongraph.flow.params import TVL1Params
from regiongraph.flow.synthetic import textured_scene, translated_pair, warped_pair
from regiongraph.flow.torch_tvl1 import tvl1_flow

SHIFTS = [(0.3, -0.2), (3.0, -2.0)]
# a small batch: two moving pairs with a still one between them, odd sizes, 3 levels
SMALL = {"nscales": 3, "warps": 2, "inner_iterations": 10, "outer_iterations": 3}


def cases() -> dict[str, tuple[np.ndarray, np.ndarray, dict]]:
    rng = np.random.default_rng(21)
    a0, b0, _ = warped_pair(rng, 37, 53, magnitude=2.0)
    a1, b1, _ = warped_pair(rng, 37, 53, magnitude=4.0)
    still = textured_scene(rng, 37, 53).astype(np.uint8)
    batch = (np.stack([a0, still, a1]), np.stack([b0, still, b1]))
    rng = np.random.default_rng(0)
    shifted = [translated_pair(rng, 48, 64, dx, dy) for dx, dy in SHIFTS]
    translations = (np.stack([a for a, _ in shifted]), np.stack([b for _, b in shifted]))
    return {
        "median5": (*batch, SMALL),
        "median3_early_stop": (*batch, {**SMALL, "median_filtering": 3, "epsilon": 0.05}),
        "no_median": (*batch, {**SMALL, "median_filtering": 1}),
        "translations_opencv_defaults": (*translations, {}),
    }


def main(out: str) -> None:
    if os.environ.get("TRITON_INTERPRET") != "1":
        sys.exit("run with TRITON_INTERPRET=1")
    torch.set_num_threads(1)
    arrays = {}
    for name, (first, second, overrides) in cases().items():
        params = TVL1Params(**overrides)
        i0, i1 = torch.from_numpy(first), torch.from_numpy(second)
        iterations = torch.zeros(len(first), dtype=torch.int32)
        fused = tvl1_flow(i0, i1, params, kernel="triton", iterations=iterations)
        eager = tvl1_flow(i0, i1, params, kernel="eager")
        arrays[f"{name}/first"] = first
        arrays[f"{name}/second"] = second
        arrays[f"{name}/triton"] = fused.permute(0, 2, 3, 1).numpy()
        arrays[f"{name}/eager"] = eager.permute(0, 2, 3, 1).numpy()
        arrays[f"{name}/iterations"] = iterations.numpy()
        if name == "median5":  # the first pair alone: the batch must not change it
            alone = tvl1_flow(i0[:1], i1[:1], params, kernel="triton")
            arrays[f"{name}/alone"] = alone.permute(0, 2, 3, 1).numpy()
    np.savez(out, **arrays)


if __name__ == "__main__":
    main(sys.argv[1])
