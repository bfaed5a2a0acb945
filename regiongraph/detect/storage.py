"""Box shards, ``boxes/{split}/shard-{k}.h5``: the format in one place.

One group per video (docs/formats.md): ``frame_indices`` int64 ``(F,)``, the video frames that
have boxes (sorted, each once: the box frames of every view the evaluation takes), and per frame
``boxes`` float32 ``(F, K, 4)`` (x1, y1, x2, y2) in the pixels of the original frame, ``scores``
float32 ``(F, K)``, ``classes`` int32 ``(F, K)`` (-1 where invalid), ``mask`` bool ``(F, K)``;
attributes ``height``, ``width`` of the frame the boxes are in. ``K`` is the configured
``boxes.per_frame``. The root ``class_names`` attribute names the class ids.

:func:`read_video_boxes` is the one reader: it gives a clip's box frames (in clip order, a frame
repeated where the clip repeats it), refuses boxes made for other frames or another
``per_frame`` (the boxes stage must be rerun), and rescales them to the frame size the reader
sees.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import h5py
import numpy as np

from regiongraph.detect.boxes import VideoBoxes

log = logging.getLogger(__name__)

BOXES_STAGE = "boxes"


def write_video_boxes(
    handle: h5py.File,
    video_id: str,
    found: VideoBoxes,
    frame_indices: np.ndarray,
    height: int,
    width: int,
) -> None:
    """Store one video's boxes on ``frame_indices`` (sorted, unique; in the pixels of its
    ``height x width`` frames)."""
    frame_indices = np.asarray(frame_indices, dtype=np.int64)
    if (np.diff(frame_indices) <= 0).any() or len(frame_indices) != len(found.boxes):
        raise ValueError(
            f"video {video_id}: box frames must be sorted, each once, one per row of boxes"
        )
    group = handle.create_group(str(video_id))
    group.create_dataset("boxes", data=found.boxes.astype(np.float32))
    group.create_dataset("scores", data=found.scores.astype(np.float32))
    group.create_dataset("classes", data=found.classes.astype(np.int32))
    group.create_dataset("mask", data=found.mask.astype(bool))
    group.create_dataset("frame_indices", data=frame_indices)
    group.attrs["height"] = int(height)
    group.attrs["width"] = int(width)


@dataclass
class FrameBoxes:
    """A video's boxes as a reader uses them: in the pixels of the frames it reads."""

    boxes: np.ndarray  # (T, K, 4) float32
    mask: np.ndarray  # (T, K) bool


def read_video_boxes(
    handle: h5py.File,
    video_id: str,
    box_frames: np.ndarray,
    per_frame: int,
    height: int,
    width: int,
) -> FrameBoxes:
    """The boxes of ``video_id`` on ``box_frames``, scaled to ``height x width`` frames.

    A video the shard does not hold has no valid box (logged). Boxes made for other frames or
    another ``per_frame`` are an error naming the shard, the video and the setting.
    """
    t_box = len(box_frames)
    video_id = str(video_id)
    if video_id not in handle:
        log.warning("%s: no boxes for video %s; its RoI block is empty", handle.filename, video_id)
        return FrameBoxes(np.zeros((t_box, per_frame, 4), np.float32), np.zeros((t_box, per_frame), bool))
    group = handle[video_id]
    recorded = group["frame_indices"][()]
    wanted = np.asarray(box_frames, dtype=np.int64)
    rows = np.searchsorted(recorded, wanted)
    found = (rows < len(recorded)) & (recorded[np.minimum(rows, len(recorded) - 1)] == wanted)
    if len(recorded) == 0 or not found.all():
        raise ValueError(
            f"{handle.filename}: video {video_id} has boxes on frames {recorded.tolist()}, but "
            f"the clip needs frames {wanted[~found].tolist()} too: the boxes were made under "
            "other backbone.num_frames / frame_stride / sampling or evaluate.views settings; "
            "rerun the boxes stage"
        )
    boxes = group["boxes"][()]
    mask = group["mask"][()]
    if boxes.shape[1:] != (per_frame, 4):
        raise ValueError(
            f"{handle.filename}: video {video_id} has {boxes.shape[1]} boxes per frame, expected "
            f"{per_frame} (boxes.per_frame); rerun the boxes stage"
        )
    boxes, mask = boxes[rows], mask[rows]
    box_h = int(group.attrs.get("height", height))
    box_w = int(group.attrs.get("width", width))
    if (box_h, box_w) != (height, width):
        boxes = boxes * np.array([width / box_w, height / box_h] * 2, dtype=np.float32)
    return FrameBoxes(boxes.astype(np.float32), mask.astype(bool))
