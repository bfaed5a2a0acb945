"""The torchvision backend, run for real with randomly initialised weights saved to a file."""

import numpy as np
import pytest
import torch

from regiongraph.detect.boxes import VideoBoxes, select_top_k
from regiongraph.detect.torchvision_backend import TorchvisionDetector, build_model

ARCH = "fasterrcnn_resnet50_fpn"


@pytest.fixture(scope="module")
def random_weights(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("weights") / "random.pth"
    torch.save(build_model(ARCH).state_dict(), path)
    return path


@pytest.fixture(scope="module")
def frames():
    rng = np.random.default_rng(0)
    # two frame sizes in one batch, as when videos of different widths share a batch
    return [rng.integers(0, 256, (40, 64, 3), dtype=np.uint8) for _ in range(2)] + [
        rng.integers(0, 256, (48, 90, 3), dtype=np.uint8)
    ]


def _detector(weights, **kwargs):
    # 100 RPN proposals per frame instead of 1000: the box head's cost, for a test of seconds
    options = dict(
        per_frame=4, min_size=64, score_threshold=0.05, batch_size=2, device="cpu", rpn_top_n=100
    )
    options.update(kwargs)
    return TorchvisionDetector(ARCH, weights, **options)


def test_detections_are_top_k_in_frame_pixels(random_weights, frames):
    found = _detector(random_weights).detect(frames)
    assert len(found) == len(frames)
    for frame, (boxes, scores, classes) in zip(frames, found, strict=True):
        height, width = frame.shape[:2]
        assert boxes.shape == (4, 4) and scores.shape == (4,) and classes.shape == (4,)
        assert boxes.dtype == np.float32 and classes.dtype == np.int32
        assert (boxes[:, 0] >= 0).all() and (boxes[:, 1] >= 0).all()
        assert (boxes[:, 2] <= width).all() and (boxes[:, 3] <= height).all()
        assert (boxes[:, 2] > boxes[:, 0]).all() and (boxes[:, 3] > boxes[:, 1]).all()
        assert (np.diff(scores) <= 0).all()  # best first
        assert ((classes >= 1) & (classes <= 90)).all()  # COCO label ids, no background


def test_model_maps_boxes_back_from_the_upsized_input(random_weights, frames):
    # min_size 64 upsizes 40-pixel frames 1.6x: boxes still lie in the original frame
    detector = _detector(random_weights, per_frame=100, nms_iou=1.0)
    with torch.inference_mode():
        raw = detector.model([torch.from_numpy(frames[0]).permute(2, 0, 1).float() / 255])[0]
    assert len(raw["boxes"]) > 0
    assert raw["boxes"][:, 2].max() <= 64 + 1e-3 and raw["boxes"][:, 3].max() <= 40 + 1e-3
    assert raw["boxes"][:, 2].max() > 32  # not squashed into a corner


def test_two_runs_are_equal(random_weights, frames):
    first = _detector(random_weights).detect(frames)
    second = _detector(random_weights).detect(frames)
    for a, b in zip(first, second, strict=True):
        for x, y in zip(a, b, strict=True):
            np.testing.assert_array_equal(x, y)


def test_score_threshold_can_leave_a_frame_without_boxes(random_weights, frames):
    found = _detector(random_weights, score_threshold=1.0).detect(frames[:1])
    boxes, scores, classes = found[0]
    assert boxes.shape == (0, 4)
    video = VideoBoxes.empty(1, 4)
    video.set_frame(0, boxes, scores, classes)
    assert not video.mask.any() and (video.classes == -1).all() and (video.boxes == 0).all()


def test_missing_weights_name_the_key_and_the_url(tmp_path):
    with pytest.raises(FileNotFoundError, match="boxes.weights") as error:
        _detector(tmp_path / "nope.pth")
    assert "https://download.pytorch.org/models/fasterrcnn_resnet50_fpn_coco-258fb6c6.pth" in str(
        error.value
    )
    with pytest.raises(ValueError, match="boxes.weights is not set"):
        _detector(None)


def test_weights_of_another_model_are_refused(tmp_path):
    path = tmp_path / "other.pth"
    torch.save({"conv.weight": torch.zeros(1)}, path)
    with pytest.raises(ValueError, match="does not match boxes.arch"):
        _detector(path)
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="not a PyTorch state dict"):
        _detector(path)


def test_select_top_k_clips_suppresses_across_classes_and_keeps_k():
    boxes = torch.tensor(
        [
            [10.0, 10, 50, 50],  # class 1, 0.9
            [12.0, 10, 52, 50],  # class 2, 0.8: IoU 0.9 with the first -> suppressed
            [-20.0, 60, 30, 120],  # class 3, 0.7: outside the 100 x 80 frame -> clipped
            [90.0, 0, 130, 5],  # class 4, 0.6: kept only when k >= 3
            [150.0, 10, 160, 20],  # class 5, 0.95: entirely outside -> empty, dropped
        ]
    )
    scores = torch.tensor([0.9, 0.8, 0.7, 0.6, 0.95])
    classes = torch.tensor([1, 2, 3, 4, 5])
    kept_boxes, kept_scores, kept_classes = select_top_k(boxes, scores, classes, 80, 100, 2, 0.5)
    assert kept_boxes.tolist() == [[10, 10, 50, 50], [0, 60, 30, 80]]
    assert kept_scores.tolist() == pytest.approx([0.9, 0.7])
    assert kept_classes.tolist() == [1, 3]
    _, _, all_classes = select_top_k(boxes, scores, classes, 80, 100, 10, 1.0)  # NMS off
    assert all_classes.tolist() == [1, 2, 3, 4]
