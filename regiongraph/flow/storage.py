"""Flow shards: ``/{video_id}/flow`` uint8 ``(n_frames - 1, H, W, 2)`` per video (docs/formats.md).

``flow[i]`` is the TV-L1 flow from frame ``i`` to frame ``i + 1`` in (dx, dy) order, chunked
one frame per chunk (a clip reads a few frames without decompressing the rest), gzip. The
root ``settings`` attribute (written by :func:`regiongraph.io.shard_writer`) holds the
backend, the bound and the TV-L1 parameters; :func:`read_flow` de-quantises with that bound.
"""

from __future__ import annotations

import os
import zlib
from collections.abc import Sequence
from concurrent.futures import Executor

import h5py
import numpy as np

from regiongraph.flow.quantize import dequantize_flow
from regiongraph.io import open_shard, shard_settings

FLOW_STAGE = "flow"
GZIP_LEVEL = 4  # quantised flow is smooth: level 4 is within a few % of 9 at a third of the time


def check_video_id(video_id: str) -> str:
    video_id = str(video_id)
    if not video_id or "/" in video_id or video_id in (".", ".."):
        raise ValueError(f"video id {video_id!r} cannot name an HDF5 group")
    return video_id


def _deflate_all(frames: np.ndarray) -> list[bytes]:
    return [zlib.compress(np.ascontiguousarray(frame).data, GZIP_LEVEL) for frame in frames]


def deflate_frames(quantized: np.ndarray, pool: Executor | None = None) -> list[bytes]:
    """One zlib stream per frame (HDF5's gzip filter format), in a few tasks of ``pool``."""
    if pool is None or len(quantized) < 8:
        return _deflate_all(quantized)
    parts = np.array_split(np.arange(len(quantized)), min(8, len(quantized) // 4))
    return [c for part in pool.map(_deflate_all, [quantized[p] for p in parts]) for c in part]


def write_video_flow(
    handle: h5py.File, video_id: str, quantized: np.ndarray, pool: Executor | None = None
) -> h5py.Dataset:
    """Store one video's quantised flow ``(T - 1, H, W, 2)`` uint8 under ``/{video_id}/flow``.

    Each frame's chunk is deflated here (by ``pool``'s threads when given: zlib releases the
    GIL, so a GPU-fed stage is not held to one core's gzip rate) and written as it is, which
    is what HDF5's gzip filter stores and reads back.
    """
    video_id = check_video_id(video_id)
    quantized = np.asarray(quantized)
    if quantized.dtype != np.uint8 or quantized.ndim != 4 or quantized.shape[-1] != 2:
        raise ValueError(
            f"video {video_id}: flow must be uint8 (T-1, H, W, 2), got {quantized.dtype} {quantized.shape}"
        )
    if quantized.shape[0] < 1:
        raise ValueError(f"video {video_id}: no flow frames to store")
    group = handle.create_group(video_id)
    dataset = group.create_dataset(
        "flow",
        shape=quantized.shape,
        dtype=np.uint8,
        chunks=(1, *quantized.shape[1:]),
        compression="gzip",
        compression_opts=GZIP_LEVEL,
    )
    for i, chunk in enumerate(deflate_frames(quantized, pool)):
        dataset.id.write_direct_chunk((i, 0, 0, 0), chunk)
    group.attrs["n_frames"] = quantized.shape[0] + 1
    return dataset


def read_flow(
    source: str | os.PathLike | h5py.File,
    video_id: str,
    frames: Sequence[int] | np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """De-quantised flow of one video: float32 ``(len(frames), H, W, 2)`` and the frame indices.

    ``frames`` are 0-based indices ``i`` of flow fields (frame ``i`` to ``i + 1``; valid
    ``0 .. n_frames - 2``), in any order and with repeats (looped clips); None reads all.
    ``source`` is a shard path (opened with :func:`regiongraph.io.open_shard`, which refuses
    an incomplete shard) or an open handle.
    """
    if isinstance(source, h5py.File):
        return _read_flow(source, video_id, frames)
    with open_shard(source, stage=FLOW_STAGE) as handle:
        return _read_flow(handle, video_id, frames)


def _read_flow(handle: h5py.File, video_id: str, frames) -> tuple[np.ndarray, np.ndarray]:
    video_id = check_video_id(video_id)
    if video_id not in handle:
        raise KeyError(f"{handle.filename}: no flow for video {video_id!r}")
    dataset = handle[video_id]["flow"]
    bound = shard_settings(handle)["bound"]
    n = dataset.shape[0]
    if frames is None:
        indices = np.arange(n, dtype=np.int64)
        quantized = dataset[()]
    else:
        indices = np.asarray(frames, dtype=np.int64).reshape(-1)
        bad = indices[(indices < 0) | (indices >= n)]
        if bad.size:
            raise IndexError(
                f"{handle.filename}: video {video_id!r} has flow frames 0..{n - 1}, "
                f"asked for {bad.tolist()}"
            )
        # h5py reads increasing unique indices; expand repeats and order afterwards
        unique, inverse = np.unique(indices, return_inverse=True)
        quantized = dataset[unique.tolist()][inverse] if unique.size else dataset[:0]
    return dequantize_flow(quantized, bound), indices
