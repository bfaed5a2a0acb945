"""Spatial transforms of clips, flow and boxes: pure functions on numpy arrays.

Coordinates are continuous pixel coordinates (pixel ``i`` covers ``[i, i + 1)``), the
convention of detector boxes and of RoIAlign with ``aligned=True``. OpenCV's bilinear resize
maps pixel centres as ``x' + 0.5 = (x + 0.5) * s``, so a continuous coordinate scales exactly
by ``s``; a crop at integer offset ``(x0, y0)`` subtracts it. A box therefore goes from the
original frame to the network input by :func:`map_boxes`, the same arithmetic the frames go
through.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class CropGeometry:
    """Resize ``(height, width)`` to ``(resized_h, resized_w)``, then crop at ``(y0, x0)``."""

    height: int
    width: int
    resized_h: int
    resized_w: int
    y0: int
    x0: int
    crop: int

    @property
    def scale_x(self) -> float:
        return self.resized_w / self.width

    @property
    def scale_y(self) -> float:
        return self.resized_h / self.height


def resized_size(height: int, width: int, short_side: int) -> tuple[int, int]:
    """``(h, w)`` with the short side ``short_side`` and the aspect ratio kept (rounded)."""
    if height <= 0 or width <= 0:
        raise ValueError(f"frame size must be positive, got {height}x{width}")
    if height <= width:
        return short_side, max(short_side, int(round(width * short_side / height)))
    return max(short_side, int(round(height * short_side / width))), short_side


def centre_crop_geometry(height: int, width: int, short_side: int, crop: int) -> CropGeometry:
    """Resize the short side to ``short_side``, then take the centre ``crop`` square."""
    if crop > short_side:
        raise ValueError(f"crop_size ({crop}) must not exceed resize_short ({short_side})")
    rh, rw = resized_size(height, width, short_side)
    return CropGeometry(height, width, rh, rw, (rh - crop) // 2, (rw - crop) // 2, crop)


def random_crop_geometry(
    height: int, width: int, short_side: int, crop: int, rng: np.random.Generator
) -> CropGeometry:
    """Like :func:`centre_crop_geometry` with the crop placed uniformly at random."""
    centre = centre_crop_geometry(height, width, short_side, crop)
    y0 = int(rng.integers(0, centre.resized_h - crop + 1))
    x0 = int(rng.integers(0, centre.resized_w - crop + 1))
    return CropGeometry(height, width, centre.resized_h, centre.resized_w, y0, x0, crop)


def spatial_crop_geometry(
    height: int, width: int, short_side: int, crop: int, position: int, crops: int
) -> CropGeometry:
    """Crop ``position`` of ``crops`` evenly spread along the long side of the resized frame
    (one crop: the centre; three: both ends and the centre, the three-crop test protocol of
    the non-local and SlowFast papers); the short side is centred."""
    centre = centre_crop_geometry(height, width, short_side, crop)
    if not 0 <= position < crops:
        raise ValueError(f"crop {position} is not one of the {crops} crops")
    if crops == 1:
        return centre
    spare_y, spare_x = centre.resized_h - crop, centre.resized_w - crop
    along = spare_x * position // (crops - 1) if spare_x >= spare_y else spare_y * position // (crops - 1)
    y0, x0 = (centre.y0, along) if spare_x >= spare_y else (along, centre.x0)
    return CropGeometry(height, width, centre.resized_h, centre.resized_w, y0, x0, crop)


def resize_and_crop(frames: np.ndarray, geometry: CropGeometry) -> np.ndarray:
    """``(T, H, W, C)`` frames -> ``(T, crop, crop, C)``, bilinear (``cv2.INTER_LINEAR``)."""
    g = geometry
    out = np.empty((len(frames), g.crop, g.crop, frames.shape[-1]), dtype=frames.dtype)
    for i, frame in enumerate(frames):
        if frame.shape[:2] != (g.height, g.width):
            raise ValueError(
                f"frame {i} is {frame.shape[1]}x{frame.shape[0]}, expected {g.width}x{g.height}"
            )
        resized = cv2.resize(frame, (g.resized_w, g.resized_h), interpolation=cv2.INTER_LINEAR)
        out[i] = resized.reshape(g.resized_h, g.resized_w, -1)[
            g.y0 : g.y0 + g.crop, g.x0 : g.x0 + g.crop
        ]
    return out


def map_boxes(boxes: np.ndarray, mask: np.ndarray, geometry: CropGeometry):
    """Boxes ``(..., 4)`` (x1, y1, x2, y2) in original pixels -> crop pixels, clipped.

    Returns ``(boxes, mask)``: a box that falls wholly outside the crop (zero area after
    clipping) is marked invalid, since it has no feature; invalid boxes are zeroed.
    """
    g = geometry
    out = np.asarray(boxes, dtype=np.float32).copy()
    out[..., 0::2] = out[..., 0::2] * g.scale_x - g.x0
    out[..., 1::2] = out[..., 1::2] * g.scale_y - g.y0
    np.clip(out, 0.0, float(g.crop), out=out)
    valid = np.asarray(mask, dtype=bool) & (out[..., 2] > out[..., 0]) & (out[..., 3] > out[..., 1])
    out[~valid] = 0.0
    return out, valid


def resize_and_crop_flow(flow: np.ndarray, geometry: CropGeometry) -> np.ndarray:
    """``(T, H, W, 2)`` flow in original pixels -> ``(T, crop, crop, 2)`` in input pixels.

    Resizing a frame by ``s`` multiplies displacements by ``s``, so dx is scaled by the
    horizontal factor and dy by the vertical one.
    """
    out = resize_and_crop(flow.astype(np.float32, copy=False), geometry)
    out[..., 0] *= geometry.scale_x
    out[..., 1] *= geometry.scale_y
    return out


def flow_to_input(flow: np.ndarray, bound: float, std: float) -> np.ndarray:
    """Scale flow in input pixels to the range the network sees.

    ``v / bound * 127.5 / std``: what the flow image of the field (``v`` mapped linearly from
    ``[-bound, bound]`` to 0..255) gives after centring at 127.5 and dividing by the RGB std,
    so that cross-modality initialised conv1 weights see inputs on the scale of RGB inputs.
    It is not clipped or re-quantised.
    """
    return flow * np.float32(127.5 / (bound * std))


def flow_frame_indices(frames: np.ndarray, n_frames: int) -> np.ndarray:
    """Which flow field stands for each clip frame: ``flow[f]`` (f -> f + 1), or
    ``flow[n - 2]`` for the video's last frame, which has no successor."""
    if n_frames < 2:
        raise ValueError(f"a video needs at least 2 frames for flow, got {n_frames}")
    return np.minimum(np.asarray(frames, dtype=np.int64), n_frames - 2)


def resize_and_crop_tensor(frames, geometry: CropGeometry):
    """The device twin of :func:`resize_and_crop`: uint8 ``(T, C, H, W)`` tensor frames ->
    uint8 ``(C, T, crop, crop)`` on the same device.

    Bilinear with half-pixel centres and no antialiasing, as ``cv2.INTER_LINEAR`` (OpenCV
    rounds its fixed-point weights, so values may differ by one level). Frames of another
    size than ``geometry``'s are resized straight to its resized size.
    """
    import torch
    import torch.nn.functional as F

    g = geometry
    resized = F.interpolate(
        frames.float(), size=(g.resized_h, g.resized_w), mode="bilinear", align_corners=False
    )
    crop = resized[:, :, g.y0 : g.y0 + g.crop, g.x0 : g.x0 + g.crop]
    return crop.round_().clamp_(0, 255).to(torch.uint8).permute(1, 0, 2, 3)


def geometry_fields(geometry: CropGeometry) -> list[int]:
    """A geometry as seven integers (to travel through a DataLoader as a tensor)."""
    g = geometry
    return [g.height, g.width, g.resized_h, g.resized_w, g.y0, g.x0, g.crop]
