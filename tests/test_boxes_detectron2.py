"""The detectron2 backend: the install hint always; the real model when detectron2 is installed.

detectron2 is an optional extra built from source (README, "The detectron2 backend"); without it
the model tests skip and the install-hint tests still run.
"""

import os
import pickle
import sys

import numpy as np
import pytest
import torch

from regiongraph.detect import detectron2_backend as d2
from regiongraph.detect.stage import BoxSettings, extract_boxes_shard

try:
    import detectron2  # noqa: F401

    HAVE_DETECTRON2 = True
except ImportError:
    HAVE_DETECTRON2 = False
needs_detectron2 = pytest.mark.skipif(
    not HAVE_DETECTRON2,
    reason=(
        "detectron2 is not installed (optional; README, 'The detectron2 backend': pip install "
        "'git+https://github.com/facebookresearch/detectron2.git' --no-build-isolation --use-pep517)"
    ),
)


def test_missing_detectron2_gives_the_install_hint(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "detectron2", None)  # import detectron2 -> ImportError
    with pytest.raises(ImportError) as error:
        d2.import_detectron2()
    message = str(error.value)
    assert (
        "pip install 'git+https://github.com/facebookresearch/detectron2.git' "
        "--no-build-isolation --use-pep517" in message
    )
    assert "README, 'The detectron2 backend'" in message
    # the stage says so before downloading anything or touching its output
    index = tmp_path / "index.parquet"
    import pandas as pd

    pd.DataFrame(
        {
            "video_id": ["1"],
            "split": ["test"],
            "label": [""],
            "label_index": [-1],
            "n_frames": [40],
            "height": [10],
            "width": [10],
            "frame_dir": ["x"],
            "shard": [0],
        }
    ).to_parquet(index)
    settings = BoxSettings(backend="detectron2", weights="https://example.invalid/w.pkl")
    with pytest.raises(ImportError, match="--no-build-isolation"):
        extract_boxes_shard(
            index,
            0,
            tmp_path / "o.h5",
            settings,
            8,
            2,
            "uniform",
            device="cpu",
            weights_cache=tmp_path / "cache",
        )
    assert not (tmp_path / "o.h5").exists() and not (tmp_path / "cache").exists()


@pytest.fixture(scope="module")
def neutral_weights(tmp_path_factory):
    """A randomly initialised R50-FPN whose box regressors are zero (boxes = anchors and
    proposals) and whose score layers are scaled down: random init otherwise saturates every
    score and collapses the boxes, which would test nothing."""
    torch.manual_seed(0)
    cfg = d2.detectron2_config(d2.MODEL_ZOO_CONFIG, min_size=64, rpn_top_n=100)
    from detectron2.modeling import build_model

    model = build_model(cfg)
    with torch.no_grad():
        rpn = model.proposal_generator.rpn_head
        rpn.anchor_deltas.weight.zero_()
        rpn.anchor_deltas.bias.zero_()
        rpn.objectness_logits.weight.mul_(1e-3)
        predictor = model.roi_heads.box_predictor
        predictor.bbox_pred.weight.zero_()
        predictor.bbox_pred.bias.zero_()
        predictor.cls_score.weight.mul_(1e-3)
    path = tmp_path_factory.mktemp("d2") / "neutral.pth"
    torch.save({"model": model.state_dict()}, path)
    return path


@pytest.fixture(scope="module")
def frames():
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, (40, 70, 3), dtype=np.uint8) for _ in range(2)] + [
        rng.integers(0, 256, (50, 60, 3), dtype=np.uint8)
    ]


def _detector(weights, source="detections", **kwargs):
    cfg = d2.detectron2_config(d2.MODEL_ZOO_CONFIG, min_size=64, score_threshold=0.0, rpn_top_n=100)
    return d2.Detectron2Detector(cfg, weights, per_frame=5, batch_size=2, source=source, **kwargs)


@needs_detectron2
def test_detections_are_top_k_in_frame_pixels(neutral_weights, frames):
    detector = _detector(neutral_weights)
    assert detector.class_names[0] == "person" and len(detector.class_names) == 80
    found = detector.detect(frames)
    for frame, (boxes, scores, classes) in zip(frames, found, strict=True):
        height, width = frame.shape[:2]
        assert boxes.shape == (5, 4) and scores.shape == (5,) and classes.shape == (5,)
        assert (
            (boxes[:, :2] >= 0).all()
            and (boxes[:, 2] <= width).all()
            and (boxes[:, 3] <= height).all()
        )
        assert (boxes[:, 2] > boxes[:, 0]).all() and (boxes[:, 3] > boxes[:, 1]).all()
        assert (np.diff(scores) <= 0).all()
        assert ((classes >= 0) & (classes < 80)).all()
    again = _detector(neutral_weights).detect(frames)
    for a, b in zip(found, again, strict=True):
        for x, y in zip(a, b, strict=True):
            np.testing.assert_array_equal(x, y)


@needs_detectron2
def test_proposals_are_rpn_boxes_mapped_to_the_frame(neutral_weights, frames):
    detector = _detector(neutral_weights, source="proposals")
    assert detector.class_names == ["object"]
    found = detector.detect(frames[2:])
    boxes, scores, classes = found[0]
    assert len(boxes) == 5 and (classes == 0).all()
    assert ((scores > 0) & (scores < 1)).all()
    # the same proposals computed by hand: RPN on the resized input, scaled back by hand
    inputs = detector._inputs(frames[2:])
    with torch.inference_mode():
        images = detector.model.preprocess_image(inputs)
        features = detector.model.backbone(images.tensor)
        proposals, _ = detector.model.proposal_generator(images, features, None)
    resized_h, resized_w = proposals[0].image_size
    assert (resized_h, resized_w) != (50, 60)  # the input was resized
    scale = torch.tensor([60 / resized_w, 50 / resized_h] * 2)
    expected = proposals[0].proposal_boxes.tensor * scale
    expected_scores = proposals[0].objectness_logits.sigmoid()
    from regiongraph.detect.boxes import select_top_k

    want_boxes, want_scores, _ = select_top_k(
        expected, expected_scores, torch.zeros(len(expected)), 50, 60, 5, 0.5
    )
    np.testing.assert_allclose(boxes, want_boxes, atol=1e-3)
    np.testing.assert_allclose(scores, want_scores, atol=1e-6)


@needs_detectron2
def test_model_zoo_configs_are_found_without_pkg_resources():
    """detectron2.model_zoo imports pkg_resources (gone from setuptools 81): never imported."""
    import subprocess

    code = (
        "import sys\n"
        "from regiongraph.detect import detectron2_backend as d2\n"
        "cfg = d2.detectron2_config(d2.MODEL_ZOO_CONFIG, min_size=64)\n"
        "assert cfg.MODEL.META_ARCHITECTURE == 'GeneralizedRCNN' and cfg.MODEL.RESNETS.DEPTH == 50\n"
        "assert 'detectron2.model_zoo.model_zoo' not in sys.modules and 'pkg_resources' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
    with pytest.raises(FileNotFoundError, match="boxes.detectron2_config: 'COCO-Detection/nope.yaml'"):
        d2.detectron2_config("COCO-Detection/nope.yaml")


@needs_detectron2
def test_missing_weights_name_the_key_and_the_model_zoo_url(tmp_path):
    with pytest.raises(FileNotFoundError, match="boxes.weights") as error:
        _detector(tmp_path / "nope.pkl")
    assert d2.MODEL_ZOO_WEIGHTS in str(error.value)


class Exploit:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@needs_detectron2
def test_model_zoo_pickle_loads_as_detectron2_loads_it_and_code_is_never_run(
    neutral_weights, tmp_path, frames
):
    # the model zoo's .pkl format: {"model": {name: ndarray}, "__author__": ...}
    state = torch.load(neutral_weights, weights_only=True)["model"]
    blobs = {name: value.numpy() for name, value in state.items()}
    pkl = tmp_path / "model_final.pkl"
    pkl.write_bytes(pickle.dumps({"model": blobs, "__author__": "Detectron2 Model Zoo"}))
    from_pkl = _detector(pkl).detect(frames)
    from_pth = _detector(neutral_weights).detect(frames)
    for a, b in zip(from_pkl, from_pth, strict=True):
        for x, y in zip(a, b, strict=True):
            np.testing.assert_allclose(x, y, atol=1e-5)
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pkl"
    evil.write_bytes(pickle.dumps({"model": {"x": Exploit(marker)}, "__author__": "x"}))
    with pytest.raises(ValueError, match=r"evil.pkl: refusing to unpickle global .*system"):
        _detector(evil)
    assert not marker.exists()


@needs_detectron2
@pytest.mark.slow
@pytest.mark.parametrize("source", ["detections", "proposals"])
def test_boxes_target_with_the_detectron2_backend_on_the_synthetic_set(tmp_path, neutral_weights, source):
    """`boxes.backend: detectron2` through the workflow: every shard written, boxes inside
    their frames, the backend and source recorded."""
    import pandas as pd

    from regiongraph.io import open_shard
    from tests.test_workflow import TINY, run_snakemake

    boxes = {"backend": "detectron2", "weights": str(neutral_weights), "source": source,
             "min_size": 64, "score_threshold": 0.0, "rpn_top_n": 100, "per_frame": 5, "batch_size": 8}
    config = {**TINY, "device": "cpu", "backbone": {"num_frames": 4}, "boxes": boxes,
              "shards": {"train": 1, "validation": 1, "test": 1}}
    run_snakemake(tmp_path, config, "--cores", "2", "boxes")
    results = tmp_path / "results"
    for split in ("train", "validation", "test"):
        index = pd.read_parquet(results / "index" / f"{split}.parquet").set_index("video_id")
        with open_shard(results / "boxes" / split / "shard-000.h5", "boxes",
                        {"backend": "detectron2", "source": source}) as shard:
            assert sorted(shard) == sorted(index.index)
            for video_id in shard:
                group = shard[video_id]
                mask = group["mask"][:]
                assert mask.shape[1] == 5 and mask.any()
                found = group["boxes"][:][mask]
                width, height = index.loc[video_id, ["width", "height"]]
                assert (found[:, :2] >= 0).all() and (found[:, 2] <= width).all() and (found[:, 3] <= height).all()
                if source == "proposals":
                    assert (group["classes"][:][mask] == 0).all()
