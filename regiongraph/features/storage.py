"""Feature shards, ``features/{stream}/{split}/shard-{k}.h5``: the format in one place.

Columnar per shard, one row per clip, chunked one row per chunk (docs/formats.md):
``video_id (N,)``, ``view (N,)`` (0 for the single clip of a train video; ``0 .. views * crops
- 1`` for the evaluation views of a validation or test video, a video's rows consecutive),
``label_index (N,)``, ``global (N, C)`` float16 (``C``: the backbone's channels, recorded as
``channels``), ``roi (N, T, K, C)`` float16, ``boxes
(N, T, K, 4)`` float32 in the coordinates of the network input, ``mask (N, T, K)``. The root
``settings`` record what produced them (:func:`feature_settings`); a reader names the values it
needs (:func:`expected_settings`) and :func:`open_feature_shard` refuses a shard that disagrees.
Every shard feeding one head must also agree with the others on :data:`SHARED_SETTINGS`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import asdict
from typing import Any

import h5py
import numpy as np

from regiongraph.io import open_shard

FEATURES_STAGE = "features"
FEATURE_ARRAYS = ("global", "roi", "boxes", "mask")
ROI_SIZE = 7  # RoIAlign output cells per side, max-pooled to one vector per box
# Settings that every shard feeding one head shares (train, validation and test alike):
# features from other weights or sampling are other inputs to the same head.
SHARED_SETTINGS = (
    "stream",
    "arch",
    "weights_checksum",
    "num_frames",
    "frame_stride",
    "crop_size",
    "resize_short",
    "boxes_backend",
    "per_frame",
)


def feature_settings(
    clip, backbone, weights_checksum: str, boxes_backend: str, spatial_scale: float
) -> dict[str, Any]:
    """The root ``settings`` of a shard made with ``clip`` (:class:`ClipSettings`) and
    ``backbone`` (:class:`BackboneSettings`)."""
    return {
        "stream": clip.stream,
        "arch": backbone.arch,
        "weights_checksum": weights_checksum,
        "num_frames": clip.num_frames,
        "frame_stride": clip.frame_stride,
        "crop_size": clip.crop_size,
        "resize_short": clip.resize_short,
        "boxes_backend": boxes_backend,
        "per_frame": clip.per_frame,
        "sampling": clip.sampling,
        "views": clip.views,
        "crops": clip.crops,
        "mean": clip.mean,
        "std": clip.std,
        "roi_size": ROI_SIZE,
        "spatial_scale": spatial_scale,
        "temporal_stride": backbone.temporal_stride,
        "channels": backbone.channels,
        "box_every": clip.box_every,
        "roi_aligned": True,
        **{key: value for key, value in asdict(backbone).items() if key != "arch"},
    }


def expected_settings(
    clip: Mapping[str, Any], backbone: Mapping[str, Any], boxes_backend: str, per_frame: int
) -> dict[str, Any]:
    """What a head's shards must record, from the config's ``backbone`` values (``clip``: the
    clip keys, ``backbone``: the architecture keys) and the boxes' backend and count."""
    return {
        "arch": backbone["arch"],
        "num_frames": clip["num_frames"],
        "frame_stride": clip["frame_stride"],
        "crop_size": clip["crop_size"],
        "resize_short": clip["resize_short"],
        "boxes_backend": boxes_backend,
        "per_frame": per_frame,
    }


def open_feature_shard(path: str | os.PathLike, expect: Mapping[str, Any] | None = None):
    """A finished features shard, read-only, checked against ``expect``."""
    return open_shard(path, stage=FEATURES_STAGE, expect=expect)


class FeatureShardWriter:
    """Columnar datasets of one features shard, grown a batch at a time, chunked per video."""

    def __init__(self, handle: h5py.File, t_box: int, per_frame: int, channels: int):
        self.handle = handle
        shapes = {
            "video_id": ((), h5py.string_dtype()),
            "view": ((), np.int64),
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


def read_video(dataset: h5py.Dataset, row: int, out: np.ndarray, slot: int) -> None:
    """Copy ``dataset[row]`` into ``out[slot]``.

    When a chunk holds exactly one video, unfiltered (this format's layout), its raw bytes are
    the array: read the chunk directly, skipping HDF5's selection machinery (about 3x faster
    per video). Otherwise, or for a chunk never written, use a normal read.
    """
    if (
        dataset.chunks == (1, *dataset.shape[1:])
        and not dataset.id.get_create_plist().get_nfilters()
    ):
        try:
            _, raw = dataset.id.read_direct_chunk((row,) + (0,) * (dataset.ndim - 1))
        except (OSError, KeyError, ValueError):
            raw = None
        if raw is not None and len(raw) == out[slot].nbytes:
            out[slot] = np.frombuffer(raw, dtype=dataset.dtype).reshape(out.shape[1:])
            return
    dataset.read_direct(out, np.s_[row], np.s_[slot])
