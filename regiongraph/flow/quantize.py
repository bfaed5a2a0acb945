"""Flow quantisation as the field stores it (TSN, mmaction, denseflow): 8 bits per component.

``q = round((clip(v, -bound, bound) + bound) * 255 / (2 * bound))`` and back
``v = q / 255 * 2 * bound - bound`` (docs/formats.md); the round trip is exact to within
half a level, ``bound / 255`` pixels, for flow inside ``[-bound, bound]``.
"""

from __future__ import annotations

import numpy as np


def check_bound(bound: float) -> float:
    bound = float(bound)
    if not bound > 0:
        raise ValueError(f"flow.bound must be > 0, got {bound!r}")
    return bound


def quantize_flow(flow: np.ndarray, bound: float) -> np.ndarray:
    """Float flow (any shape) to uint8: clip to ``±bound``, map linearly to 0..255, round."""
    bound = check_bound(bound)
    flow = np.asarray(flow, dtype=np.float32)
    scaled = (np.clip(flow, -bound, bound) + np.float32(bound)) * np.float32(255.0 / (2.0 * bound))
    return np.rint(scaled).astype(np.uint8)


def dequantize_flow(quantized: np.ndarray, bound: float) -> np.ndarray:
    """uint8 flow back to float32 pixels: ``q / 255 * 2 * bound - bound``."""
    bound = check_bound(bound)
    quantized = np.asarray(quantized)
    if quantized.dtype != np.uint8:
        raise ValueError(f"quantised flow must be uint8, got {quantized.dtype}")
    return quantized.astype(np.float32) * np.float32(2.0 * bound / 255.0) - np.float32(bound)
