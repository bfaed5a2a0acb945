"""The ``features`` stage: backbone features of every video of one shard, cached to HDF5.

Per video (docs/formats.md, ``features/{stream}/{split}/shard-{k}.h5``): the globally
average-pooled last map of the backbone (I3D's res5), and for each box frame ``t`` and box
``k`` the RoIAlign 7x7 feature of the box on feature frame ``t`` (spatial scale one over the
backbone's spatial stride, :mod:`regiongraph.backbones`: 1/16 for I3D with res5 stride 1),
max-pooled over the 7x7 cells (Wang & Gupta 2018, §3.1). Boxes are mapped into the resized
and cropped input first (:func:`regiongraph.features.transforms.map_boxes`).

RoIAlign uses ``aligned=True``: box coordinates are continuous pixel coordinates, and the
half-pixel shift puts the sample grid on the feature cells' centres (Detectron2's
ROIAlignV2 convention). Box frame ``t`` of ``T_box`` reads feature frame
``t * T' // T_box``: the same frame when ``T' = T_box`` (the paper's strides).

Runs on CUDA when there is one (bf16 autocast, channels_last_3d), else on the CPU in fp32;
a DataLoader with worker processes decodes and resizes while the model computes.
"""

from __future__ import annotations

import logging
import os
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader
from torchvision.ops import roi_align
from tqdm import tqdm

from regiongraph.backbones import BackboneSpec, backbone_spec, i3d_strides
from regiongraph.dataset.frames import jpeg_on_device
from regiongraph.dataset.index import read_shard
from regiongraph.features.clips import (
    ClipDataset,
    ClipSettings,
    collate_clips,
    decode_clips,
    to_network_input,
)
from regiongraph.features.storage import (
    FEATURES_STAGE,
    ROI_SIZE,
    FeatureShardWriter,
    feature_settings,
)
from regiongraph.features.weights import load_weights
from regiongraph.gpus import resolve_device
from regiongraph.io import DropReport, file_checksum, shard_writer
from regiongraph.models.backbone import build_backbone, published_state
from regiongraph.models.i3d import global_average_pool

log = logging.getLogger(__name__)



@dataclass(frozen=True)
class BackboneSettings:
    """The backbone: ``arch`` and the I3D knobs (config ``backbone``); its map's strides and
    channels come from the arch's spec (:mod:`regiongraph.backbones`)."""

    arch: str = "i3d_r50"
    conv1_temporal_stride: int = 1
    pool1_temporal: int = 1
    res5_stride: int = 1
    width_per_group: int = 64

    @property
    def spec(self) -> BackboneSpec:
        return backbone_spec(self.arch)

    @property
    def spatial_stride(self) -> int:
        """Input pixels per map cell (I3D: 16 with res5 stride 1, 32 with 2)."""
        return i3d_strides(self.spec, asdict(self))[1]

    @property
    def temporal_stride(self) -> int:
        """Clip frames per map frame (I3D: 2 at the paper's strides)."""
        return i3d_strides(self.spec, asdict(self))[0]

    @property
    def channels(self) -> int:
        return self.spec.channels

    def knobs(self) -> dict[str, int]:
        """The I3D knobs, for :func:`regiongraph.models.backbone.build_backbone`."""
        return {k: v for k, v in asdict(self).items() if k != "arch"}

    def build(self, stream: str) -> nn.Module:
        return build_backbone(self.arch, stream, **self.knobs())


def roi_features(
    features: torch.Tensor,
    boxes: torch.Tensor,
    mask: torch.Tensor,
    spatial_scale: float,
    output_size: int = ROI_SIZE,
    aligned: bool = True,
) -> torch.Tensor:
    """Max-pooled RoIAlign features ``(B, T_box, K, C)`` of boxes on a backbone's map.

    ``features`` ``(B, C, T', H', W')``; ``boxes`` ``(B, T_box, K, 4)`` in input pixels;
    ``mask`` ``(B, T_box, K)``. Invalid boxes give zeros.
    """
    b, c, t_feat, h, w = features.shape
    t_box = boxes.shape[1]
    out = features.new_zeros(b, t_box, boxes.shape[2], c)
    valid = mask.nonzero(as_tuple=False)  # (R, 3): video, box frame, box
    if valid.numel() == 0:
        return out
    frames = features.permute(0, 2, 1, 3, 4).reshape(b * t_feat, c, h, w)
    image = valid[:, 0] * t_feat + valid[:, 1] * t_feat // t_box
    rois = torch.cat(
        [image[:, None].to(boxes.dtype), boxes[valid[:, 0], valid[:, 1], valid[:, 2]]], 1
    )
    pooled = roi_align(
        frames, rois.to(frames.dtype), output_size, spatial_scale, sampling_ratio=2, aligned=aligned
    )
    out[valid[:, 0], valid[:, 1], valid[:, 2]] = pooled.amax(dim=(2, 3))
    return out


def load_backbone(
    weights_path: str | os.PathLike, backbone: BackboneSettings, stream: str
) -> nn.Module:
    """The stream's backbone with its weights, checked against the config."""
    state, meta = load_weights(
        weights_path,
        expect={
            "arch": backbone.arch,
            "stream": stream,
            "width_per_group": backbone.width_per_group,
        },
    )
    model = backbone.build(stream)
    model.load_state_dict(published_state(state, backbone.arch, str(weights_path)), strict=True)
    if meta.get("random_init"):
        log.warning("%s: RANDOM backbone weights (backbone.weights is null)", weights_path)
    return model


@dataclass(frozen=True)
class FeatureJob:
    """How one features shard is computed: the run's side (device, batch, loader workers);
    what it computes is in the clip and backbone settings."""

    device: str
    batch_size: int
    workers: int
    jpeg_decode: str = "auto"  # config backbone.jpeg_decode


def cache_features_shard(
    index_path: str | os.PathLike,
    shard: int,
    output: str | os.PathLike,
    weights_path: str | os.PathLike,
    clip: ClipSettings,
    backbone: BackboneSettings,
    boxes_path: str | os.PathLike,
    boxes_backend: str,
    job: FeatureJob,
    flow_path: str | os.PathLike | None = None,
) -> dict[str, int]:
    """Write the features shard ``output`` for shard ``shard`` of ``index_path``.

    Returns counts: ``videos`` written and ``dropped`` (frames or flow unreadable; recorded in
    the shard with stage ``features``).
    """
    if clip.training:
        raise ValueError("feature caching samples clips in evaluation mode (training=False)")
    rows, split = read_shard(index_path, shard)
    dev = resolve_device(job.device)
    model = load_backbone(weights_path, backbone, clip.stream).to(dev).eval()
    if dev.type == "cuda":
        model = model.to(memory_format=torch.channels_last_3d)
    dataset = ClipDataset(
        rows,
        clip,
        boxes_paths={shard: boxes_path},
        flow_paths={shard: flow_path} if flow_path is not None else None,
        jpeg_on_device=jpeg_on_device(job.jpeg_decode, dev),
    )
    loader = DataLoader(
        dataset,
        batch_size=job.batch_size,
        collate_fn=collate_clips,
        num_workers=job.workers,
        pin_memory=dev.type == "cuda",
        persistent_workers=False,
        prefetch_factor=4 if job.workers else None,
    )
    inputs = {"index": index_path, "weights": weights_path, "boxes": boxes_path}
    if flow_path is not None:
        inputs["flow"] = flow_path
    if clip.arch != backbone.arch:
        raise ValueError(f"clip settings are for {clip.arch}, the backbone is {backbone.arch}")
    settings = feature_settings(
        clip, backbone, file_checksum(weights_path), boxes_backend, 1.0 / backbone.spatial_stride
    )
    drops = DropReport(FEATURES_STAGE, split)
    written: set[str] = set()
    failed: set[str] = set()
    desc = f"features {clip.stream} {split} shard {int(shard):03d}"
    log.info(
        "%s: %d videos x %d views on %s, batch %d, %d workers, JPEG decoded on %s",
        desc, len(rows), dataset.views_per_video, dev, job.batch_size, job.workers,
        dev if dataset.jpeg_on_device else "the host",
    )
    with (
        shard_writer(output, FEATURES_STAGE, settings, inputs) as handle,
        torch.inference_mode(),
        tqdm(total=len(dataset), desc=desc, unit="clip") as bar,
    ):
        writer = FeatureShardWriter(
            handle, clip.num_frames // clip.box_every, clip.per_frame, backbone.channels
        )
        for batch in loader:
            batch = decode_clips(batch, dev)
            for video_id, error in zip(batch["video_id"], batch["error"], strict=True):
                if error and video_id not in failed:  # once, whichever of its views failed
                    failed.add(video_id)
                    drops.drop(video_id, error)
            keep = torch.tensor([not error for error in batch["error"]])
            if keep.any():
                columns = _forward(model, batch, keep, clip, backbone, dev)
                writer.append(columns)
                written.update(columns["video_id"].tolist())
            bar.update(len(batch["video_id"]))
        drops.record(handle)
    dataset.close()
    log.info("%s: %d videos written, %d dropped", desc, len(written), len(drops))
    return {"videos": len(written), "dropped": len(drops)}


def _forward(model, batch, keep, clip: ClipSettings, backbone: BackboneSettings, dev):
    cuda = dev.type == "cuda"
    x = to_network_input(batch["clip"][keep], clip.mean, clip.std, dev)
    boxes = batch["boxes"][keep].to(dev)
    mask = batch["mask"][keep].to(dev)
    if cuda:
        x = x.contiguous(memory_format=torch.channels_last_3d)
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=cuda):
        fmap = model(x)
    fmap = fmap.float()
    pooled = global_average_pool(fmap)
    rois = roi_features(fmap, boxes, mask, 1.0 / backbone.spatial_stride)
    ids = [v for v, k in zip(batch["video_id"], keep.tolist(), strict=True) if k]
    return {
        "video_id": np.array(ids, dtype=object),
        "view": batch["view"][keep].numpy().astype(np.int64),
        "label_index": batch["label_index"][keep].numpy().astype(np.int64),
        "global": pooled.half().cpu().numpy(),
        "roi": rois.half().cpu().numpy(),
        "boxes": boxes.cpu().numpy(),
        "mask": mask.cpu().numpy(),
    }
