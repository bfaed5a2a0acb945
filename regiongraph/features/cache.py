"""The ``features`` stage: I3D features of every video of one shard, cached to HDF5.

Per video (docs/formats.md, ``features/{stream}/{split}/shard-{k}.h5``): the globally
average-pooled res5 feature, and for each box frame ``t`` and box ``k`` the RoIAlign 7x7
feature of the box on feature frame ``t`` (spatial scale 1/16 with res5 stride 1),
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
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import h5py
import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader
from torchvision.ops import roi_align
from tqdm import tqdm

from regiongraph.features.clips import ClipDataset, ClipSettings, resolve_device, to_network_input
from regiongraph.features.weights import load_weights
from regiongraph.io import file_checksum, record_shard_drops, shard_writer
from regiongraph.models.i3d import FEATURE_DIM, I3DResNet, build_backbone, global_average_pool

log = logging.getLogger(__name__)

ROI_SIZE = 7


@dataclass(frozen=True)
class BackboneSettings:
    """The backbone's architecture knobs (config ``backbone``)."""

    arch: str = "i3d_r50"
    conv1_temporal_stride: int = 1
    pool1_temporal: int = 1
    res5_stride: int = 1
    width_per_group: int = 64

    @property
    def spatial_stride(self) -> int:
        """Input pixels per res5 cell: 16 with res5 stride 1, 32 with 2."""
        return 16 * self.res5_stride

    def build(self, stream: str) -> I3DResNet:
        return build_backbone(
            self.arch,
            stream,
            self.conv1_temporal_stride,
            self.pool1_temporal,
            self.res5_stride,
            self.width_per_group,
        )


def roi_features(
    features: torch.Tensor,
    boxes: torch.Tensor,
    mask: torch.Tensor,
    spatial_scale: float,
    output_size: int = ROI_SIZE,
    aligned: bool = True,
) -> torch.Tensor:
    """Max-pooled RoIAlign features ``(B, T_box, K, C)`` of boxes on a res5 map.

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


class FeatureShardWriter:
    """Columnar datasets of one features shard, grown a batch at a time, chunked per video."""

    def __init__(self, handle: h5py.File, t_box: int, per_frame: int, channels: int = FEATURE_DIM):
        self.handle = handle
        shapes = {
            "video_id": ((), h5py.string_dtype()),
            "label_index": ((), np.int64),
            "global": ((channels,), np.float16),
            "roi": ((t_box, per_frame, channels), np.float16),
            "boxes": ((t_box, per_frame, 4), np.float32),
            "mask": ((t_box, per_frame), bool),
        }
        for name, (shape, dtype) in shapes.items():
            handle.create_dataset(
                name, shape=(0, *shape), maxshape=(None, *shape), dtype=dtype, chunks=(1, *shape)
            )
        self.count = 0

    def append(self, columns: Mapping[str, np.ndarray]) -> None:
        n = len(columns["video_id"])
        if n == 0:
            return
        for name, values in columns.items():
            dataset = self.handle[name]
            dataset.resize(self.count + n, axis=0)
            dataset[self.count : self.count + n] = values
        self.count += n


def load_backbone(
    weights_path: str | os.PathLike, backbone: BackboneSettings, stream: str
) -> I3DResNet:
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
    model.load_state_dict(state, strict=True)
    if meta.get("random_init"):
        log.warning("%s: RANDOM backbone weights (backbone.weights is null)", weights_path)
    return model


def cache_features_shard(
    index_path: str | os.PathLike,
    shard: int,
    output: str | os.PathLike,
    weights_path: str | os.PathLike,
    clip: ClipSettings,
    backbone: BackboneSettings,
    boxes_path: str | os.PathLike,
    boxes_backend: str,
    flow_path: str | os.PathLike | None = None,
    device: str = "auto",
    batch_size: int = 8,
    workers: int = 2,
    extra_settings: Mapping[str, Any] | None = None,
) -> dict[str, int]:
    """Write the features shard ``output`` for shard ``shard`` of ``index_path``.

    Returns counts: ``videos`` written and ``dropped`` (frames or flow unreadable; recorded in
    the shard with stage ``features``).
    """
    if clip.training:
        raise ValueError("feature caching samples clips in evaluation mode (training=False)")
    index = pd.read_parquet(index_path)
    rows = index[index["shard"] == int(shard)].sort_values("video_id", kind="stable")
    split = str(index["split"].iloc[0]) if len(index) else ""
    dev = resolve_device(device)
    model = load_backbone(weights_path, backbone, clip.stream).to(dev).eval()
    cuda = dev.type == "cuda"
    if cuda:
        model = model.to(memory_format=torch.channels_last_3d)
    dataset = ClipDataset(
        rows,
        clip,
        boxes_paths={shard: boxes_path},
        flow_paths={shard: flow_path} if flow_path is not None else None,
    )
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        num_workers=workers,
        pin_memory=cuda,
        persistent_workers=False,
        prefetch_factor=4 if workers else None,
    )
    inputs = {"index": index_path, "weights": weights_path, "boxes": boxes_path}
    if flow_path is not None:
        inputs["flow"] = flow_path
    settings = {
        "stream": clip.stream,
        "arch": backbone.arch,
        "weights_checksum": file_checksum(weights_path),
        "num_frames": clip.num_frames,
        "frame_stride": clip.frame_stride,
        "crop_size": clip.crop_size,
        "resize_short": clip.resize_short,
        "boxes_backend": boxes_backend,
        "per_frame": clip.per_frame,
        "sampling": clip.sampling,
        "mean": clip.mean,
        "std": clip.std,
        "roi_size": ROI_SIZE,
        "spatial_scale": 1.0 / backbone.spatial_stride,
        "roi_aligned": True,
        **{key: value for key, value in asdict(backbone).items() if key != "arch"},
        **dict(extra_settings or {}),
    }
    t_box = clip.num_frames // 2
    counts = {"videos": 0, "dropped": 0}
    dropped: list[dict[str, str]] = []
    desc = f"features {clip.stream} {split} shard {int(shard):03d}"
    log.info("%s: %d videos on %s, batch %d, %d workers", desc, len(rows), dev, batch_size, workers)
    with shard_writer(output, "features", settings, inputs) as handle, torch.inference_mode():
        writer = FeatureShardWriter(handle, t_box, clip.per_frame)
        with tqdm(total=len(rows), desc=desc, unit="video") as bar:
            for batch in loader:
                failures = _failures(batch, split)
                dropped += failures
                counts["dropped"] += len(failures)
                keep = torch.tensor([not e for e in batch["error"]])
                if keep.any():
                    columns = _forward(model, batch, keep, clip, backbone, dev)
                    writer.append(columns)
                    counts["videos"] += int(keep.sum())
                bar.update(len(batch["video_id"]))
        record_shard_drops(handle, dropped)
    dataset.close()
    log.info("%s: %d videos written, %d dropped", desc, counts["videos"], counts["dropped"])
    return counts


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
        "label_index": batch["label_index"][keep].numpy().astype(np.int64),
        "global": pooled.half().cpu().numpy(),
        "roi": rois.half().cpu().numpy(),
        "boxes": boxes.cpu().numpy(),
        "mask": mask.cpu().numpy(),
    }


def _failures(batch, split: str) -> list[dict[str, str]]:
    rows = []
    for video_id, error in zip(batch["video_id"], batch["error"], strict=True):
        if error:
            log.warning("%s: dropped from features (%s)", video_id, error)
            rows.append(
                {"video_id": video_id, "split": split, "reason": error, "stage": "features"}
            )
    return rows
