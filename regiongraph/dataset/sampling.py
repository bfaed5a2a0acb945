"""Which frames of a video a clip uses, and which of them get boxes.

One function, :func:`sample_clip_frames`, is shared by the boxes, the features and the
fine-tuning stages, so that they can never disagree. Two ways to choose ``num_frames`` frames
(config ``backbone.sampling``):

- ``uniform`` (the default, and ``config/ssv1.yaml``'s): the video is cut into ``num_frames``
  equal segments and one frame is taken from each, as TSN does (Wang et al., ECCV 2016):
  frame ``⌊(i + o_i) · n / num_frames⌋`` of segment ``i``, with ``o_i = 1/2`` (the segment's
  centre) for evaluation and ``o_i`` uniform in ``[0, 1)`` for training. The clip spans the whole
  video whatever its length; a frame repeats only when the video has fewer frames than the
  clip. Something-Something videos are short (SSv1 about 36 frames, SSv2 about 45), so this is
  what fits them.
- ``dense``: ``num_frames`` consecutive frames ``stride`` apart (the paper's 32 frames at
  stride 2, built for Kinetics' 10-second videos), the window centred for evaluation and at a
  random start for training; a video shorter than the window's ``(num_frames - 1) * stride + 1``
  frames is looped, so on SSv1 nearly every clip restarts at frame 0 midway.

Evaluation can take several temporal views of a video (config ``evaluate.views``): view ``v`` of
``V`` uses offsets ``(v + 1/2) / V`` in every segment (uniform), or windows spread evenly over
the video (dense); one view is the centre.

The backbone's temporal pooling after res2 halves time, so feature frame ``t`` covers clip
frames ``2t`` and ``2t + 1``, and the boxes of feature frame ``t`` come from clip frame ``2t``:
box frames are every second clip frame (16 box frames for 32 clip frames).

Indices are 0-based positions in the video's sorted frame list (``00001.jpg`` is 0).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SAMPLING_MODES = ("uniform", "dense")
# Box frames are every second clip frame for I3D: it halves time after res2, so box frame t
# lines up with feature frame t. Other backbones declare theirs (regiongraph.backbones:
# BackboneSpec.box_every); the boxes, features and fine-tuning stages take it from there.
BOX_EVERY = 2


@dataclass(frozen=True)
class ClipFrames:
    """The clip's frame indices and, among them, those that get boxes."""

    frames: np.ndarray  # (num_frames,) int64 indices into the video
    box_frames: np.ndarray  # (num_frames // box_every,) the frames with boxes, in clip order
    box_slots: np.ndarray  # positions of the box frames inside ``frames``


def uniform_frame_indices(
    n_frames: int, num_frames: int, offsets: np.ndarray | float = 0.5
) -> np.ndarray:
    """Frame ``⌊(i + o_i) · n_frames / num_frames⌋`` for segment ``i`` (TSN's segments).

    ``offsets`` (a number, or one per segment, each in ``[0, 1)``) place the frame inside its
    segment: ``1/2`` is the centre.
    """
    offsets = np.broadcast_to(np.asarray(offsets, dtype=np.float64), (num_frames,))
    if (offsets < 0).any() or (offsets >= 1).any():
        raise ValueError(f"segment offsets must lie in [0, 1), got {offsets.min()}..{offsets.max()}")
    positions = (np.arange(num_frames) + offsets) * (n_frames / num_frames)
    return np.minimum(np.floor(positions + 1e-9).astype(np.int64), n_frames - 1)


def dense_frame_indices(
    n_frames: int, num_frames: int, stride: int, start: int | None = None
) -> np.ndarray:
    """``num_frames`` frames ``stride`` apart from ``start`` (None: the centred window).

    A video long enough for the window's span gets it at ``start`` clamped to the valid range;
    a shorter one is looped: ``(start + stride * i) mod n_frames``, the loop-padding of the
    original recipe.
    """
    span = (num_frames - 1) * stride + 1
    steps = stride * np.arange(num_frames, dtype=np.int64)
    if n_frames >= span:
        latest = n_frames - span
        first = latest // 2 if start is None else int(np.clip(start, 0, latest))
        return first + steps
    return (int(start or 0) % n_frames + steps) % n_frames


def _view_start(n_frames: int, num_frames: int, stride: int, view: int, views: int) -> int:
    """Where dense view ``view`` of ``views`` starts: windows spread evenly (one: centred)."""
    latest = n_frames - ((num_frames - 1) * stride + 1)
    if latest < 0:  # looped: spread the starting frame over the video
        return n_frames * view // views
    return latest * (2 * view + 1) // (2 * views)


def sample_clip_frames(
    n_frames: int,
    num_frames: int = 32,
    stride: int = 2,
    box_every: int = BOX_EVERY,
    mode: str = "uniform",
    view: int = 0,
    views: int = 1,
    rng: np.random.Generator | None = None,
) -> ClipFrames:
    """The frames of one clip of a video of ``n_frames`` frames (see the module docstring).

    ``rng`` given: a training clip (random offsets in every segment, or a random window
    start); else evaluation view ``view`` of ``views``. ``stride`` applies to ``dense`` only.
    Box frames are every ``box_every``-th clip frame starting at the first.
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
        raise ValueError(f"backbone.sampling: unknown mode {mode!r}; expected one of {SAMPLING_MODES}")
    if not 0 <= view < views:
        raise ValueError(f"view {view} is not one of the {views} views")
    if mode == "uniform":
        offsets = rng.random(num_frames) if rng is not None else (2 * view + 1) / (2 * views)
        frames = uniform_frame_indices(n_frames, num_frames, offsets)
    else:
        span = (num_frames - 1) * stride + 1
        if rng is not None:
            start = int(rng.integers(0, n_frames - span + 1 if n_frames >= span else n_frames))
        else:
            start = _view_start(n_frames, num_frames, stride, view, views)
        frames = dense_frame_indices(n_frames, num_frames, stride, start)
    slots = np.arange(0, num_frames, box_every, dtype=np.int64)
    return ClipFrames(frames=frames, box_frames=frames[slots], box_slots=slots)


def box_frames_of_views(
    n_frames: int, num_frames: int, stride: int, mode: str, views: int = 1,
    box_every: int = BOX_EVERY,
) -> np.ndarray:
    """The sorted frames that any of ``views`` evaluation views puts boxes on."""
    frames = [
        sample_clip_frames(
            n_frames, num_frames, stride, box_every, mode=mode, view=v, views=views
        ).box_frames
        for v in range(views)
    ]
    return np.unique(np.concatenate(frames))
