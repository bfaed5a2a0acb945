"""Videos from the feature shards, read lazily one video at a time.

``features/{stream}/{split}/shard-{k}.h5`` (docs/formats.md) is columnar: ``video_id (N,)``,
``label_index (N,)``, ``global (N, C)``, ``roi (N, T, K, C)``, ``boxes (N, T, K, 4)``,
``mask (N, T, K)``, chunked per video. :class:`FeatureShardDataset` reads only the ids and
labels up front (a few bytes per video), checks every shard's recorded settings against what
the caller expects (the backbone and box settings of the config) and against each other, and
reads one video's arrays per item through an h5py handle opened once per process (so data
loader workers each have their own) and cached.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler, default_collate

from regiongraph.features.storage import (
    FEATURE_ARRAYS,
    SHARED_SETTINGS,
    open_feature_shard,
    read_video,
)
from regiongraph.io import ShardMismatchError, content_digest, shard_settings

log = logging.getLogger(__name__)

CACHE_POLICIES = ("auto", "always", "never")


def _decode_ids(values: np.ndarray) -> list[str]:
    return [v.decode() if isinstance(v, bytes) else str(v) for v in values]


class FeatureShardDataset(Dataset):
    """One item per video of the given shards: a dict with fixed keys.

    ``video_id`` (str), ``label`` (int, -1 for the test split), ``global`` ``(C,)``, ``roi``
    ``(T, K, C)`` (float16 as stored), ``boxes`` ``(T, K, 4)`` float32 and ``mask`` ``(T, K)``
    bool. ``expect`` maps setting names to required values (``open_shard`` raises
    :class:`ShardMismatchError` naming shard and config values); ``require_labels`` refuses
    videos with label -1 (train and validation); ``regions=False`` reads only ``global``.
    A batch of indices is read at once by :meth:`__getitems__`, straight into stacked arrays.
    """

    def __init__(
        self,
        paths: Sequence[str | os.PathLike],
        expect: Mapping[str, Any] | None = None,
        require_labels: bool = True,
        regions: bool = True,
    ) -> None:
        self.paths = [Path(p) for p in paths]
        # The global baseline needs no region arrays: leave them on disk (a video's ``roi`` is
        # 160 times the size of its ``global``).
        self.arrays = FEATURE_ARRAYS if regions else ("global",)
        self.dtypes: dict[str, np.dtype] = {}
        self.video_ids: list[str] = []
        labels: list[np.ndarray] = []
        rows: list[np.ndarray] = []
        self.settings: dict[str, Any] = {}
        self.shapes: dict[str, tuple[int, ...]] = {}
        self.digests: list[str] = []  # each shard's content digest, in order
        reference: Path | None = None
        for shard, path in enumerate(self.paths):
            with open_feature_shard(path, expect) as handle:
                settings = shard_settings(handle)
                missing = [
                    name
                    for name in ("video_id", "label_index", *FEATURE_ARRAYS)
                    if name not in handle
                ]
                if missing:
                    raise ValueError(f"{path}: feature shard lacks dataset(s) {missing}")
                ids = _decode_ids(handle["video_id"][()])
                shard_labels = handle["label_index"][()].astype(np.int64)
                shapes = {name: tuple(handle[name].shape[1:]) for name in FEATURE_ARRAYS}
                dtypes = {name: handle[name].dtype for name in FEATURE_ARRAYS}
                # shards from before digests were recorded: compute it (reads the file once)
                self.digests.append(
                    str(handle.attrs["content_digest"])
                    if "content_digest" in handle.attrs
                    else content_digest(handle)
                )
            if reference is None:
                reference, self.settings, self.shapes, self.dtypes = path, settings, shapes, dtypes
            else:
                self._check_same(reference, path, settings, shapes)
            if require_labels and len(shard_labels) and shard_labels.min() < 0:
                video = ids[int(np.argmin(shard_labels))]
                raise ValueError(
                    f"{path}: video {video!r} has no label (label_index -1) in a labelled split"
                )
            self.video_ids.extend(ids)
            labels.append(shard_labels)
            rows.append(np.stack([np.full(len(ids), shard), np.arange(len(ids))], axis=1))
        self.labels = np.concatenate(labels) if labels else np.zeros(0, dtype=np.int64)
        self._rows = np.concatenate(rows) if rows else np.zeros((0, 2), dtype=np.int64)
        self._handles: dict[int, dict[str, h5py.Dataset]] = {}
        self._pid = os.getpid()
        self._memory: dict[str, np.ndarray] | None = None  # cache_in_memory's arrays
        self._offsets: np.ndarray | None = None

    def _check_same(
        self,
        reference: Path,
        path: Path,
        settings: dict[str, Any],
        shapes: dict[str, tuple[int, ...]],
    ) -> None:
        diffs = [
            f"{key}: {self.settings.get(key)!r} in {reference} but {settings.get(key)!r} in {path}"
            for key in SHARED_SETTINGS
            if settings.get(key) != self.settings.get(key)
        ]
        if diffs:
            raise ShardMismatchError("feature shards disagree: " + "; ".join(diffs))
        if shapes != self.shapes:
            raise ShardMismatchError(
                f"feature shards disagree on array shapes: {self.shapes} in {reference} but {shapes} in {path}"
            )

    @property
    def num_frames(self) -> int:
        return self.shapes["roi"][0] if self.shapes else 0

    @property
    def boxes_per_frame(self) -> int:
        return self.shapes["roi"][1] if self.shapes else 0

    @property
    def channels(self) -> int:
        return self.shapes["global"][0] if self.shapes else 0

    def __len__(self) -> int:
        return len(self.video_ids)

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_handles"] = {}  # h5py handles never cross a process boundary
        return state

    def _arrays(self, shard: int) -> dict[str, h5py.Dataset]:
        if self._pid != os.getpid():  # a forked data loader worker: open its own handles
            self._handles, self._pid = {}, os.getpid()
        arrays = self._handles.get(shard)
        if arrays is None:
            handle = h5py.File(self.paths[shard], "r")
            arrays = {name: handle[name] for name in self.arrays}
            self._handles[shard] = arrays
        return arrays

    @property
    def nbytes(self) -> int:
        """What the arrays this dataset reads take in memory."""
        return len(self) * sum(
            int(np.prod(self.shapes[name])) * self.dtypes[name].itemsize for name in self.arrays
        )

    def cache_in_memory(self, policy: str = "auto", what: str = "features") -> bool:
        """Read every array into memory once (``gcn.cache_features``): ``always``, ``never``,
        or ``auto`` when they take under half the memory available now. Epochs after the
        first then read nothing from disk. Logs the check; returns whether it cached."""
        if policy not in CACHE_POLICIES:
            raise ValueError(f"gcn.cache_features must be one of {CACHE_POLICIES}, got {policy!r}")
        available = available_memory()
        fits = available is not None and self.nbytes < available // 2
        cache = policy == "always" or (policy == "auto" and fits)
        log.info(
            "%s features: %.2f GB, %s GB available: %s (gcn.cache_features: %s)",
            what,
            self.nbytes / 1e9,
            "?" if available is None else f"{available / 1e9:.1f}",
            "kept in memory" if cache else "read from disk each epoch",
            policy,
        )
        if cache:
            self._memory = {
                name: np.concatenate(
                    [self._arrays(shard)[name][()] for shard in range(len(self.paths))]
                )
                if self.paths
                else np.zeros((0, *self.shapes[name]), self.dtypes[name])
                for name in self.arrays
            }
            self._offsets = np.cumsum([0, *np.bincount(self._rows[:, 0], minlength=len(self.paths))])
        return cache

    def _read(self, indices: Sequence[int]) -> dict[str, Any]:
        """The videos at ``indices`` as one batch: arrays stacked on a first axis."""
        rows = self._rows[np.asarray(indices, dtype=np.int64)]
        if self._memory is not None:
            flat = self._offsets[rows[:, 0]] + rows[:, 1]
            batch = {name: values[flat] for name, values in self._memory.items()}
        else:
            batch = {
                name: np.empty((len(rows), *self.shapes[name]), dtype=self.dtypes[name])
                for name in self.arrays
            }
            for slot, (shard, row) in enumerate(rows):
                for name, dataset in self._arrays(int(shard)).items():
                    read_video(dataset, int(row), batch[name], slot)
        out: dict[str, Any] = {
            "video_id": [self.video_ids[i] for i in indices],
            "label": torch.from_numpy(self.labels[np.asarray(indices, dtype=np.int64)]),
        }
        for name, values in batch.items():
            out[name] = torch.from_numpy(values)
        return out

    def __getitem__(self, index: int) -> dict[str, Any]:
        batch = self._read([index])
        item = {name: value[0] for name, value in batch.items()}
        item["label"] = int(item["label"])
        return item

    def __getitems__(self, indices: Sequence[int]) -> dict[str, Any]:
        """A whole batch at once (``DataLoader`` calls this), read straight into its arrays."""
        return self._read(indices)

    def close(self) -> None:
        for arrays in self._handles.values():
            next(iter(arrays.values())).file.close()
        self._handles = {}


def available_memory() -> int | None:
    """Bytes of memory available to new allocations now (Linux ``MemAvailable``), if known."""
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def feature_statistics(
    dataset: FeatureShardDataset, max_videos: int = 256, batch_size: int = 32
) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Per-channel ``(mean, std)`` of the ``global`` features and, when the dataset reads
    regions, of the valid ``roi`` nodes, over up to ``max_videos`` evenly spaced videos."""
    if len(dataset) == 0:
        raise ValueError("no videos to compute feature statistics on")
    chosen = np.unique(
        np.linspace(0, len(dataset) - 1, min(max_videos, len(dataset))).round().astype(int)
    )
    sums: dict[str, list[torch.Tensor | float]] = {}

    def add(name: str, rows: torch.Tensor) -> None:
        rows = rows.double()
        total = sums.setdefault(name, [0.0, 0.0, 0.0])
        total[0] += rows.sum(0)
        total[1] += (rows * rows).sum(0)
        total[2] += rows.shape[0]

    for start in range(0, len(chosen), batch_size):
        batch = dataset.__getitems__(chosen[start : start + batch_size].tolist())
        add("global", batch["global"])
        if "roi" in batch:
            add("roi", batch["roi"][batch["mask"].bool()])
    statistics = {}
    for name, (total, squares, count) in sums.items():
        if count == 0:  # no valid box in the sample: leave the nodes unscaled
            channels = dataset.channels
            statistics[name] = (torch.zeros(channels), torch.ones(channels))
            continue
        mean = total / count
        variance = (squares / count - mean * mean).clamp_min(0)
        statistics[name] = (mean.float(), variance.sqrt().float())
    return statistics


def collate_batch(data: Any) -> Any:
    """Batches from :meth:`FeatureShardDataset.__getitems__` are already stacked."""
    return data if isinstance(data, dict) else default_collate(data)


class EpochShuffle(Sampler[int]):
    """A random order of ``size`` indices that is a pure function of ``seed`` and the epoch.

    ``set_epoch(n)`` before each epoch (as with ``DistributedSampler``): a resumed run sees
    the same batches as an uninterrupted one, and a loader with persistent workers can be
    kept across epochs.
    """

    def __init__(self, size: int, seed: int = 0) -> None:
        self.size, self.seed, self.epoch = size, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        return iter(torch.randperm(self.size, generator=generator).tolist())

    def __len__(self) -> int:
        return self.size


def feature_loader(
    dataset: FeatureShardDataset,
    batch_size: int,
    shuffle: bool = False,
    seed: int = 0,
    num_workers: int = 0,
    pin_memory: bool = False,
) -> DataLoader:
    """Batches (dicts of stacked tensors, ``video_id`` a list) in dataset order, or shuffled by
    an :class:`EpochShuffle` sampler (call ``loader.sampler.set_epoch(n)`` each epoch).
    Worker processes, if any, persist across epochs."""
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=EpochShuffle(len(dataset), seed) if shuffle else None,
        collate_fn=collate_batch,
        num_workers=num_workers,
        pin_memory=pin_memory,
        persistent_workers=num_workers > 0,
        # its own generator: the loader's worker seeds never draw from the global RNG, which
        # belongs to the heads' dropout (see regiongraph.train.loop.own_rng)
        generator=torch.Generator().manual_seed(seed),
    )


def batch_to_device(batch: Mapping[str, Any], device: torch.device) -> dict[str, Any]:
    """Move the tensors of a batch to ``device`` (features become float32 there)."""
    non_blocking = device.type == "cuda"
    moved: dict[str, Any] = {}
    for key, value in batch.items():
        if isinstance(value, torch.Tensor):
            value = value.to(device, non_blocking=non_blocking)
            if key in ("global", "roi", "boxes"):
                value = value.float()
            elif key == "mask":
                value = value.bool()
        moved[key] = value
    return moved
