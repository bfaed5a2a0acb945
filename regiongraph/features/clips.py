"""Clip loading for the backbone: frames (or flow) and boxes of one video, ready for I3D.

:class:`ClipDataset` reads a video's clip frames (chosen by
:func:`regiongraph.dataset.sampling.sample_clip_frames`, the call the boxes stage makes),
resizes the short side and crops, and maps the boxes of the boxes stage through the same
resize and crop. RGB clips stay uint8 until they reach the device (a quarter of the bytes
through the loader's queues); :func:`to_network_input` normalises them there. Flow clips are
de-quantised, rescaled and normalised in the worker (see
:func:`regiongraph.features.transforms.flow_to_input`).

Items are dicts with fixed keys: ``video_id``, ``label_index``, ``clip`` ``(C, T, S, S)``,
``boxes`` ``(T_box, K, 4)`` in crop pixels, ``mask`` ``(T_box, K)``, ``error`` (empty, or why
the video could not be read: the caller records it in ``index/dropped.csv``).

With ``jpeg_on_device`` (chosen on CUDA for RGB clips), workers only read the JPEG bytes of
the clip's frames and work out the crop from the JPEG header; :func:`decode_clips` then
decodes the whole batch on the GPU in one ``torchvision.io.decode_jpeg`` call (nvJPEG) and
resizes and crops there, so the host's JPEG decoding no longer sets the pace. Use
:func:`collate_clips` as the loader's ``collate_fn`` in either mode.

HDF5 handles are opened lazily in each worker process and never pickled.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass

import h5py
import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset, default_collate

from regiongraph.backbones import backbone_spec
from regiongraph.dataset.frames import (
    CorruptFrameError,
    decode_jpegs,
    frame_path,
    jpeg_size,
    read_frame_bytes,
    read_video_frames,
)
from regiongraph.dataset.sampling import ClipFrames, sample_clip_frames
from regiongraph.detect.storage import BOXES_STAGE, read_video_boxes
from regiongraph.features.transforms import (
    CropGeometry,
    flow_frame_indices,
    flow_to_input,
    geometry_fields,
    map_boxes,
    random_crop_geometry,
    resize_and_crop,
    resize_and_crop_flow,
    resize_and_crop_tensor,
    spatial_crop_geometry,
)
from regiongraph.flow.storage import FLOW_STAGE, read_flow
from regiongraph.io import open_shard, shard_settings
from regiongraph.models.i3d import STREAM_CHANNELS

log = logging.getLogger(__name__)

STREAMS = tuple(STREAM_CHANNELS)


class MissingFlowError(LookupError):
    """The flow shard has no flow for a video (the flow stage dropped it)."""


@dataclass(frozen=True)
class ClipSettings:
    """How a clip is sampled and transformed. ``training`` turns on the random parts.

    ``mean`` and ``std`` (RGB in 0..255; one number or one per channel) default to the
    backbone's own (:mod:`regiongraph.backbones`), and so do the box frames (``box_every``).
    """

    stream: str = "rgb"
    arch: str = "i3d_r50"
    num_frames: int = 32
    frame_stride: int = 2
    resize_short: int = 256
    crop_size: int = 224
    mean: float | tuple[float, ...] | None = None
    std: float | tuple[float, ...] | None = None
    per_frame: int = 10
    sampling: str = "uniform"
    views: int = 1  # evaluation: temporal views per video (config evaluate.views)
    crops: int = 1  # evaluation: spatial crops per view, 1 or 3 (config evaluate.crops)
    training: bool = False
    temporal_jitter: bool = True
    random_crop: bool = True
    seed: int = 0

    def __post_init__(self) -> None:
        spec = backbone_spec(self.arch)
        # frozen: the resolved normalisation is set once, here
        object.__setattr__(self, "mean", _per_channel(self.mean, spec.mean, "mean"))
        object.__setattr__(self, "std", _per_channel(self.std, spec.std, "std"))
        if self.stream not in STREAMS:
            raise ValueError(f"unknown stream {self.stream!r}; expected one of {STREAMS}")
        if self.training and (self.views, self.crops) != (1, 1):
            raise ValueError("training clips are one random view: views and crops must be 1")
        if self.crops not in (1, 3):
            raise ValueError(f"evaluate.crops must be 1 or 3, got {self.crops}")
        if self.crop_size > self.resize_short:
            raise ValueError(
                f"backbone.crop_size ({self.crop_size}) must not exceed backbone.resize_short "
                f"({self.resize_short})"
            )

    @property
    def box_every(self) -> int:
        """Box frames are every ``box_every``-th clip frame (the backbone's spec)."""
        return backbone_spec(self.arch).box_every


def _per_channel(value, default: tuple[float, ...], key: str) -> tuple[float, ...]:
    """``backbone.mean`` / ``std`` as one value per RGB channel; None is the backbone's own."""
    if value is None:
        return tuple(float(v) for v in default)
    values = (float(value),) * 3 if isinstance(value, int | float) else tuple(float(v) for v in value)
    if len(values) != 3 or (key == "std" and min(values) <= 0):
        raise ValueError(f"backbone.{key} must be one number or three (RGB), positive for std; got {value!r}")
    return values


class ClipDataset(Dataset):
    """One clip per row of ``videos`` (index rows: ``video_id, label_index, n_frames,
    frame_dir, shard``) and view: ``views x crops`` items per video in evaluation (item ``i``
    is video ``i // (views * crops)``, temporal view ``(i // crops) % views``, crop
    ``i % crops``), one random clip in training. Boxes and flow come from the shards named per
    index shard number."""

    def __init__(
        self,
        videos: pd.DataFrame,
        settings: ClipSettings,
        boxes_paths: Mapping[int, str | os.PathLike] | None = None,
        flow_paths: Mapping[int, str | os.PathLike] | None = None,
        jpeg_on_device: bool = False,
    ):
        self.videos = videos.reset_index(drop=True)
        self.settings = settings
        self.jpeg_on_device = bool(jpeg_on_device) and settings.stream == "rgb"
        self.boxes_paths = {int(k): str(v) for k, v in (boxes_paths or {}).items()}
        self.flow_paths = {int(k): str(v) for k, v in (flow_paths or {}).items()}
        if settings.stream == "flow":
            missing = sorted(set(self.videos["shard"].astype(int)) - set(self.flow_paths))
            if missing:
                raise ValueError(f"flow stream: no flow shard given for index shards {missing}")
        self.epoch = 0
        self._handles: dict[str, h5py.File] = {}

    @property
    def views_per_video(self) -> int:
        return self.settings.views * self.settings.crops

    def __len__(self) -> int:
        return len(self.videos) * self.views_per_video

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_handles"] = {}  # each worker opens its own read-only handles
        return state

    def set_epoch(self, epoch: int) -> None:
        """Training: the random offsets and crops of epoch ``epoch`` (reproducible)."""
        self.epoch = int(epoch)

    def _handle(self, path: str, stage: str) -> h5py.File:
        if path not in self._handles:
            self._handles[path] = open_shard(path, stage=stage)
        return self._handles[path]

    def close(self) -> None:
        for handle in self._handles.values():
            handle.close()
        self._handles.clear()

    def clip_frames(self, n_frames: int, rng: np.random.Generator | None, view: int = 0) -> ClipFrames:
        """Training (``rng``): random offsets, unless ``temporal_jitter`` is off; else view
        ``view`` of the evaluation views."""
        s = self.settings
        jitter = rng if s.temporal_jitter else None
        return sample_clip_frames(
            n_frames, s.num_frames, s.frame_stride, s.box_every, s.sampling, view, s.views, jitter
        )

    def geometry(
        self, height: int, width: int, rng: np.random.Generator | None, crop: int = 0
    ) -> CropGeometry:
        """Training: a random crop (never a flip: labels say "left to right"); else crop
        ``crop`` of the evaluation crops."""
        s = self.settings
        if rng is not None and s.random_crop:
            return random_crop_geometry(height, width, s.resize_short, s.crop_size, rng)
        return spatial_crop_geometry(height, width, s.resize_short, s.crop_size, crop, s.crops)

    def __getitem__(self, i: int) -> dict:
        s = self.settings
        video, view = divmod(i, self.views_per_video)
        temporal, crop = divmod(view, s.crops)
        row = self.videos.iloc[video]
        video_id = str(row["video_id"])
        n_frames = int(row["n_frames"])
        rng = np.random.default_rng([s.seed, self.epoch, video]) if s.training else None
        clip = self.clip_frames(n_frames, rng, temporal)
        t_box = s.num_frames // s.box_every
        item = {
            "video_id": video_id,
            "label_index": int(row.get("label_index", -1)),
            "view": view,
            "error": "",
            "boxes": torch.zeros(t_box, s.per_frame, 4),
            "mask": torch.zeros(t_box, s.per_frame, dtype=torch.bool),
        }
        try:
            if self.jpeg_on_device:
                geometry = self._jpeg_item(item, row["frame_dir"], clip, rng, crop)
            elif s.stream == "rgb":
                frames = read_video_frames(row["frame_dir"], clip.frames)
                geometry = self.geometry(frames.shape[1], frames.shape[2], rng, crop)
                array = resize_and_crop(frames, geometry)
                item["clip"] = torch.from_numpy(array).permute(3, 0, 1, 2).contiguous()
            else:
                path = self.flow_paths[int(row["shard"])]
                handle = self._handle(path, FLOW_STAGE)
                if video_id not in handle:
                    raise MissingFlowError(f"{path}: no flow for video {video_id!r}")
                flow, _ = read_flow(handle, video_id, flow_frame_indices(clip.frames, n_frames))
                geometry = self.geometry(flow.shape[1], flow.shape[2], rng, crop)
                array = flow_to_input(
                    resize_and_crop_flow(flow, geometry),
                    shard_settings(handle)["bound"],
                    sum(s.std) / len(s.std),
                )
                item["clip"] = torch.from_numpy(array).permute(3, 0, 1, 2).contiguous()
        except (CorruptFrameError, MissingFlowError) as error:
            item["error"] = str(error)
            if self.jpeg_on_device:
                item.update(clip=torch.zeros(0, dtype=torch.uint8), jpeg=[], jpeg_paths=[])
                item.update(jpeg_order=torch.zeros(s.num_frames, dtype=torch.int64))
                item["geometry"] = torch.zeros(7, dtype=torch.int64)
                return item
            dtype = torch.uint8 if s.stream == "rgb" else torch.float32
            item["clip"] = torch.zeros(
                STREAM_CHANNELS[s.stream], s.num_frames, s.crop_size, s.crop_size, dtype=dtype
            )
            return item
        if self.boxes_paths:
            boxes, mask = self.read_boxes(row, clip, geometry)
            item["boxes"], item["mask"] = torch.from_numpy(boxes), torch.from_numpy(mask)
        return item

    def _jpeg_item(self, item: dict, frame_dir, clip: ClipFrames, rng, crop: int) -> CropGeometry:
        """Device decoding: the clip's distinct frames as JPEG bytes, which of them each clip
        frame is, and the crop (from the first frame's header)."""
        distinct, order = np.unique(np.asarray(clip.frames, dtype=np.int64), return_inverse=True)
        paths = [str(frame_path(frame_dir, int(f))) for f in distinct]
        datas = [read_frame_bytes(path) for path in paths]
        try:
            height, width = jpeg_size(datas[0])
        except ValueError as error:
            raise CorruptFrameError(paths[0], str(error)) from None
        geometry = self.geometry(height, width, rng, crop)
        item.update(clip=torch.zeros(0, dtype=torch.uint8), jpeg=datas, jpeg_paths=paths)
        item["jpeg_order"] = torch.from_numpy(order.reshape(-1).astype(np.int64))
        item["geometry"] = torch.tensor(geometry_fields(geometry), dtype=torch.int64)
        return geometry

    def read_boxes(self, row, clip: ClipFrames, geometry: CropGeometry):
        """The video's boxes mapped into crop pixels; none (mask all false) when absent."""
        found = read_video_boxes(
            self._handle(self.boxes_paths[int(row["shard"])], BOXES_STAGE),
            str(row["video_id"]),
            clip.box_frames,
            self.settings.per_frame,
            geometry.height,
            geometry.width,
        )
        return map_boxes(found.boxes, found.mask, geometry)


def collate_clips(items: list[dict]) -> dict:
    """The loader's ``collate_fn``: torch's default collation, with the per-clip lists of JPEG
    bytes (device decoding) kept as lists."""
    jpeg = [item.pop("jpeg", None) for item in items]
    paths = [item.pop("jpeg_paths", None) for item in items]
    batch = default_collate(items)
    if any(j is not None for j in jpeg):
        batch["jpeg"], batch["jpeg_paths"] = jpeg, paths
    return batch


def decode_clips(batch: dict, device: torch.device | str) -> dict:
    """Device decoding: turn a collated batch's JPEG bytes into ``batch["clip"]``, uint8
    ``(B, 3, T, S, S)`` on ``device``; a clip with a frame that does not decode gets its
    ``error`` set (and a zero clip), as in the host path. A batch without JPEG bytes (host
    decoding) is returned as it is."""
    if "jpeg" not in batch:
        return batch
    errors = list(batch["error"])
    decoded: list[list[torch.Tensor] | None] = []
    flat = [d for clip in batch["jpeg"] for d in clip]
    flat_paths = [p for clip in batch["jpeg_paths"] for p in clip]
    try:
        images = decode_jpegs(flat, device, paths=flat_paths)
        start = 0
        for clip in batch["jpeg"]:
            decoded.append(images[start : start + len(clip)])
            start += len(clip)
    except CorruptFrameError:  # find the clips it belongs to; the others still count
        for b, (clip, paths) in enumerate(zip(batch["jpeg"], batch["jpeg_paths"], strict=True)):
            try:
                decoded.append(decode_jpegs(clip, device, paths=paths))
            except CorruptFrameError as error:
                errors[b] = str(error)
                decoded.append(None)
    sizes = batch["geometry"][:, 6].tolist()
    frames = batch["jpeg_order"].shape[1]
    crop = max(sizes) if sizes else 0
    out = torch.zeros(len(errors), 3, frames, crop, crop, dtype=torch.uint8, device=device)
    for b, images in enumerate(decoded):
        if errors[b] or not images:
            continue
        geometry = CropGeometry(*batch["geometry"][b].tolist())
        distinct = resize_and_crop_tensor(same_size(images, geometry), geometry)
        out[b] = distinct[:, batch["jpeg_order"][b].to(distinct.device)]
    batch["clip"], batch["error"] = out, errors
    return batch


def same_size(images: list[torch.Tensor], geometry: CropGeometry) -> torch.Tensor:
    """Decoded ``(C, H, W)`` frames stacked; a frame of another size than the first (a few
    SSv1 videos change size midway) is first resized to it, as the host path does."""
    size = (geometry.height, geometry.width)
    if all(tuple(image.shape[1:]) == size for image in images):
        return torch.stack(images)
    return torch.stack([
        image if tuple(image.shape[1:]) == size
        else F.interpolate(image[None].float(), size=size, mode="bilinear", align_corners=False)[0]
        .round_().clamp_(0, 255).to(torch.uint8)
        for image in images
    ])


def to_network_input(
    clip: torch.Tensor,
    mean: float | tuple[float, ...],
    std: float | tuple[float, ...],
    device: torch.device | str,
) -> torch.Tensor:
    """Move a batch of clips ``(B, C, T, H, W)`` to ``device``; uint8 RGB becomes
    ``(x - mean) / std`` float32, per channel when ``mean`` and ``std`` are sequences."""
    clip = clip.to(device, non_blocking=True)
    if clip.dtype == torch.uint8:
        shape = (-1, 1, 1, 1)
        mean = torch.as_tensor(mean, dtype=torch.float32, device=clip.device).reshape(shape)
        std = torch.as_tensor(std, dtype=torch.float32, device=clip.device).reshape(shape)
        return (clip.float() - mean) / std
    return clip.float()
