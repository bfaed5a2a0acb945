"""Clip sampling against hand-worked indices (docs/formats.md, "Clip sampling")."""

import numpy as np
import pytest

from regiongraph.dataset.sampling import (
    box_frames_of_views,
    dense_frame_indices,
    sample_clip_frames,
    uniform_frame_indices,
)

# Uniform sampling of 32 frames, evaluation (segment centres): frame floor((i + 1/2) n / 32),
# worked out by hand for the lengths Something-Something has (SSv1 averages ~36 frames).
UNIFORM_32 = {
    # n = 10 < 32: each frame repeats 3 or 4 times, in order, and every frame is used
    10: [0, 0, 0, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 4, 4, 4, 5, 5, 5, 6, 6, 6, 7, 7, 7, 7, 8, 8, 8, 9, 9, 9],
    # n = 31: one frame (15) twice, every other frame once
    31: [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 15, 16, 17, 18, 19, 20, 21, 22,
         23, 24, 25, 26, 27, 28, 29, 30],
    32: list(range(32)),
    # n = 36, segments of 1.125 frames: every eighth segment skips a frame (4, 13, 22, 31)
    36: [0, 1, 2, 3, 5, 6, 7, 8, 9, 10, 11, 12, 14, 15, 16, 17, 18, 19, 20, 21, 23, 24, 25, 26,
         27, 28, 29, 30, 32, 33, 34, 35],
    # n = 63, segments of 1.96875: (i + 1/2) * 1.96875 = 2i + 0.98 - 0.03125 i, so 2i throughout
    63: list(range(0, 63, 2)),
    # n = 200, segments of 6.25: floor(3.125 + 6.25 i)
    200: [3, 9, 15, 21, 28, 34, 40, 46, 53, 59, 65, 71, 78, 84, 90, 96, 103, 109, 115, 121, 128,
          134, 140, 146, 153, 159, 165, 171, 178, 184, 190, 196],
}


@pytest.mark.parametrize("n_frames", sorted(UNIFORM_32))
def test_uniform_evaluation_takes_each_segments_centre(n_frames):
    clip = sample_clip_frames(n_frames, num_frames=32)
    assert clip.frames.tolist() == UNIFORM_32[n_frames]
    assert clip.box_frames.tolist() == UNIFORM_32[n_frames][::2]  # every second clip frame
    assert clip.box_slots.tolist() == list(range(0, 32, 2))
    frames = clip.frames
    assert (np.diff(frames) >= 0).all()  # in time order: never loops back to the start
    if n_frames >= 32:
        assert len(set(frames.tolist())) == 32  # repeats only for videos shorter than the clip
    else:
        assert set(frames.tolist()) == set(range(n_frames))


@pytest.mark.parametrize("n_frames", [10, 31, 32, 36, 63, 200])
def test_uniform_training_offsets_stay_inside_their_segments(n_frames):
    rng = np.random.default_rng(0)
    segment = n_frames / 32
    seen = set()
    for _ in range(50):
        frames = sample_clip_frames(n_frames, 32, rng=rng).frames
        lower = np.floor(np.arange(32) * segment + 1e-9)
        upper = np.ceil(np.arange(1, 33) * segment - 1e-9) - 1
        assert ((frames >= lower) & (frames <= np.maximum(upper, lower))).all()
        assert (np.diff(frames) >= 0).all() and frames.max() < n_frames
        seen.add(tuple(frames.tolist()))
    assert len(seen) > 1 if n_frames > 32 else True  # random: clips differ


def test_uniform_views_spread_the_offsets_over_each_segment():
    # 2 views of 4 frames of a 16-frame video: offsets 1/4 and 3/4 of 4-frame segments
    assert sample_clip_frames(16, 4, views=2, view=0).frames.tolist() == [1, 5, 9, 13]
    assert sample_clip_frames(16, 4, views=2, view=1).frames.tolist() == [3, 7, 11, 15]
    assert box_frames_of_views(16, 4, 2, "uniform", views=2).tolist() == [1, 3, 9, 11]
    assert uniform_frame_indices(16, 4, 0.0).tolist() == [0, 4, 8, 12]


def test_dense_long_video_is_centred():
    # 100 frames, 32 at stride 2: the clip spans 63 frames, 37 spare, start 37 // 2 = 18
    clip = sample_clip_frames(100, num_frames=32, stride=2, mode="dense")
    assert clip.frames.tolist() == list(range(18, 81, 2))
    assert clip.box_frames.tolist() == list(range(18, 79, 4))
    assert len(clip.box_frames) == 16


def test_dense_short_video_is_looped():
    # 20 frames: frame i of the clip is 2 i mod 20, so 0, 2, ..., 18 three times, then 0, 2
    clip = sample_clip_frames(20, num_frames=32, stride=2, mode="dense")
    assert clip.frames.tolist() == [0, 2, 4, 6, 8, 10, 12, 14, 16, 18] * 3 + [0, 2]
    assert clip.box_frames.tolist() == [0, 4, 8, 12, 16] * 3 + [0]


def test_dense_box_frames_are_every_second_clip_frame():
    clip = sample_clip_frames(70, num_frames=8, stride=3, mode="dense")
    # span 22, 48 spare, start 24: frames 24, 27, ..., 45
    assert clip.frames.tolist() == [24, 27, 30, 33, 36, 39, 42, 45]
    assert clip.box_slots.tolist() == [0, 2, 4, 6]
    assert clip.box_frames.tolist() == [24, 30, 36, 42]
    assert np.array_equal(clip.frames[clip.box_slots], clip.box_frames)


def test_dense_start_is_clamped_and_views_spread_the_window():
    assert dense_frame_indices(63, 32, 2).tolist() == list(range(0, 63, 2))
    assert dense_frame_indices(100, 32, 2, start=10)[0] == 10
    assert dense_frame_indices(100, 32, 2, start=-5)[0] == 0
    assert dense_frame_indices(100, 32, 2, start=1000)[0] == 37  # 100 - 63
    assert dense_frame_indices(20, 4, 8, start=25).tolist() == [5, 13, 1, 9]  # looped
    starts = [sample_clip_frames(100, 32, 2, mode="dense", view=v, views=3).frames[0] for v in range(3)]
    assert starts == [6, 18, 30]  # 37 spare frames: 37 * 1/6, 3/6, 5/6
    rng = np.random.default_rng(1)
    assert {int(sample_clip_frames(100, 32, 2, mode="dense", rng=rng).frames[0]) for _ in range(40)} <= set(range(38))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"n_frames": 0}, "n_frames"),
        ({"n_frames": 10, "num_frames": 0}, "positive"),
        ({"n_frames": 10, "stride": 0}, "positive"),
        ({"n_frames": 10, "num_frames": 5}, "multiple of box_every"),
        ({"n_frames": 10, "mode": "centre"}, "backbone.sampling: unknown mode 'centre'"),
        ({"n_frames": 10, "view": 2, "views": 2}, "view 2 is not one of the 2 views"),
    ],
)
def test_bad_arguments_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        sample_clip_frames(**kwargs)
