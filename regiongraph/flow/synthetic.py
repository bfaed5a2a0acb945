"""Natural-looking frame pairs with known motion, for tests and benchmarks.

No photographs can be downloaded here, so scenes are built from what photographs have:
texture at several scales (blurred noise, 1/f-like), hard edges (filled shapes), thin
structures (text), JPEG artefacts. A pair is a scene and its warp by a smooth random field
(a global drift plus smooth local motion) or by an exact translation.
"""

from __future__ import annotations

import cv2
import numpy as np


def textured_scene(
    rng: np.random.Generator, height: int, width: int, shapes: int = 6
) -> np.ndarray:
    """A float32 grayscale scene, grey levels roughly 0..255."""
    image = np.full((height, width), 120.0, np.float32)
    for sigma, amplitude in ((8.0, 60.0), (3.0, 30.0), (1.0, 15.0)):
        noise = rng.normal(0.0, 1.0, (height, width)).astype(np.float32)
        image += cv2.GaussianBlur(noise, (0, 0), sigma) * amplitude * sigma**0.5
    for _ in range(shapes):
        centre = (int(rng.integers(0, width)), int(rng.integers(0, height)))
        grey = float(rng.uniform(0, 255))
        if rng.random() < 0.5:
            radius = int(rng.integers(3, max(4, height // 4)))
            cv2.circle(image, centre, radius, grey, -1, lineType=cv2.LINE_AA)
        else:
            corner = (
                centre[0] + int(rng.integers(4, max(5, width // 3))),
                centre[1] + int(rng.integers(4, max(5, height // 3))),
            )
            cv2.rectangle(image, centre, corner, grey, -1)
    image = np.clip(image, 0, 255).astype(np.uint8)
    origin = (int(rng.integers(0, max(1, width // 2))), int(rng.integers(height // 3, height)))
    cv2.putText(
        image, "SSv1", origin, cv2.FONT_HERSHEY_SIMPLEX, max(0.3, height / 120), 250, 1, cv2.LINE_AA
    )
    return image.astype(np.float32)


def smooth_flow_field(
    rng: np.random.Generator, height: int, width: int, magnitude: float
) -> np.ndarray:
    """A smooth random flow ``(2, H, W)``: drift up to ``magnitude`` plus smooth local motion."""
    sigma = max(height, width) / 12
    field = np.stack(
        [
            cv2.GaussianBlur(rng.normal(0, 1, (height, width)).astype(np.float32), (0, 0), sigma)
            for _ in range(2)
        ]
    )
    field *= magnitude / (np.abs(field).max() + 1e-6)
    field += rng.uniform(-magnitude, magnitude, (2, 1, 1)).astype(np.float32)
    return field


def to_jpeg_gray(image: np.ndarray, quality: int = 90) -> np.ndarray:
    """Round trip through a JPEG as SSv1's frames were: uint8 grayscale."""
    ok, data = cv2.imencode(
        ".jpg", np.clip(image, 0, 255).astype(np.uint8), [cv2.IMWRITE_JPEG_QUALITY, quality]
    )
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    return cv2.imdecode(data, cv2.IMREAD_GRAYSCALE)


def warped_pair(
    rng: np.random.Generator, height: int = 100, width: int = 176, magnitude: float = 3.0
):
    """``(frame0, frame1, field)``: ``frame1(x) = frame0`` sampled at ``x + field``, both JPEG'd.

    ``field`` is the backward map that made ``frame1``; it approximates the negated flow and
    serves to make realistic motion, not as ground truth.
    """
    scene = textured_scene(rng, height, width)
    field = smooth_flow_field(rng, height, width, magnitude)
    gx, gy = np.meshgrid(np.arange(width, dtype=np.float32), np.arange(height, dtype=np.float32))
    moved = cv2.remap(
        scene, gx + field[0], gy + field[1], cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT
    )
    return to_jpeg_gray(scene), to_jpeg_gray(moved), field


def translated_pair(
    rng: np.random.Generator, height: int, width: int, dx: float, dy: float, blur: float = 1.5
):
    """``(frame0, frame1)`` uint8 where the content moves by exactly ``(dx, dy)`` pixels.

    The flow from frame0 to frame1 is ``(dx, dy)`` everywhere the moved content is visible.
    The texture is blurred by ``blur`` so that sub-pixel shifts are well defined.
    """
    margin = int(np.ceil(max(abs(dx), abs(dy)))) + 8
    big = textured_scene(rng, height + 2 * margin, width + 2 * margin)
    big = cv2.GaussianBlur(big, (0, 0), blur)
    shift = np.float32([[1, 0, dx], [0, 1, dy]])  # dst(x) = src(x - d): content moves by +d
    moved = cv2.warpAffine(
        big,
        shift,
        (big.shape[1], big.shape[0]),
        flags=cv2.INTER_CUBIC,
        borderMode=cv2.BORDER_REFLECT,
    )
    crop = (slice(margin, margin + height), slice(margin, margin + width))
    return np.rint(big[crop]).clip(0, 255).astype(np.uint8), np.rint(moved[crop]).clip(
        0, 255
    ).astype(np.uint8)
