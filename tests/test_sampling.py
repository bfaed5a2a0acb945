"""sample_clip_frames against hand-worked examples (docs/formats.md, "Clip sampling")."""

import numpy as np
import pytest

from regiongraph.dataset.sampling import sample_clip_frames


def test_long_video_is_centred():
    # 100 frames, 32 at stride 2: the clip spans 63 frames, 37 spare, start 37 // 2 = 18
    clip = sample_clip_frames(100, num_frames=32, stride=2)
    assert clip.frames.tolist() == list(range(18, 81, 2))
    assert clip.box_frames.tolist() == list(range(18, 79, 4))
    assert len(clip.box_frames) == 16


def test_short_video_is_looped():
    # 20 frames: frame i of the clip is 2 i mod 20, so 0, 2, ..., 18 three times, then 0, 2
    clip = sample_clip_frames(20, num_frames=32, stride=2)
    assert clip.frames.tolist() == [0, 2, 4, 6, 8, 10, 12, 14, 16, 18] * 3 + [0, 2]
    assert clip.box_frames.tolist() == [0, 4, 8, 12, 16] * 3 + [0]


def test_box_frames_are_every_second_clip_frame():
    clip = sample_clip_frames(70, num_frames=8, stride=3)
    # span 22, 48 spare, start 24: frames 24, 27, ..., 45
    assert clip.frames.tolist() == [24, 27, 30, 33, 36, 39, 42, 45]
    assert clip.box_slots.tolist() == [0, 2, 4, 6]
    assert clip.box_frames.tolist() == [24, 30, 36, 42]
    assert np.array_equal(clip.frames[clip.box_slots], clip.box_frames)


def test_exact_span_and_start_mode():
    assert sample_clip_frames(63).frames.tolist() == list(range(0, 63, 2))
    assert sample_clip_frames(100, mode="start").frames.tolist() == list(range(0, 63, 2))
    assert sample_clip_frames(10, num_frames=4, stride=3).frames.tolist() == [0, 3, 6, 9]


def test_offset_is_clamped_to_the_valid_range():
    assert sample_clip_frames(100, offset=10).frames[0] == 10
    assert sample_clip_frames(100, offset=-5).frames[0] == 0
    assert sample_clip_frames(100, offset=1000).frames[0] == 37  # 100 - 63
    # a looped clip starts at offset mod n_frames
    looped = sample_clip_frames(20, num_frames=4, stride=8, offset=25)
    assert looped.frames.tolist() == [5, 13, 1, 9]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"n_frames": 0}, "n_frames"),
        ({"n_frames": 10, "num_frames": 0}, "positive"),
        ({"n_frames": 10, "stride": 0}, "positive"),
        ({"n_frames": 10, "num_frames": 5}, "multiple of box_every"),
        ({"n_frames": 10, "mode": "random"}, "unknown sampling mode"),
    ],
)
def test_bad_arguments_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        sample_clip_frames(**kwargs)
