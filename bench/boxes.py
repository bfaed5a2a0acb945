"""Frames per second of the box backends, per min size, on the CPU and (when present) a GPU.

    python bench/boxes.py                 # CPU rows (a few minutes on 2 cores), GPU rows if CUDA
    python bench/boxes.py --threads 1     # torch.set_num_threads(1) for the CPU rows
    python bench/boxes.py --cpu-frames 8 --gpu-frames 1024
    python bench/boxes.py --weights fasterrcnn_resnet50_fpn_coco-258fb6c6.pth --frames-dir DIR

With ``--weights`` (torchvision's COCO file) and ``--frames-dir`` (a folder of real SSv1 JPEGs)
it also prints what the min size buys: the share of the boxes found at min size 800 (score
>= 0.5) that a smaller min size finds again (same class, IoU >= 0.5).

Detectors use randomly initialised weights (nothing is downloaded): the forward pass costs the
same as with COCO weights, but a random model keeps more boxes through its score threshold, so
its per-class NMS is, if anything, slower than a trained model's. Frames are synthetic 100 x 176
frames (the toy set's renderer, SSv1's size). "model" rows time the detector alone on decoded
frames; "stage" rows time :func:`regiongraph.detect.stage.extract_boxes_shard` end to end on
JPEG folders (decoding, batching across videos, top-k, HDF5 writing). Ratios are against the
baseline row measured in the same run: torchvision Faster R-CNN R50-FPN, min size 800, on the
same device (batch 4 fp32 on the CPU; batch 16 fp16 on the GPU, the anchor of docs/architecture.md: 138
frames/s on one H100).
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import torch
from torchvision.ops import box_iou

from regiongraph.dataset.frames import read_frame
from regiongraph.dataset.toy import render_video
from regiongraph.detect.stage import BoxSettings, extract_boxes_shard
from regiongraph.detect.torchvision_backend import TorchvisionDetector, build_model

HEIGHT, WIDTH = 100, 176
NUM_FRAMES, STRIDE = 32, 2  # 16 box frames per video


def synthetic_frames(n: int, seed: int = 0) -> list[np.ndarray]:
    frames, video = [], 0
    while len(frames) < n:
        rendered, _ = render_video(
            video % 8, 32, HEIGHT, WIDTH, np.random.default_rng([seed, video])
        )
        frames.extend(rendered)
        video += 1
    return frames[:n]


def synthetic_dataset(folder: Path, n_videos: int) -> Path:
    """JPEG folders of 64-frame videos, their index and their Something-Else style boxes.

    Eight videos are rendered; the others are copies of them (rendering is the slow part).
    """
    rows, notes, rendered_videos = [], {}, []
    for v in range(n_videos):
        frame_dir = folder / "frames" / f"{v}"
        if v < 8:
            rendered, boxes = render_video(v, 64, HEIGHT, WIDTH, np.random.default_rng([1, v]))
            rendered_videos.append((frame_dir, boxes))
            frame_dir.mkdir(parents=True)
            for i, frame in enumerate(rendered):
                bgr = cv2.cvtColor(frame, cv2.COLOR_RGB2BGR)
                cv2.imwrite(str(frame_dir / f"{i + 1:05d}.jpg"), bgr)
        else:
            source, boxes = rendered_videos[v % 8]
            shutil.copytree(source, frame_dir)
        rows.append(
            dict(
                video_id=str(v),
                split="validation",
                label="",
                label_index=-1,
                n_frames=64,
                height=HEIGHT,
                width=WIDTH,
                frame_dir=str(frame_dir),
                shard=0,
            )
        )
        notes[str(v)] = [
            {
                "name": f"{v}/{i + 1:04d}.jpg",
                "labels": [
                    {
                        "box2d": dict(zip(("x1", "y1", "x2", "y2"), b["box"], strict=True)),
                        "category": b["name"],
                        "standard_category": f"{b['object']:04d}",
                    }
                    for b in frame
                ],
            }
            for i, frame in enumerate(boxes)
        ]
    index = folder / "index.parquet"
    pd.DataFrame(rows).to_parquet(index)
    (folder / "boxes.json").write_text(json.dumps(notes))
    return index


def real_frames(folder: Path, n: int) -> list[np.ndarray]:
    paths = sorted(folder.rglob("*.jpg"))[:n]
    if not paths:
        raise SystemExit(f"{folder}: no *.jpg frames")
    frames = [read_frame(path) for path in paths]
    return (frames * (n // len(frames) + 1))[:n]


def min_size_agreement(
    weights: Path, frames: list[np.ndarray], device: str
) -> list[tuple[int, float]]:
    """Share of the confident boxes at min size 800 found again at smaller sizes."""
    fp16 = device == "cuda"
    arch = "fasterrcnn_resnet50_fpn"
    reference = torchvision_model(weights, 800, 16, device, fp16, arch).detect(frames)
    shares = []
    for min_size in (480, 320, 160):
        found = torchvision_model(weights, min_size, 16, device, fp16, arch).detect(frames)
        matched = total = 0
        for (ref_boxes, ref_scores, ref_classes), (boxes, _, classes) in zip(
            reference, found, strict=True
        ):
            keep = ref_scores >= 0.5
            total += int(keep.sum())
            if keep.any() and len(boxes):
                iou = box_iou(torch.from_numpy(ref_boxes[keep]), torch.from_numpy(boxes)).numpy()
                same = ref_classes[keep][:, None] == classes[None, :]
                matched += int(((iou >= 0.5) & same).any(axis=1).sum())
        shares.append((min_size, matched / total if total else float("nan")))
    return shares


def synchronize(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def time_detector(detector, frames: list[np.ndarray], device: str, warmup: int) -> float:
    detector.detect(frames[:warmup])
    synchronize(device)
    start = time.perf_counter()
    detector.detect(frames)
    synchronize(device)
    return len(frames) / (time.perf_counter() - start)


def torchvision_model(
    weights: Path, min_size: int, batch: int, device: str, fp16: bool, arch: str, rpn_top_n=1000
):
    return TorchvisionDetector(
        arch,
        weights,
        per_frame=10,
        min_size=min_size,
        batch_size=batch,
        device=device,
        fp16=fp16,
        rpn_top_n=rpn_top_n,
    )


def detectron2_model(min_size: int, batch: int, device: str, fp16: bool, source: str):
    from regiongraph.detect import detectron2_backend as d2

    cfg = d2.detectron2_config(d2.MODEL_ZOO_CONFIG, min_size=min_size, device=device)
    return d2.Detectron2Detector(
        cfg, None, per_frame=10, batch_size=batch, source=source, fp16=fp16
    )


def run_stage(folder: Path, index: Path, settings: BoxSettings, device: str) -> tuple[int, float]:
    """(box frames written, seconds) of one stage run on ``index``."""
    out = folder / f"shard-{time.monotonic_ns()}.h5"
    start = time.perf_counter()
    counts = extract_boxes_shard(
        index,
        0,
        out,
        settings,
        NUM_FRAMES,
        STRIDE,
        "uniform",
        device=device,
        box_annotations=folder / "boxes.json",
        weights_cache=folder,
    )
    synchronize(device)
    elapsed = time.perf_counter() - start
    out.unlink()
    return counts["videos"] * NUM_FRAMES // 2, elapsed


def time_stage(folder: Path, index: Path, settings: BoxSettings, device: str, small=None) -> float:
    """Box frames/s of the stage; with ``small`` (a shorter index) the difference of two runs,
    which cancels model loading and warm-up."""
    frames, seconds = run_stage(folder, index, settings, device)
    if small is None:
        return frames / seconds
    small_frames, small_seconds = run_stage(folder, small, settings, device)
    return (frames - small_frames) / max(seconds - small_seconds, 1e-9)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--cpu-frames", type=int, default=4, help="frames timed per CPU row at min size >= 480"
    )
    parser.add_argument("--gpu-frames", type=int, default=512, help="frames timed per GPU row")
    parser.add_argument(
        "--threads", type=int, default=None, help="torch.set_num_threads for the CPU rows"
    )
    parser.add_argument("--no-cpu", action="store_true", help="GPU rows only")
    parser.add_argument("--weights", type=Path, help="torchvision COCO weights (default: random)")
    parser.add_argument("--frames-dir", type=Path, help="real frames (*.jpg) instead of synthetic")
    parser.add_argument("--record", action="store_true",
                        help="write the GPU stage figure at min size 320 to bench/measured.csv")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    have_cuda = torch.cuda.is_available()
    try:
        import detectron2  # noqa: F401

        have_d2 = True
    except ImportError:
        have_d2 = False

    rows: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        torch.manual_seed(0)
        weights = args.weights or folder / "random.pth"
        if args.weights is None:
            torch.save(build_model("fasterrcnn_resnet50_fpn").state_dict(), weights)
        n_gpu = args.gpu_frames if have_cuda else 0
        n_cpu = args.cpu_frames
        n_frames = max(4 * n_cpu, n_gpu, 8)
        frames = (
            real_frames(args.frames_dir, n_frames)
            if args.frames_dir
            else synthetic_frames(n_frames)
        )
        index = synthetic_dataset(folder, n_videos=max(16, n_gpu // 4))
        cpu_index = folder / "index-cpu.parquet"  # 2 videos, 32 box frames
        pd.read_parquet(index).head(2).to_parquet(cpu_index)
        small_index = folder / "index-small.parquet"  # a quarter: the GPU stage rows' difference
        table = pd.read_parquet(index)
        table.head(len(table) // 4).to_parquet(small_index)

        def add(device, backend, what, min_size, batch, precision, fps, baseline=False):
            rows.append(
                dict(
                    device=device,
                    backend=backend,
                    what=what,
                    min_size=min_size,
                    batch=batch,
                    precision=precision,
                    fps=fps,
                    baseline=baseline,
                )
            )
            print(
                f"  {device} {backend} {what} min {min_size} batch {batch} {precision}: {fps:.2f} frames/s",
                flush=True,
            )

        if not args.no_cpu:
            print(f"CPU rows ({torch.get_num_threads()} torch threads)", flush=True)
            cpu_stage = BoxSettings(backend="annotations")
            add(
                "cpu",
                "annotations",
                "stage",
                "-",
                "-",
                "-",
                time_stage(folder, index, cpu_stage, "cpu"),
            )
            for min_size in (800, 480, 320, 160):
                n = n_cpu if min_size >= 480 else 2 * n_cpu
                det = torchvision_model(
                    weights, min_size, 4, "cpu", False, "fasterrcnn_resnet50_fpn"
                )
                add(
                    "cpu",
                    "torchvision",
                    "model",
                    min_size,
                    4,
                    "fp32",
                    time_detector(det, frames[:n], "cpu", 1),
                    baseline=min_size == 800,
                )
            det = torchvision_model(weights, 320, 4, "cpu", False, "fasterrcnn_resnet50_fpn", 300)
            fps = time_detector(det, frames[: 2 * n_cpu], "cpu", 1)
            add("cpu", "torchvision, rpn_top_n 300", "model", 320, 4, "fp32", fps)
            torch.manual_seed(0)
            v2_weights = folder / "random_v2.pth"
            torch.save(build_model("fasterrcnn_resnet50_fpn_v2").state_dict(), v2_weights)
            det = torchvision_model(v2_weights, 320, 4, "cpu", False, "fasterrcnn_resnet50_fpn_v2")
            add(
                "cpu",
                "torchvision v2",
                "model",
                320,
                4,
                "fp32",
                time_detector(det, frames[: 2 * n_cpu], "cpu", 1),
            )
            settings = BoxSettings(
                backend="torchvision", weights=str(weights), min_size=320, batch_size=16
            )
            add(
                "cpu",
                "torchvision",
                "stage",
                320,
                16,
                "fp32",
                time_stage(folder, cpu_index, settings, "cpu"),
            )
            if have_d2:
                for min_size, source in (
                    (800, "detections"),
                    (320, "detections"),
                    (320, "proposals"),
                ):
                    n = n_cpu if min_size >= 480 else 2 * n_cpu
                    det = detectron2_model(min_size, 4, "cpu", False, source)
                    add(
                        "cpu",
                        f"detectron2 {source}",
                        "model",
                        min_size,
                        4,
                        "fp32",
                        time_detector(det, frames[:n], "cpu", 1),
                    )
            else:
                print("  detectron2 not installed: no detectron2 rows", flush=True)

        if have_cuda:
            print(f"GPU rows ({torch.cuda.get_device_name()})", flush=True)
            gpu_frames = frames[:n_gpu]
            det = torchvision_model(weights, 800, 16, "cuda", False, "fasterrcnn_resnet50_fpn")
            add(
                "cuda",
                "torchvision",
                "model",
                800,
                16,
                "fp32",
                time_detector(det, gpu_frames, "cuda", 32),
            )
            for min_size in (800, 480, 320):
                for batch in (16, 32, 64, 128):
                    det = torchvision_model(
                        weights, min_size, batch, "cuda", True, "fasterrcnn_resnet50_fpn"
                    )
                    add(
                        "cuda",
                        "torchvision",
                        "model",
                        min_size,
                        batch,
                        "fp16",
                        time_detector(det, gpu_frames, "cuda", batch),
                        baseline=(min_size, batch) == (800, 16),
                    )
                settings = BoxSettings(
                    backend="torchvision",
                    weights=str(weights),
                    min_size=min_size,
                    batch_size=64,
                    decode_threads=4,
                )
                add(
                    "cuda",
                    "torchvision",
                    "stage",
                    min_size,
                    64,
                    "fp16",
                    time_stage(folder, index, settings, "cuda", small=small_index),
                )
            if have_d2:
                for min_size in (800, 320):
                    det = detectron2_model(min_size, 32, "cuda", True, "detections")
                    add(
                        "cuda",
                        "detectron2 detections",
                        "model",
                        min_size,
                        32,
                        "fp16",
                        time_detector(det, gpu_frames, "cuda", 32),
                    )

        if args.weights is not None:
            device = "cuda" if have_cuda else "cpu"
            agreement = min_size_agreement(weights, frames[: max(16, n_cpu)], device)

    if args.weights is not None:
        print()
        print("What the min size buys (torchvision COCO weights, reference: min size 800)")
        print()
        print("| min size | boxes of min size 800 found again |")
        print("|---|---|")
        for min_size, share in agreement:
            print(f"| {min_size} | {share:.1%} |")
    print()
    print(
        f"Box backends, frames/s ({platform.processor() or platform.machine()}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} CPU threads{', ' + torch.cuda.get_device_name() if have_cuda else ''})"
    )
    print()
    print("| device | backend | timed | min size | batch | precision | frames/s | vs baseline |")
    print("|---|---|---|---|---|---|---|---|")
    for row in rows:
        base = next(
            (r["fps"] for r in rows if r["baseline"] and r["device"] == row["device"]), None
        )
        ratio = f"{row['fps'] / base:.2f}x" if base else "-"
        mark = " (baseline)" if row["baseline"] else ""
        print(
            f"| {row['device']} | {row['backend']} | {row['what']} | {row['min_size']} | {row['batch']} | "
            f"{row['precision']} | {row['fps']:.2f} | {ratio}{mark} |"
        )
    stage = [r for r in rows if (r["device"], r["what"], r["min_size"]) == ("cuda", "stage", 320)]
    if args.record and stage:
        from measured import device_name, record  # bench/measured.py, beside this script

        record("detector_frames_per_s", stage[0]["fps"], "frames/s", device_name("cuda"))
        print(f"\nrecorded detector_frames_per_s = {stage[0]['fps']:.1f} in bench/measured.csv")


if __name__ == "__main__":
    main()
