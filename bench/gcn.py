"""Training time of the GCN heads per epoch: every head in one pass vs one job per head.

Writes a temporary features shard in the docs/formats.md layout with realistic sizes (160
nodes per video: 16 feature frames x 10 boxes, 2048 fp16 channels, chunked one video per
chunk as the features stage writes it), then measures, in the same run and on the same
device, one training epoch of the configured heads (``--models``) done

- **separately**: one pass over the shard per head, each reading every batch from disk (what
  one Snakemake job per head did);
- **in one pass**: :func:`regiongraph.train.loop.train_heads_one_epoch`, each batch read once
  and stepping every head (what the ``train_model`` job does now);
- **in one pass, features in memory**: the same after ``cache_in_memory`` (``gcn.cache_features``:
  epochs after the first read nothing from disk);
- **compute only**: the heads' steps on batches already on the device, the ceiling.

Prints a markdown table of seconds per epoch and the ratio to "separately"; the compute-only
row gives the fraction of the ceiling each setup reaches (goal on a GPU: one pass at least 0.7
of compute only)::

    .venv/bin/python bench/gcn.py                  # CPU: 1 torch thread, small counts
    .venv/bin/python bench/gcn.py --videos 512 --batch-size 32 --threads 8 --workers 4
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np
import torch

from regiongraph.gpus import resolve_device
from regiongraph.io import shard_writer
from regiongraph.train.data import FeatureShardDataset, batch_to_device, feature_loader
from regiongraph.train.loop import (
    Head,
    TrainSettings,
    _architecture,
    _new_run,
    train_heads_one_epoch,
)

FRAMES, PER_FRAME, CHANNELS, CLASSES = 16, 10, 2048, 174


def write_shard(path: Path, videos: int, seed: int = 0) -> None:
    """A features shard of random features, written a few videos at a time."""
    rng = np.random.default_rng(seed)
    settings = {"stream": "rgb", "arch": "i3d_r50", "num_frames": 32, "crop_size": 224}
    with shard_writer(path, "features", settings) as handle:
        handle.create_dataset(
            "video_id",
            data=np.array([f"v{i}" for i in range(videos)], dtype=object),
            dtype=h5py.string_dtype(),
        )
        handle.create_dataset("label_index", data=rng.integers(0, CLASSES, videos))
        arrays = {
            "global": ((CHANNELS,), np.float16),
            "roi": ((FRAMES, PER_FRAME, CHANNELS), np.float16),
            "boxes": ((FRAMES, PER_FRAME, 4), np.float32),
            "mask": ((FRAMES, PER_FRAME), bool),
        }
        for name, (shape, dtype) in arrays.items():
            handle.create_dataset(name, shape=(videos, *shape), dtype=dtype, chunks=(1, *shape))
        for start in range(0, videos, 16):
            n = min(16, videos - start)
            handle["global"][start : start + n] = rng.normal(size=(n, CHANNELS)).astype(np.float16)
            handle["roi"][start : start + n] = rng.normal(
                size=(n, FRAMES, PER_FRAME, CHANNELS)
            ).astype(np.float16)
            corner = rng.uniform(0, 180, size=(n, FRAMES, PER_FRAME, 2))
            size = rng.uniform(10, 60, size=(n, FRAMES, PER_FRAME, 2))
            handle["boxes"][start : start + n] = np.concatenate([corner, corner + size], -1).astype(
                np.float32
            )
            handle["mask"][start : start + n] = rng.random((n, FRAMES, PER_FRAME)) > 0.1


def _heads(models, dataset: FeatureShardDataset, batch_size: int, device) -> list[Head]:
    heads = []
    for name in models:
        settings = TrainSettings(model=name, batch_size=batch_size, epochs=1, standardise=False)
        architecture = _architecture(settings, dataset, CLASSES)
        heads.append(Head(settings, Path("."), architecture, {}, {}, _new_run(settings, architecture, dataset, device)))
    return heads


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _epoch(heads, loader, device) -> float:
    """Seconds of one epoch of ``heads`` over ``loader`` (after a warm-up of two batches)."""
    loader.sampler.set_epoch(0)
    warm_up = [batch for _, batch in zip(range(2), loader, strict=False)]
    train_heads_one_epoch(heads, warm_up, device, 0)
    loader.sampler.set_epoch(1)
    _sync(device)
    started = time.perf_counter()
    train_heads_one_epoch(heads, loader, device, 1)
    _sync(device)
    return time.perf_counter() - started


def _loader(dataset, batch_size, workers, device):
    return feature_loader(
        dataset, batch_size, shuffle=True, seed=2, num_workers=workers, pin_memory=device.type == "cuda"
    )


def compute_only(models, dataset, batch_size, device) -> float:
    """Seconds of every head's steps over the epoch's batches, already on the device."""
    loader = _loader(dataset, batch_size, 0, device)
    loader.sampler.set_epoch(1)
    batches = [batch_to_device(batch, device) for batch in loader]
    heads = _heads(models, dataset, batch_size, device)
    train_heads_one_epoch(heads, batches[:2], device, 0)
    _sync(device)
    started = time.perf_counter()
    train_heads_one_epoch(heads, batches, device, 1)
    _sync(device)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--videos", type=int, default=96)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--models", nargs="+", default=["baseline", "similarity", "spatiotemporal", "joint"])
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (CPU)")
    parser.add_argument("--workers", type=int, default=0, help="feature loader processes")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--repeats", type=int, default=2, help="best of this many runs of each")
    parser.add_argument("--record", action="store_true",
                        help="write videos/s per head of the one pass in memory to bench/measured.csv")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "shard-000.h5"
        write_shard(path, args.videos)
        size = path.stat().st_size / 2**20
        print(
            f"device {device}, torch threads {args.threads}, {args.workers} loader workers, "
            f"{args.videos} videos x {FRAMES}x{PER_FRAME} nodes x {CHANNELS} fp16 ({size:.0f} MiB "
            f"shard), batch {args.batch_size}, heads {', '.join(args.models)}, best of {args.repeats}\n"
        )

        def best(measure) -> float:
            return min(measure() for _ in range(args.repeats))

        disk = FeatureShardDataset([path])
        separately = best(
            lambda: sum(
                _epoch(_heads([m], disk, args.batch_size, device), _loader(disk, args.batch_size, args.workers, device), device)
                for m in args.models
            )
        )
        one_pass = best(
            lambda: _epoch(
                _heads(args.models, disk, args.batch_size, device),
                _loader(disk, args.batch_size, args.workers, device),
                device,
            )
        )
        memory = FeatureShardDataset([path])
        memory.cache_in_memory("always")
        in_memory = best(
            lambda: _epoch(
                _heads(args.models, memory, args.batch_size, device),
                _loader(memory, args.batch_size, args.workers, device),
                device,
            )
        )
        ceiling = best(lambda: compute_only(args.models, memory, args.batch_size, device))
        print(f"| {len(args.models)} heads, one epoch | seconds | x faster than separately | of compute only |")
        print("|---|---:|---:|---:|")
        for name, seconds in (
            ("separately (one pass per head, from disk)", separately),
            ("one pass (each batch read once, from disk)", one_pass),
            ("one pass, features in memory", in_memory),
            ("compute only (batches on the device)", ceiling),
        ):
            print(f"| {name} | {seconds:.2f} | {separately / seconds:.2f} | {ceiling / seconds:.0%} |")
        disk.close()
        memory.close()
        if args.record:
            from measured import device_name, record  # bench/measured.py, beside this script

            rate = args.videos * len(args.models) / in_memory
            record("gcn_videos_per_s", rate, "videos/s per head", device_name(device))
            print(f"\nrecorded gcn_videos_per_s = {rate:.0f} in bench/measured.csv")


if __name__ == "__main__":
    main()
