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

    python bench/features.py --archs all          # one row per backbone.arch, relative to I3D
    python bench/features.py --archs all --gpu --clips 256

With ``--archs`` every arch runs on the same clips (16x112 on the CPU, 32x224 on CUDA; MViT
only takes 16x224) with random weights, I3D at the pretrained width 64, and each row gives its
clips/s relative to I3D's in the same run.

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

from regiongraph.backbones import ARCHS, backbone_spec
from regiongraph.dataset.sampling import sample_clip_frames
from regiongraph.features.cache import BackboneSettings, FeatureJob, cache_features_shard
from regiongraph.features.clips import ClipSettings
from regiongraph.features.weights import prepare_weights
from regiongraph.io import shard_writer


def make_shard(root: Path, clips: int, clip: ClipSettings, seed: int = 0) -> None:
    """``clips`` synthetic videos, their index, and a boxes shard with ``per_frame`` boxes."""
    rng = np.random.default_rng(seed)
    rows = []
    root.mkdir(parents=True, exist_ok=True)
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
            frames = sample_clip_frames(n, clip.num_frames, clip.frame_stride, clip.box_every).box_frames
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
        model = model.to(memory_format=torch.channels_last_3d)
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


def clip_stage_arguments(doc: str, clips_help: str, archs: bool = False) -> argparse.Namespace:
    """The command line of the clip stages' benchmarks (features, fine-tuning), parsed; sets
    the torch threads and, with ``--gpu``, checks that there is a GPU. ``archs``: offer
    ``--archs`` (one row per backbone.arch)."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gpu", action="store_true", help="CUDA rows at 32x224 (needs a GPU)")
    parser.add_argument("--clips", type=int, default=None, help=clips_help)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--batches", type=int, nargs="+", default=None)
    parser.add_argument("--workers", type=int, nargs="+", default=None)
    parser.add_argument("--jpeg-decode", nargs="+", choices=["host", "device"], default=None,
                        help="where JPEGs are decoded (default: host on the CPU, both on a GPU)")
    parser.add_argument("--record", action="store_true", help="write the best end-to-end figure to bench/measured.csv")
    if archs:
        parser.add_argument("--archs", nargs="+", default=None, help=f"'all' or some of {', '.join(ARCHS)}")
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


def arch_rows(archs: list[str], clips: int, batch: int, workers: int, device: torch.device) -> None:
    """One row per arch: forward-only and end-to-end clips/s, and both relative to I3D's."""
    cuda = device.type == "cuda"
    frames, crop, resize = (32, 224, 256) if cuda else (16, 112, 128)
    archs = ["i3d_r50", *[a for a in archs if a != "i3d_r50"]]
    print(f"\n{torch.cuda.get_device_name() if cuda else f'CPU, {torch.get_num_threads()} torch threads'}; "
          f"{clips} clips of {frames}x{crop} (MViT: 16x224), batch {batch}, {workers} workers, random weights\n")
    print("| arch | clip | map (C x T' x H' x W') | forward clips/s | end-to-end clips/s | forward / I3D | end-to-end / I3D |")
    print("|---|---|---|---:|---:|---:|---:|")
    baseline = None
    with tempfile.TemporaryDirectory() as tmp:
        for arch in archs:
            spec = backbone_spec(arch)
            t, s, r = (spec.frames, spec.crop_size, spec.resize_short) if spec.fixed_input else (frames, crop, resize)
            clip = ClipSettings(arch=arch, num_frames=t, resize_short=r, crop_size=s)
            root = Path(tmp) / arch
            make_shard(root, clips, clip)
            backbone = BackboneSettings(arch=arch)
            prepare_weights(None, arch, {"rgb": root / "rgb.pt"}, root)
            model = backbone.build("rgb").to(device).eval()
            fwd = forward_only(model, clips, clip, batch, device)
            e2e = end_to_end(root, clips, clip, backbone, batch, workers, device.type)
            del model
            baseline = baseline or (fwd, e2e)
            shape = " x ".join(map(str, spec.map_shape(t, s)))
            print(f"| {arch} | {t}x{s} | {shape} | {fwd:.2f} | {e2e:.2f} | {fwd / baseline[0]:.2f} | "
                  f"{e2e / baseline[1]:.2f} |", flush=True)


def main() -> None:
    args = clip_stage_arguments(__doc__, "clips per measurement", archs=True)
    if args.archs:
        device = torch.device("cuda" if args.gpu else "cpu")
        clips = args.clips or (256 if args.gpu else 4)
        arch_rows(list(ARCHS) if args.archs == ["all"] else args.archs, clips,
                  (args.batches or [16 if args.gpu else 2])[0], (args.workers or [8 if args.gpu else 1])[0], device)
        return
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
