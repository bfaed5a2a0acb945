"""The per-video box arrays every backend returns, and the class-agnostic top-k selection.

Every backend (annotations, torchvision, detectron2) ends in :class:`VideoBoxes`: for each of
the ``T`` box frames of a clip, ``K`` slots of ``(x1, y1, x2, y2)`` boxes in the original
frame's pixel coordinates, their scores and class ids, and a validity mask. Fewer than ``K``
boxes on a frame is normal: the empty slots hold zeros, class ``-1`` and ``mask = False``.

:func:`select_top_k` is the one post-processing step of the detector backends: clip to the
frame, drop empty boxes, class-agnostic NMS (a detector's NMS is per class, so one object can
come out once per class it resembles), then keep the ``K`` highest scores.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class VideoBoxes:
    """Boxes of one video's box frames: the arrays written to ``boxes/{split}/shard-{k}.h5``."""

    boxes: np.ndarray  # (T, K, 4) float32, x1 y1 x2 y2 in original frame pixels
    scores: np.ndarray  # (T, K) float32
    classes: np.ndarray  # (T, K) int32, -1 where invalid
    mask: np.ndarray  # (T, K) bool

    @classmethod
    def empty(cls, num_box_frames: int, per_frame: int) -> VideoBoxes:
        """No valid box on any frame (zeros, class -1, mask False)."""
        shape = (num_box_frames, per_frame)
        return cls(
            boxes=np.zeros(shape + (4,), dtype=np.float32),
            scores=np.zeros(shape, dtype=np.float32),
            classes=np.full(shape, -1, dtype=np.int32),
            mask=np.zeros(shape, dtype=bool),
        )

    def set_frame(self, t: int, boxes: np.ndarray, scores: np.ndarray, classes: np.ndarray) -> None:
        """Fill frame ``t`` with ``n <= K`` boxes (already selected and ordered) in slots 0..n-1."""
        n = len(boxes)
        if n > self.mask.shape[1]:
            raise ValueError(f"{n} boxes for frame {t}, but only {self.mask.shape[1]} slots")
        self.boxes[t] = 0
        self.scores[t] = 0
        self.classes[t] = -1
        self.mask[t] = False
        self.boxes[t, :n] = boxes
        self.scores[t, :n] = scores
        self.classes[t, :n] = classes
        self.mask[t, :n] = True


def clip_boxes_to_frame(boxes: np.ndarray, height: int, width: int) -> np.ndarray:
    """Clip ``(..., 4)`` x1 y1 x2 y2 boxes to ``[0, width] x [0, height]``."""
    out = np.asarray(boxes, dtype=np.float32).copy()
    out[..., 0::2] = np.clip(out[..., 0::2], 0, width)
    out[..., 1::2] = np.clip(out[..., 1::2], 0, height)
    return out


def select_top_k(
    boxes,
    scores,
    classes,
    height: int,
    width: int,
    per_frame: int,
    nms_iou: float,
    min_side: float = 1e-2,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Clip, drop empty boxes, class-agnostic NMS at ``nms_iou``, keep the top ``per_frame``.

    Takes torch tensors ``(n, 4)``, ``(n,)``, ``(n,)`` on any device; returns numpy arrays on
    the CPU ordered by decreasing score. ``nms_iou >= 1`` turns the NMS off.
    """
    import torch
    from torchvision.ops import nms

    boxes = boxes.detach().float()
    scores = scores.detach().float()
    boxes = torch.stack(
        [
            boxes[:, 0].clamp(0, width),
            boxes[:, 1].clamp(0, height),
            boxes[:, 2].clamp(0, width),
            boxes[:, 3].clamp(0, height),
        ],
        dim=1,
    )
    keep = ((boxes[:, 2] - boxes[:, 0]) > min_side) & ((boxes[:, 3] - boxes[:, 1]) > min_side)
    boxes, scores, classes = boxes[keep], scores[keep], classes[keep]
    if nms_iou < 1:
        keep = nms(boxes, scores, nms_iou)  # sorted by decreasing score
    else:
        keep = torch.argsort(scores, descending=True, stable=True)
    keep = keep[:per_frame]
    return (
        boxes[keep].cpu().numpy().astype(np.float32),
        scores[keep].cpu().numpy().astype(np.float32),
        classes[keep].cpu().numpy().astype(np.int32),
    )
