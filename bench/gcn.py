"""Training throughput of the GCN heads: end to end from a feature shard vs pure compute.

Writes a temporary features shard in the docs/formats.md layout with realistic sizes (160
nodes per video: 16 feature frames x 10 boxes, 2048 fp16 channels, chunked one video per
chunk as the features stage writes it), then measures, in the same run and on the same
device, training videos/s of

- **pure compute**: forward + backward + optimiser step on batches already in memory (float32
  on the device), the ceiling;
- **end to end**: :func:`regiongraph.train.loop.train_one_epoch` over a shuffled
  :class:`~regiongraph.train.data.FeatureShardDataset` (HDF5 reads, collation, fp16 to fp32,
  the copy to the device included), with 0 and with ``--workers`` loader processes.

Goal: end to end at least 70 % of pure compute. Prints a markdown table::

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
import torch.nn.functional as F

from regiongraph.gpus import resolve_device
from regiongraph.io import shard_writer
from regiongraph.models.gcn import build_head
from regiongraph.train.data import FeatureShardDataset, batch_to_device, feature_loader
from regiongraph.train.loop import (
    LearningRateSchedule,
    TrainSettings,
    train_one_epoch,
)

FRAMES, PER_FRAME, CHANNELS, CLASSES = 16, 10, 2048, 174


def write_shard(path: Path, videos: int, seed: int = 0) -> None:
    """A features shard of random features, written a few videos at a time."""
    rng = np.random.default_rng(seed)
    settings = {
        "stream": "rgb",
        "arch": "i3d_r50",
        "num_frames": 32,
        "frame_stride": 2,
        "crop_size": 224,
    }
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


def _model_and_optimiser(name: str, device: torch.device, steps: int):
    torch.manual_seed(0)
    model = build_head(name, CHANNELS, CLASSES).to(device)
    optimiser = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    schedule = LearningRateSchedule(TrainSettings(epochs=1), steps_per_epoch=max(steps, 1))
    return model, optimiser, torch.optim.lr_scheduler.LambdaLR(optimiser, schedule)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def pure_compute(
    name: str, dataset: FeatureShardDataset, batch_size: int, device: torch.device
) -> float:
    """Videos/s of training steps on batches already on the device (one pass over the data)."""
    batches = [
        batch_to_device(batch, device)
        for batch in feature_loader(dataset, batch_size, shuffle=True, seed=1)
    ]
    model, optimiser, scheduler = _model_and_optimiser(name, device, len(batches))
    model.train()
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")

    def step(batch):
        with autocast:
            logits = model(batch["global"], batch.get("roi"), batch.get("boxes"), batch.get("mask"))
        loss = F.cross_entropy(logits.float(), batch["label"])
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        scheduler.step()

    step(batches[0])  # warm-up (allocator, kernels)
    _sync(device)
    started = time.perf_counter()
    for batch in batches:
        step(batch)
    _sync(device)
    return len(dataset) / (time.perf_counter() - started)


def end_to_end(
    name: str, dataset: FeatureShardDataset, batch_size: int, device: torch.device, workers: int
) -> float:
    """Videos/s of one training epoch read from the shard, after a short warm-up (page cache
    warm, persistent workers started, as from the second epoch of a training run on)."""
    loader = feature_loader(
        dataset,
        batch_size,
        shuffle=True,
        seed=2,
        num_workers=workers,
        pin_memory=device.type == "cuda",
    )
    model, optimiser, scheduler = _model_and_optimiser(name, device, len(loader))
    loader.sampler.set_epoch(0)
    warm_up = [batch for _, batch in zip(range(2), loader, strict=False)]
    train_one_epoch(model, warm_up, optimiser, scheduler, device, "warm-up")
    loader.sampler.set_epoch(1)
    _sync(device)
    started = time.perf_counter()
    stats = train_one_epoch(model, loader, optimiser, scheduler, device, "end to end")
    _sync(device)
    return stats.n_videos / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--videos", type=int, default=96)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--models", nargs="+", default=["baseline", "joint"])
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (CPU)")
    parser.add_argument(
        "--workers", type=int, default=1, help="loader processes of the second end-to-end run"
    )
    parser.add_argument("--device", default="auto")
    parser.add_argument(
        "--repeats", type=int, default=2, help="best of this many runs of each measurement"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "shard-000.h5"
        write_shard(path, args.videos)
        size = path.stat().st_size / 2**20
        regions = FeatureShardDataset([path])
        global_only = FeatureShardDataset([path], regions=False)
        print(
            f"device {device}, torch threads {args.threads}, {args.videos} videos x {FRAMES}x{PER_FRAME} "
            f"nodes x {CHANNELS} fp16 ({size:.0f} MiB shard), batch {args.batch_size}, best of {args.repeats}\n"
        )
        print(
            "| model | pure compute (videos/s) | end to end, 0 workers | ratio "
            f"| end to end, {args.workers} workers | ratio |"
        )
        print("|---|---:|---:|---:|---:|---:|")
        for name in args.models:
            dataset = global_only if name == "baseline" else regions  # as train_model reads
            pure = max(
                pure_compute(name, dataset, args.batch_size, device) for _ in range(args.repeats)
            )
            serial = max(
                end_to_end(name, dataset, args.batch_size, device, 0) for _ in range(args.repeats)
            )
            parallel = max(
                end_to_end(name, dataset, args.batch_size, device, args.workers)
                for _ in range(args.repeats)
            )
            print(
                f"| {name} | {pure:.1f} | {serial:.1f} | {serial / pure:.0%} | {parallel:.1f} "
                f"| {parallel / pure:.0%} |"
            )
        regions.close()
        global_only.close()


if __name__ == "__main__":
    main()
