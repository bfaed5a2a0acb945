"""Which frames of a video a clip uses, and which of them get boxes.

One function, :func:`sample_clip_frames`, is shared by the boxes and the features stages so
that they can never disagree. The recipe of the paper (Wang & Gupta 2018, §4; the I3D of
video-nonlocal-net) takes ``num_frames = 32`` frames at ``stride = 2``; the backbone's temporal
pooling after res2 halves time, so feature frame ``t`` covers clip frames ``2t`` and ``2t + 1``
and the boxes of feature frame ``t`` come from clip frame ``2t`` (every second clip frame:
16 box frames for 32 clip frames).

Indices are 0-based positions in the video's sorted frame list (``00001.jpg`` is 0).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SAMPLING_MODES = ("centre", "start")
# Box frames are every second clip frame: the backbone halves time after res2, so box frame t
# lines up with feature frame t. The boxes, features and fine-tuning stages all use this one.
BOX_EVERY = 2


@dataclass(frozen=True)
class ClipFrames:
    """The clip's frame indices and, among them, those that get boxes."""

    frames: np.ndarray  # (num_frames,) int64 indices into the video
    box_frames: np.ndarray  # (num_frames // box_every,) the frames with boxes, in clip order
    box_slots: np.ndarray  # positions of the box frames inside ``frames``


def sample_clip_frames(
    n_frames: int,
    num_frames: int = 32,
    stride: int = 2,
    box_every: int = BOX_EVERY,
    mode: str = "centre",
    offset: int | None = None,
) -> ClipFrames:
    """Frame indices of one clip of ``num_frames`` frames taken every ``stride`` frames.

    A video long enough for the clip's span (``(num_frames - 1) * stride + 1`` frames) gives a
    window placed by ``mode``: ``centre`` (evaluation and feature caching) or ``start``;
    ``offset`` overrides the window start (temporal jitter during fine-tuning) and is clamped
    to the valid range. A shorter video is looped: the clip reads indices
    ``(start + stride * i) mod n_frames``, the loop-padding of the original recipe.

    Box frames are every ``box_every``-th clip frame starting at the first, matching the
    backbone's temporal stride so that box frame ``t`` lines up with feature frame ``t``.
    """
    if n_frames < 1:
        raise ValueError(f"n_frames must be at least 1, got {n_frames}")
    if num_frames < 1 or stride < 1 or box_every < 1:
        raise ValueError(
            f"num_frames, stride and box_every must be positive, got {num_frames}, {stride}, {box_every}"
        )
    if num_frames % box_every:
        raise ValueError(f"num_frames ({num_frames}) must be a multiple of box_every ({box_every})")
    if mode not in SAMPLING_MODES:
        raise ValueError(f"unknown sampling mode {mode!r}; expected one of {SAMPLING_MODES}")
    span = (num_frames - 1) * stride + 1
    steps = stride * np.arange(num_frames, dtype=np.int64)
    if n_frames >= span:
        latest = n_frames - span
        if offset is not None:
            start = int(np.clip(offset, 0, latest))
        elif mode == "centre":
            start = latest // 2
        else:
            start = 0
        frames = start + steps
    else:
        start = 0 if offset is None else int(offset) % n_frames
        frames = (start + steps) % n_frames
    slots = np.arange(0, num_frames, box_every, dtype=np.int64)
    return ClipFrames(frames=frames, box_frames=frames[slots], box_slots=slots)
