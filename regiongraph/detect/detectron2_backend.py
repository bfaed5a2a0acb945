"""The ``detectron2`` box backend: Faster R-CNN R50-FPN from detectron2's model zoo.

detectron2 is an optional extra, imported only here and only when this backend is chosen.
Install it from source (see :data:`INSTALL_HINT`). Config keys:

- ``boxes.detectron2_config``: a model-zoo name (``COCO-Detection/faster_rcnn_R_50_FPN_3x.yaml``,
  the default) or the path of a detectron2 config file.
- ``boxes.weights``: the model's weights, a local file or a URL (fetched once by
  :func:`regiongraph.io.download.fetch_weights`); the model zoo's weights for the default
  config are :data:`MODEL_ZOO_WEIGHTS`.
- ``boxes.min_size`` / ``boxes.max_size``: ``INPUT.MIN_SIZE_TEST`` / ``INPUT.MAX_SIZE_TEST``
  (the model zoo's 800 / 1333 upsize SSv1's 100-pixel-high frames eight times).
- ``boxes.rpn_top_n``: ``MODEL.RPN.POST_NMS_TOPK_TEST``, proposals per frame (1000).
- ``boxes.source``: ``detections`` (the ROI heads' boxes, scores above
  ``MODEL.ROI_HEADS.SCORE_THRESH_TEST = boxes.score_threshold``, COCO's 80 contiguous class
  ids) or ``proposals`` (class-agnostic RPN proposals after the RPN's NMS, scored by the
  sigmoid of their objectness logit, class id 0 meaning "object"), as the paper's region
  proposals were. Either is mapped back to the original frame's pixels, then clipped,
  class-agnostic NMS'd and cut to the top ``per_frame``.

Weights are loaded by detectron2's own checkpointer (its name-matching of model-zoo and Caffe2
blobs), except that a ``.pkl`` is read with the restricted unpickler of
:mod:`regiongraph.io.safe_pickle` (detectron2 itself calls plain ``pickle.load``, which runs
whatever code a pickle names) and a ``.pth`` with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from regiongraph.detect.boxes import select_top_k
from regiongraph.io.safe_pickle import load_array_pickle

MODEL_ZOO_CONFIG = "COCO-Detection/faster_rcnn_R_50_FPN_3x.yaml"
MODEL_ZOO_WEIGHTS = "https://dl.fbaipublicfiles.com/detectron2/COCO-Detection/faster_rcnn_R_50_FPN_3x/137849458/model_final_280758.pkl"
INSTALL_HINT = (
    "the detectron2 box backend needs detectron2, which is not installed. Install it from source "
    "(README, 'The detectron2 backend'):\n"
    "    pip install 'git+https://github.com/facebookresearch/detectron2.git' --no-build-isolation --use-pep517\n"
    "(or run with --use-conda, which builds it into envs/detectron2.yaml's environment), or "
    "choose boxes.backend: torchvision"
)
SOURCES = ("detections", "proposals")
DETECTIONS_BEFORE_TOP_K = 100


def import_detectron2():
    """The detectron2 package, or an ImportError that says how to install it."""
    try:
        import detectron2
        import detectron2.config  # noqa: F401  (fails on a half-installed copy)
    except ImportError as error:
        raise ImportError(INSTALL_HINT) from error
    return detectron2


def model_zoo_config_file(name: str) -> Path:
    """A model-zoo config as ``detectron2.model_zoo.get_config_file`` finds it, without
    importing ``detectron2.model_zoo`` (it imports ``pkg_resources``, gone from setuptools 81):
    detectron2's build copies ``configs/`` into the package as ``model_zoo/configs``."""
    detectron2 = import_detectron2()
    configs = Path(detectron2.__file__).parent / "model_zoo" / "configs"
    path = configs / name
    if not path.is_file():
        raise FileNotFoundError(
            f"boxes.detectron2_config: {name!r} is neither a file nor a model-zoo config "
            f"(none at {path})"
        )
    return path


def detectron2_config(
    config_file: str,
    min_size: int = 800,
    max_size: int | None = None,
    score_threshold: float = 0.05,
    device: str = "cpu",
    rpn_top_n: int = 1000,
):
    """A frozen detectron2 config from a model-zoo name or a config file path (no weights set)."""
    import_detectron2()
    from detectron2.config import get_cfg

    path = Path(config_file)
    if not path.is_file():
        path = model_zoo_config_file(config_file)
    cfg = get_cfg()
    cfg.merge_from_file(str(path))
    cfg.MODEL.WEIGHTS = ""
    cfg.MODEL.DEVICE = device
    cfg.INPUT.MIN_SIZE_TEST = min_size
    cfg.INPUT.MAX_SIZE_TEST = max_size or int(round(min_size * 1333 / 800))
    cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST = score_threshold
    cfg.TEST.DETECTIONS_PER_IMAGE = DETECTIONS_BEFORE_TOP_K
    cfg.MODEL.RPN.POST_NMS_TOPK_TEST = rpn_top_n
    cfg.freeze()
    return cfg


def load_detectron2_weights(model, weights: str | os.PathLike) -> None:
    """Load ``weights`` into a detectron2 model as ``DetectionCheckpointer`` does, without
    ever unpickling anything but arrays and plain data."""
    from detectron2.checkpoint import DetectionCheckpointer

    class SafeCheckpointer(DetectionCheckpointer):
        def _load_file(self, filename: str):
            if filename.endswith(".pkl"):
                return _model_zoo_pickle(filename)
            if filename.endswith(".pyth"):
                raise ValueError(
                    f"boxes.weights: {filename}: pycls .pyth checkpoints are not detectors; give "
                    "a detectron2 model-zoo .pkl or a .pth state dict"
                )
            return super()._load_file(filename)  # .pth: through _torch_load below

        def _torch_load(self, f):
            return torch.load(f, map_location="cpu", weights_only=True)

    SafeCheckpointer(model).load(str(weights))


def _model_zoo_pickle(filename: str) -> dict:
    """What ``DetectionCheckpointer._load_file`` makes of a ``.pkl``, read safely."""
    data = load_array_pickle(filename)
    if not isinstance(data, dict):
        raise ValueError(f"boxes.weights: {filename}: expected a dict, found {type(data).__name__}")
    if "model" in data and "__author__" in data:  # detectron2 model-zoo format
        return data
    if "blobs" in data:  # Caffe2 / Detectron1 detection models
        data = data["blobs"]
    data = {k: v for k, v in data.items() if not k.endswith("_momentum")}
    return {"model": data, "__author__": "Caffe2", "matching_heuristics": True}


class Detectron2Detector:
    """Batched detectron2 inference on uint8 RGB frames, returning top-k boxes per frame."""

    def __init__(
        self,
        cfg,
        weights: str | os.PathLike | None,
        per_frame: int = 10,
        nms_iou: float = 0.5,
        batch_size: int = 16,
        source: str = "detections",
        fp16: bool = False,
    ):
        """``cfg`` from :func:`detectron2_config`; ``weights=None`` keeps the random init (tests)."""
        import_detectron2()
        from detectron2.data import MetadataCatalog
        from detectron2.data import transforms as T
        from detectron2.modeling import build_model

        if source not in SOURCES:
            raise ValueError(f"boxes.source: {source!r} is not one of {SOURCES}")
        self.cfg = cfg
        self.per_frame = per_frame
        self.nms_iou = nms_iou
        self.batch_size = batch_size
        self.source = source
        self.model = build_model(cfg).eval()
        if weights is not None:
            if not os.path.isfile(weights):
                raise FileNotFoundError(
                    f"boxes.weights: {weights} does not exist; the model zoo's weights for "
                    f"{MODEL_ZOO_CONFIG} are at {MODEL_ZOO_WEIGHTS}: download them there or give "
                    "that URL as boxes.weights"
                )
            load_detectron2_weights(self.model, weights)
        self.device = torch.device(cfg.MODEL.DEVICE)
        self.fp16 = fp16 and self.device.type == "cuda"
        self.bgr = cfg.INPUT.FORMAT == "BGR"
        self.resize = T.ResizeShortestEdge([cfg.INPUT.MIN_SIZE_TEST] * 2, cfg.INPUT.MAX_SIZE_TEST)
        if source == "proposals":
            self.class_names = ["object"]
        else:
            datasets = cfg.DATASETS.TEST
            names = (
                MetadataCatalog.get(datasets[0]).get("thing_classes", None) if datasets else None
            )
            self.class_names = (
                list(names) if names else [str(i) for i in range(cfg.MODEL.ROI_HEADS.NUM_CLASSES)]
            )

    def _inputs(self, frames: Sequence[np.ndarray]) -> list[dict]:
        inputs = []
        for frame in frames:
            image = frame[:, :, ::-1] if self.bgr else frame
            height, width = image.shape[:2]
            resized = self.resize.get_transform(image).apply_image(np.ascontiguousarray(image))
            tensor = torch.as_tensor(np.ascontiguousarray(resized.transpose(2, 0, 1)))
            inputs.append({"image": tensor, "height": height, "width": width})
        return inputs

    @torch.inference_mode()
    def detect(
        self, frames: Sequence[np.ndarray]
    ) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """Per frame ``(boxes (n, 4), scores (n,), classes (n,))``, ``n <= per_frame``, in frame pixels."""
        from detectron2.modeling.postprocessing import detector_postprocess

        results = []
        for start in range(0, len(frames), self.batch_size):
            batch = frames[start : start + self.batch_size]
            inputs = self._inputs(batch)
            with torch.autocast(self.device.type, dtype=torch.float16, enabled=self.fp16):
                if self.source == "detections":
                    outputs = [out["instances"] for out in self.model(inputs)]
                    found = [(o.pred_boxes.tensor, o.scores, o.pred_classes) for o in outputs]
                else:
                    images = self.model.preprocess_image(inputs)
                    features = self.model.backbone(images.tensor)
                    proposals, _ = self.model.proposal_generator(images, features, None)
                    found = []
                    for proposal, given in zip(proposals, inputs, strict=True):
                        # rescales proposal_boxes from the resized input to the frame
                        mapped = detector_postprocess(proposal, given["height"], given["width"])
                        scores = mapped.objectness_logits.float().sigmoid()
                        keep = scores > self.cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST
                        boxes = mapped.proposal_boxes.tensor[keep]
                        found.append(
                            (boxes, scores[keep], torch.zeros_like(scores[keep], dtype=torch.long))
                        )
            for given, (boxes, scores, classes) in zip(inputs, found, strict=True):
                results.append(
                    select_top_k(
                        boxes,
                        scores,
                        classes,
                        given["height"],
                        given["width"],
                        self.per_frame,
                        self.nms_iou,
                    )
                )
        return results
