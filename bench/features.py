"""Benchmark of the features stage: end to end against forward-only, on the same clips.

End to end is :func:`regiongraph.features.cache.cache_features_shard` on a synthetic shard
(JPEG decode, resize + crop, box mapping, I3D forward, RoIAlign, fp16 HDF5 write); forward-only
is the backbone alone on clips already in memory (on the device for CUDA), the ceiling that
end to end is measured against. Prints a markdown table.

    python bench/features.py                      # CPU, demo-size clips (16x112, width 16)
    python bench/features.py --threads 1          # the same with one torch thread
    python bench/features.py --gpu --clips 512    # CUDA: 32x224, batch 8/16/32, workers 8/16
    python bench/features.py --gpu --record       # ... and the best end-to-end figure into
                                                  # bench/measured.csv (read by bench/scale.py)

Each end-to-end row says where the JPEGs were decoded (``--jpeg-decode host device``: OpenCV
in the loader workers, or torchvision.io.decode_jpeg on the device, nvJPEG on a GPU).

Videos are SSv1-sized (100 px high, 30-60 frames) with 10 boxes per box frame.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import torch

from regiongraph.dataset.sampling import sample_clip_frames
from regiongraph.features.cache import BackboneSettings, FeatureJob, cache_features_shard
from regiongraph.features.clips import ClipSettings
from regiongraph.features.weights import prepare_weights
from regiongraph.io import shard_writer


def make_shard(root: Path, clips: int, clip: ClipSettings, seed: int = 0) -> None:
    """``clips`` synthetic videos, their index, and a boxes shard with ``per_frame`` boxes."""
    rng = np.random.default_rng(seed)
    rows = []
    with shard_writer(root / "boxes.h5", "boxes", {"backend": "bench"}) as handle:
        for i in range(clips):
            video_id = f"{i:06d}"
            n, h, w = int(rng.integers(30, 61)), 100, int(rng.integers(120, 177))
            folder = root / "frames" / video_id
            folder.mkdir(parents=True)
            base = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
            for f in range(n):
                frame = np.roll(base, 2 * f, axis=1)
                cv2.imwrite(str(folder / f"{f + 1:05d}.jpg"), frame, [cv2.IMWRITE_JPEG_QUALITY, 90])
            rows.append((video_id, "validation", "x", i % 10, n, h, w, str(folder), 0))
            frames = sample_clip_frames(n, clip.num_frames, clip.frame_stride).box_frames
            xy = rng.uniform(0, [w - 20, h - 20], (len(frames), clip.per_frame, 2))
            size = rng.uniform(10, 60, (len(frames), clip.per_frame, 2))
            boxes = np.concatenate([xy, np.minimum(xy + size, [w, h])], -1).astype(np.float32)
            group = handle.create_group(video_id)
            group.create_dataset("boxes", data=boxes)
            group.create_dataset("mask", data=np.ones(boxes.shape[:2], bool))
            group.create_dataset("frame_indices", data=frames)
            group.attrs["height"], group.attrs["width"] = h, w
    columns = ["video_id", "split", "label", "label_index", "n_frames", "height", "width", "frame_dir", "shard"]
    pd.DataFrame(rows, columns=columns).to_parquet(root / "index.parquet")


def forward_only(model, clips: int, clip: ClipSettings, batch: int, device: torch.device) -> float:
    """Clips/s of the backbone alone on normalised clips already on ``device``."""
    cuda = device.type == "cuda"
    x = torch.randn(batch, 3, clip.num_frames, clip.crop_size, clip.crop_size, device=device)
    if cuda:
        x = x.contiguous(memory_format=torch.channels_last_3d)
    steps = max(1, clips // batch)
    with torch.inference_mode(), torch.autocast("cuda", torch.bfloat16, enabled=cuda):
        model(x)  # warm-up
        if cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(steps):
            model(x).float()
        if cuda:
            torch.cuda.synchronize()
    return steps * batch / (time.perf_counter() - start)


def end_to_end(root: Path, clips: int, clip: ClipSettings, backbone: BackboneSettings,
               batch: int, workers: int, device: str, jpeg_decode: str = "host") -> float:
    out = root / f"features-{batch}-{workers}.h5"
    start = time.perf_counter()
    counts = cache_features_shard(
        root / "index.parquet", 0, out, root / "rgb.pt", clip, backbone, root / "boxes.h5",
        "bench", FeatureJob(device=device, batch_size=batch, workers=workers, jpeg_decode=jpeg_decode),
    )
    elapsed = time.perf_counter() - start
    out.unlink()
    assert counts["videos"] == clips, counts
    return clips / elapsed


def clip_stage_arguments(doc: str, clips_help: str) -> argparse.Namespace:
    """The command line of the clip stages' benchmarks (features, fine-tuning), parsed; sets
    the torch threads and, with ``--gpu``, checks that there is a GPU."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gpu", action="store_true", help="CUDA rows at 32x224 (needs a GPU)")
    parser.add_argument("--clips", type=int, default=None, help=clips_help)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--batches", type=int, nargs="+", default=None)
    parser.add_argument("--workers", type=int, nargs="+", default=None)
    parser.add_argument("--jpeg-decode", nargs="+", choices=["host", "device"], default=None,
                        help="where JPEGs are decoded (default: host on the CPU, both on a GPU)")
    parser.add_argument("--record", action="store_true", help="write the best end-to-end figure to bench/measured.csv")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.gpu and not torch.cuda.is_available():
        raise SystemExit("--gpu: torch sees no CUDA device")
    return args


def record_best(figure: str, gpu: bool, best: float, device: torch.device) -> None:
    """``--record``: the best end-to-end clips/s into bench/measured.csv (GPU runs under the
    figure's name, CPU runs at demo size under ``<figure>_demo_size``)."""
    from measured import device_name, record  # bench/measured.py, beside this script

    figure = figure if gpu else f"{figure}_demo_size"
    record(figure, best, "clips/s", device_name(device))
    print(f"\nrecorded {figure} = {best:.1f} in bench/measured.csv")


def main() -> None:
    args = clip_stage_arguments(__doc__, "clips per measurement")
    if args.gpu:
        device = torch.device("cuda")
        clip = ClipSettings(num_frames=32, resize_short=256, crop_size=224)
        backbone = BackboneSettings()
        clips, batches, workers = args.clips or 512, args.batches or [8, 16, 32], args.workers or [8, 16]
        name = torch.cuda.get_device_name()
    else:
        device = torch.device("cpu")
        clip = ClipSettings(num_frames=16, resize_short=128, crop_size=112)
        backbone = BackboneSettings(width_per_group=16)
        clips, batches, workers = args.clips or 16, args.batches or [4], args.workers or [1]
        name = f"CPU, {torch.get_num_threads()} torch threads"
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        make_shard(root, clips, clip)
        prepare_weights(None, backbone.arch, {"rgb": root / "rgb.pt"}, root,
                        width_per_group=backbone.width_per_group)
        model = backbone.build("rgb").to(device).eval()
        if device.type == "cuda":
            model = model.to(memory_format=torch.channels_last_3d)
        print(f"\n{name}; clip {clip.num_frames}x{clip.crop_size}, width {backbone.width_per_group}, "
              f"{clips} clips, {clip.per_frame} boxes per box frame\n")
        decoders = args.jpeg_decode or (["host", "device"] if device.type == "cuda" else ["host"])
        print("| batch | workers | JPEG decoded on | forward-only clips/s | end-to-end clips/s | end-to-end / forward | peak GPU memory (GiB) |")
        print("|---:|---:|---|---:|---:|---:|---:|")
        best = 0.0
        for batch in batches:
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats()
            fwd = forward_only(model, clips, clip, batch, device)
            peak = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else float("nan")
            for w in workers:
                for where in decoders:
                    e2e = end_to_end(root, clips, clip, backbone, batch, w, device.type, where)
                    best = max(best, e2e)
                    print(f"| {batch} | {w} | {where} | {fwd:.2f} | {e2e:.2f} | {e2e / fwd:.2f} | {peak:.1f} |", flush=True)
        if args.record:
            record_best("features_clips_per_s", args.gpu, best, device)


if __name__ == "__main__":
    main()
