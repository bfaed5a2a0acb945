"""The annotations box backend: Something-Else style JSON mapped to the clip's box frames."""

import json

import numpy as np
import pytest

from regiongraph.dataset.sampling import sample_clip_frames
from regiongraph.dataset.toy import ToySettings, iter_videos, make_toy_dataset
from regiongraph.detect.annotations import BoxAnnotations


def _label(category, x1, y1, x2, y2, name="thing"):
    return {
        "box2d": {"x1": x1, "y1": y1, "x2": x2, "y2": y2},
        "category": name,
        "standard_category": category,
    }


def _frame(video_id, number, labels, digits=4):
    return {
        "name": f"{video_id}/{number:0{digits}d}.jpg",
        "labels": labels,
        "nr_instances": len(labels),
    }


@pytest.fixture
def annotation_file(tmp_path):
    """Video 7: an object '0000' on frames 1, 3 (no entry for 2), 5; a hand on 1 and 5; two
    hands on frame 3; '0001' only on frame 5; frame 4 has an entry without '0000'."""
    data = {
        "7": [
            _frame("7", 1, [_label("0000", 10, 10, 30, 30), _label("hand", 0, 50, 20, 70)]),
            _frame(
                "7",
                3,
                [
                    _label("0000", 20, 10, 40, 30),
                    _label("hand", 0, 0, 5, 5),
                    _label("hand", 60, 0, 70, 10),
                ],
            ),
            _frame("7", 4, []),
            _frame(
                "7",
                5,
                [
                    _label("0000", 30, 10, 50, 30),
                    _label("hand", 40, 50, 60, 70),
                    _label("0001", 90, 80, 150, 120),
                ],
                digits=5,
            ),
        ],
        "8": [_frame("8", 2, [_label("0002", 1, 2, 3, 4)])],
    }
    path = tmp_path / "boxes.json"
    path.write_text(json.dumps(data))
    return path


def test_boxes_on_annotated_frames_are_exact(annotation_file):
    notes = BoxAnnotations.load(annotation_file)
    assert notes.class_names == ["0000", "0001", "0002", "hand"]  # from the whole file
    found = notes.video_boxes("7", [0, 2], height=100, width=120, per_frame=4)
    # frame 1 (index 0): the object (class 0) then the hand (class 3)
    assert found.mask[0].tolist() == [True, True, False, False]
    assert found.boxes[0, :2].tolist() == [[10, 10, 30, 30], [0, 50, 20, 70]]
    assert found.classes[0].tolist() == [0, 3, -1, -1]
    assert found.scores[0].tolist() == [1, 1, 0, 0]
    assert found.boxes[0, 2:].tolist() == [[0, 0, 0, 0]] * 2
    # frame 3: the object and both hands, in order of occurrence
    assert found.boxes[1, :3].tolist() == [[20, 10, 40, 30], [0, 0, 5, 5], [60, 0, 70, 10]]
    assert found.classes[1].tolist() == [0, 3, 3, -1]


def test_frames_without_entry_are_interpolated_per_object(annotation_file):
    notes = BoxAnnotations.load(annotation_file)
    # frame 2 (index 1) has no entry: object between frames 1 and 3, the first hand between
    # 1 and 3 (hand #0 on both); the second hand only from frame 3 on, so absent
    found = notes.video_boxes("7", [1], height=100, width=120, per_frame=10)
    assert found.mask[0].sum() == 2
    assert found.boxes[0, 0].tolist() == [15, 10, 35, 30]
    assert found.boxes[0, 1].tolist() == [0, 25, 12.5, 37.5]
    assert found.classes[0, :2].tolist() == [0, 3]


def test_entry_without_object_and_beyond_the_ends_leave_invalid(annotation_file):
    notes = BoxAnnotations.load(annotation_file)
    found = notes.video_boxes("7", [3, 5, 9], height=100, width=120, per_frame=10)
    assert not found.mask[0].any()  # frame 4 has an entry listing nothing
    assert not found.mask[1:].any()  # frames 6 and 10: after the last annotation
    assert (found.classes[1:] == -1).all() and (found.boxes[1:] == 0).all()


def test_boxes_are_clipped_and_cut_to_per_frame(annotation_file):
    notes = BoxAnnotations.load(annotation_file)
    # frame 5 in a 100 x 120 frame: '0001' (90, 80, 150, 120) is clipped to (90, 80, 120, 100)
    found = notes.video_boxes("7", [4], height=100, width=120, per_frame=2)
    assert found.classes[0].tolist() == [0, 1]
    assert found.boxes[0].tolist() == [[30, 10, 50, 30], [90, 80, 120, 100]]


def test_missing_video_has_no_valid_boxes_and_only_wanted_videos_load(annotation_file):
    notes = BoxAnnotations.load(annotation_file, video_ids=["8", "9"])
    assert "7" not in notes and "8" in notes and "9" not in notes
    assert notes.class_names == ["0000", "0001", "0002", "hand"]  # same ids in every shard
    assert not notes.video_boxes("9", [0, 1], 100, 120, 3).mask.any()
    assert notes.video_boxes("8", [1], 100, 120, 3).boxes[0, 0].tolist() == [1, 2, 3, 4]


@pytest.mark.parametrize(
    "content, message",
    [
        ("[1, 2]", "expected an object"),
        ('{"7": {"name": "x"}}', "expected a list"),
        ('{"7": [{"labels": []}]}', "has no 'name'"),
        ('{"7": [{"name": "7/frame.jpg", "labels": []}]}', "1-based frame number"),
        ('{"7": [{"name": "7/0001.jpg", "labels": [{"box2d": {"x1": 1}}]}]}', "box2d"),
        ('{"7": [{"name": "7/1.jpg"}, {"name": "7/001.jpg"}]}', "listed twice"),
        ("{not json", "not valid JSON"),
    ],
)
def test_malformed_files_name_the_file_and_problem(tmp_path, content, message):
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(ValueError, match=message) as error:
        BoxAnnotations.load(path)
    assert str(path) in str(error.value)


def test_video_in_two_files_is_an_error(tmp_path, annotation_file):
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"8": []}))
    with pytest.raises(ValueError, match="'8' is also in"):
        BoxAnnotations.load([annotation_file, other])


def test_toy_dataset_boxes_are_recovered_exactly(tmp_path, caplog):
    settings = ToySettings(
        videos=6,
        classes=2,
        min_frames=8,
        max_frames=12,
        height=48,
        min_width=60,
        max_width=80,
        part_bytes=1 << 20,
        seed=3,
    )
    make_toy_dataset(tmp_path / "archives", tmp_path / "annotations", settings)
    notes = BoxAnnotations.load(tmp_path / "annotations" / "something-else-boxes.json")
    checked = 0
    for video in iter_videos(settings):
        height, width = video.frames[0].shape[:2]
        clip = sample_clip_frames(len(video.frames), num_frames=8, stride=2)
        found = notes.video_boxes(video.video_id, clip.box_frames, height, width, per_frame=3)
        for t, frame in enumerate(clip.box_frames):
            truth = sorted(video.boxes[frame], key=lambda v: v["object"])
            expected = np.clip(
                np.array([v["box"] for v in truth], np.float32).reshape(-1, 4),
                0,
                [width, height, width, height],
            )
            n = len(truth)
            assert found.mask[t].tolist() == [True] * n + [False] * (3 - n)
            np.testing.assert_array_equal(found.boxes[t, :n], expected)
            assert found.classes[t, :n].tolist() == [v["object"] for v in truth]
            checked += n
    assert checked > 0
