"""GPU checks of the torch TV-L1 backend's Triton path, for a GPU machine without Snakemake.

    PYTHONPATH=. python bench/flow_gpu_check.py [build/flow_reference.npz]

The reference file comes from ``bench/flow.py --save-reference`` on a machine with OpenCV's
contrib module. Prints one line per check: the kernel ``auto`` picks on CUDA; a rerun is
byte-identical and a pair's flow does not depend on its batch; the Triton kernel against the
eager port on the GPU and against OpenCV's flow; odd frame sizes (one to five pyramid levels)
with a still pair in the batch and a known shift (2, 1) px. Results: docs/flow_h100.md.
"""

from __future__ import annotations

import sys

import cv2
import numpy as np
import torch

from regiongraph.flow.params import TVL1Params
from regiongraph.flow.quantize import quantize_flow
from regiongraph.flow.torch_tvl1 import resolve_kernel, torch_pairs_flow


def epe(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b, axis=-1).mean())


def main(reference: str) -> None:
    ref = np.load(reference)
    params = TVL1Params()
    cuda = torch.device("cuda")
    print("kernel auto on CUDA:", resolve_kernel("auto", cuda, params), "| with gamma 0.1:", resolve_kernel("auto", cuda, TVL1Params(gamma=0.1)))
    for key in ("176x100", "320x240"):
        a, b = ref[f"{key}_first"], ref[f"{key}_second"]
        index = np.arange(256) % len(a)
        first = torch_pairs_flow(a[index], b[index], params, cuda, "auto")
        again = torch_pairs_flow(a[index], b[index], params, cuda, "auto")
        alone = torch_pairs_flow(a[:3], b[:3], params, cuda, "auto")
        print(
            f"{key}: rerun byte-identical {np.array_equal(first, again)}, quantised "
            f"{np.array_equal(quantize_flow(first, 20), quantize_flow(again, 20))}; "
            f"batch-independent {np.array_equal(alone, first[:3])}"
        )
        eager = torch_pairs_flow(a, b, params, cuda, "eager")
        fused = first[: len(a)]
        print(f"{key}: EPE triton vs eager (GPU) {epe(fused, eager):.6f} px, vs OpenCV {epe(fused, ref[f'{key}_flow']):.6f} px")
    rng = np.random.default_rng(0)
    for h, w in ((37, 53), (101, 177), (17, 300), (240, 427)):
        a = rng.integers(0, 255, (4, h, w), dtype=np.uint8)
        a = np.stack([cv2.GaussianBlur(x, (0, 0), 2) for x in a])
        b = np.roll(a, (1, 2), axis=(1, 2))  # content moves by (dx, dy) = (2, 1)
        b[1] = a[1]  # a still pair
        fused = torch_pairs_flow(a, b, params, cuda, "triton")
        eager = torch_pairs_flow(a, b, params, cuda, "eager")
        shift = fused[0, 8:-8, 8:-8].reshape(-1, 2).mean(0)
        print(
            f"{w}x{h}: EPE triton vs eager {epe(fused, eager):.2e} px; still pair max |flow| "
            f"{np.abs(fused[1]).max():.3g}; interior mean flow ({shift[0]:.3f}, {shift[1]:.3f})"
        )


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "build/flow_reference.npz")
