"""The ``torchvision`` box backend: Faster R-CNN R50-FPN (v1 or v2) with COCO weights from a file.

The model is built with ``weights=None, weights_backbone=None`` (torchvision downloads
nothing) and its state dict loaded from ``boxes.weights``, a local file or a URL fetched by
:func:`regiongraph.io.download.fetch_weights`. torchvision's COCO weights:

- ``fasterrcnn_resnet50_fpn``: https://download.pytorch.org/models/fasterrcnn_resnet50_fpn_coco-258fb6c6.pth
- ``fasterrcnn_resnet50_fpn_v2``: https://download.pytorch.org/models/fasterrcnn_resnet50_fpn_v2_coco-dd69338a.pth

Frames are detected in batches of ``batch_size`` (the model's transform resizes each frame so
that its short side is ``min_size``, long side at most ``max_size``, and maps boxes back to the
original frame). The model keeps boxes scoring above ``score_threshold`` after its per-class
NMS (on the ``rpn_top_n`` RPN proposals of each frame);
:func:`regiongraph.detect.boxes.select_top_k` then clips, applies class-agnostic NMS and
keeps the top ``per_frame``. Class ids are torchvision's COCO label ids (1..90, index into
:attr:`TorchvisionDetector.class_names`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import torch
from torchvision.models.detection import (
    FasterRCNN_ResNet50_FPN_V2_Weights,
    FasterRCNN_ResNet50_FPN_Weights,
    fasterrcnn_resnet50_fpn,
    fasterrcnn_resnet50_fpn_v2,
)

from regiongraph.detect.boxes import select_top_k

ARCHS = {
    "fasterrcnn_resnet50_fpn": (fasterrcnn_resnet50_fpn, FasterRCNN_ResNet50_FPN_Weights.COCO_V1),
    "fasterrcnn_resnet50_fpn_v2": (
        fasterrcnn_resnet50_fpn_v2,
        FasterRCNN_ResNet50_FPN_V2_Weights.COCO_V1,
    ),
}
# boxes kept per frame by the model before the class-agnostic NMS and top-k
DETECTIONS_BEFORE_TOP_K = 100


def weights_url(arch: str) -> str:
    return ARCHS[arch][1].url


def default_max_size(min_size: int) -> int:
    """The long-side cap that keeps the model zoo's 800/1333 ratio at any ``min_size``."""
    return int(round(min_size * 1333 / 800))


def build_model(
    arch: str,
    min_size: int = 800,
    max_size: int | None = None,
    score_threshold: float = 0.05,
    rpn_top_n: int = 1000,
) -> torch.nn.Module:
    """The detector with random weights (eval mode); load a state dict with :func:`load_weights`."""
    if arch not in ARCHS:
        raise ValueError(
            f"boxes.arch: unknown torchvision detector {arch!r}; expected one of {sorted(ARCHS)}"
        )
    builder, coco = ARCHS[arch]
    model = builder(
        weights=None,
        weights_backbone=None,
        num_classes=len(coco.meta["categories"]),
        min_size=min_size,
        max_size=max_size or default_max_size(min_size),
        box_score_thresh=score_threshold,
        box_detections_per_img=DETECTIONS_BEFORE_TOP_K,
        rpn_post_nms_top_n_test=rpn_top_n,
    )
    return model.eval()


def load_weights(model: torch.nn.Module, path: str | os.PathLike, arch: str) -> None:
    """Load a torchvision detection state dict (a plain one or under ``"model"``) strictly.

    Built without pretrained weights the backbone has ``BatchNorm2d`` where the COCO model has
    ``FrozenBatchNorm2d``; only their ``num_batches_tracked`` counters may be missing.
    """
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises several types for a file that is not a checkpoint
        raise ValueError(f"boxes.weights: {path} is not a PyTorch state dict ({error})") from error
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]
    if not isinstance(state, dict):
        raise ValueError(f"boxes.weights: {path} holds a {type(state).__name__}, not a state dict")
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [key for key in missing if not key.endswith("num_batches_tracked")]
    if missing or unexpected:
        raise ValueError(
            f"boxes.weights: {path} does not match boxes.arch {arch!r}: "
            f"{len(missing)} missing keys (e.g. {missing[:3]}), "
            f"{len(unexpected)} unexpected (e.g. {unexpected[:3]}); "
            f"the COCO weights for {arch} are at {weights_url(arch)}"
        )


class TorchvisionDetector:
    """Batched Faster R-CNN inference on uint8 RGB frames, returning top-k boxes per frame."""

    def __init__(
        self,
        arch: str,
        weights: str | os.PathLike | None,
        per_frame: int = 10,
        min_size: int = 800,
        max_size: int | None = None,
        score_threshold: float = 0.05,
        nms_iou: float = 0.5,
        batch_size: int = 16,
        device: str = "cpu",
        fp16: bool = False,
        rpn_top_n: int = 1000,
    ):
        if weights is None:
            raise ValueError(
                f"boxes.weights is not set: the torchvision backend ({arch}) needs COCO weights; "
                f"set boxes.weights to {weights_url(arch) if arch in ARCHS else 'a local file'} "
                "(downloaded once) or to a local copy of it"
            )
        if not os.path.isfile(weights):
            raise FileNotFoundError(
                f"boxes.weights: {weights} does not exist; torchvision's COCO weights for {arch} "
                f"are at {weights_url(arch) if arch in ARCHS else '(unknown arch)'}: download them "
                "there or give that URL as boxes.weights"
            )
        self.per_frame = per_frame
        self.nms_iou = nms_iou
        self.batch_size = batch_size
        self.device = torch.device(device)
        self.fp16 = fp16 and self.device.type == "cuda"
        self.model = build_model(arch, min_size, max_size, score_threshold, rpn_top_n)
        load_weights(self.model, weights, arch)
        self.model.to(self.device)
        self.class_names = list(ARCHS[arch][1].meta["categories"])

    @torch.inference_mode()
    def detect(
        self, frames: Sequence[np.ndarray]
    ) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """Per frame ``(boxes (n, 4), scores (n,), classes (n,))``, ``n <= per_frame``, in frame pixels."""
        results = []
        for start in range(0, len(frames), self.batch_size):
            batch = frames[start : start + self.batch_size]
            images = [
                torch.from_numpy(np.ascontiguousarray(frame))
                .to(self.device, non_blocking=True)
                .permute(2, 0, 1)
                .float()
                .div_(255)
                for frame in batch
            ]
            with torch.autocast(self.device.type, dtype=torch.float16, enabled=self.fp16):
                outputs = self.model(images)
            for frame, output in zip(batch, outputs, strict=True):
                height, width = frame.shape[:2]
                results.append(
                    select_top_k(
                        output["boxes"],
                        output["scores"],
                        output["labels"],
                        height,
                        width,
                        self.per_frame,
                        self.nms_iou,
                    )
                )
        return results
