"""TV-L1 with OpenCV: ``cv2.optflow.DualTVL1OpticalFlow_create`` on grayscale frames.

OpenCV's own threads do not speed TV-L1 up (its loops are short and memory-bound), so the
stage runs one single-threaded OpenCV per process, one process per core
(:func:`init_worker` sets ``cv2.setNumThreads(1)``).
"""

from __future__ import annotations

import cv2
import numpy as np

from regiongraph.flow.params import TVL1Params


def init_worker() -> None:
    """Process-pool initialiser: one OpenCV thread per worker process."""
    cv2.setNumThreads(1)


def create_tvl1(params: TVL1Params) -> cv2.optflow.DualTVL1OpticalFlow:
    """An OpenCV dual TV-L1 solver with every parameter set from ``params``."""
    # positional: the binding's keyword for the inner iterations is misspelt
    # ("innnerIterations") in OpenCV's Python signature
    return cv2.optflow.DualTVL1OpticalFlow_create(
        params.tau,
        params.lambda_,
        params.theta,
        params.nscales,
        params.warps,
        params.epsilon,
        params.inner_iterations,
        params.outer_iterations,
        params.scale_step,
        params.gamma,
        params.median_filtering,
        False,  # useInitialFlow
    )


def opencv_pair_flow(solver, frame0: np.ndarray, frame1: np.ndarray) -> np.ndarray:
    """Flow from grayscale uint8 ``frame0`` to ``frame1``: float32 ``(H, W, 2)``, (dx, dy)."""
    return solver.calc(frame0, frame1, None)


def opencv_video_flow(frames: np.ndarray, params: TVL1Params) -> np.ndarray:
    """Flow between consecutive grayscale frames ``(T, H, W)`` uint8: ``(T - 1, H, W, 2)``."""
    frames = np.asarray(frames)
    if frames.ndim != 3 or frames.dtype != np.uint8:
        raise ValueError(
            f"expected grayscale uint8 frames (T, H, W), got {frames.dtype} {frames.shape}"
        )
    solver = create_tvl1(params)
    out = np.empty((frames.shape[0] - 1, *frames.shape[1:], 2), dtype=np.float32)
    for i in range(frames.shape[0] - 1):
        out[i] = opencv_pair_flow(solver, frames[i], frames[i + 1])
    return out
