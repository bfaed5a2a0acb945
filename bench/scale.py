"""Disk and wall-time projection for the full Something-Something v1 from a run on synthetic data.

Reads what a finished run left under ``--results`` (the benchmark TSVs Snakemake writes for
every job, the index, and the output sizes), measures in this run the two CPU costs that do
not depend on the demo's reduced settings (OpenCV TV-L1 with its default parameters on a
176x100 pair, and JPEG decoding per frame), takes each GPU throughput from what a benchmark
measured (``bench/measured.csv``, written by ``bench/features.py``, ``bench/boxes.py``,
``bench/flow_stage.py``, ``bench/finetune.py`` and ``bench/gcn.py`` run with ``--record`` on
a GPU) or, where nothing was measured, from the anchors of docs/architecture.md, and says which
for every row (override any with its flag); then prints two markdown tables:

1. per stage, measured on the synthetic data: jobs, seconds and bytes per video;
2. per stage, projected for SSv1 (108,499 videos, ~36 frames each at ~176x100): disk use and
   wall time on (a) one workstation (16 cores, 1 GPU) and (b) a SLURM cluster of 8 GPU nodes,
   with the cluster's speed-up over the workstation as the ratio column.

    make demo && .venv/bin/python bench/scale.py              # reads results/
    .venv/bin/python bench/scale.py --results /tmp/run/results --node-gpus 8 --node-cores 64

Assumptions, stated where they are used: SSv1 settings as config/ssv1.yaml (32-frame clips,
16 box frames x 10 boxes, 2048 channels, two streams, 5 fine-tuning and 30 GCN epochs, four
GCN models); the cluster's GPU nodes also run the CPU stages; fine-tuning and GCN training
are single-GPU jobs (one per stream; GCN training trains every head of a stream in one pass,
with the stream's train features kept in memory when they take under half of ``--memory-gb``),
so more nodes run them side by side but do not shorten one of them.
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import h5py
import numpy as np
import pandas as pd
from measured import best_measured  # bench/measured.py, beside this script

from regiongraph.dataset.index import check_frame_folder
from regiongraph.flow.synthetic import translated_pair

SPLITS = ("train", "validation", "test")
SSV1_TRAIN_FRACTION = 86_017 / 108_499


@dataclass
class Measured:
    jobs: int
    wall_s: float  # sum over the stage's jobs
    cpu_s: float
    bytes: int
    videos: int


def read_benchmarks(folder: Path) -> tuple[int, float, float]:
    """(jobs, summed wall seconds, summed CPU seconds) of the TSVs under a folder (or one file)."""
    files = [folder] if folder.is_file() else sorted(folder.rglob("*.tsv"))
    wall = cpu = 0.0
    for path in files:
        with open(path) as handle:
            rows = list(csv.DictReader(handle, delimiter="\t"))
        wall += float(rows[-1]["s"])
        cpu += float(rows[-1].get("cpu_time") or 0.0)
    return len(files), wall, cpu


def folder_bytes(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def measure_stages(results: Path) -> tuple[dict[str, Measured], pd.DataFrame]:
    index = pd.concat([pd.read_parquet(results / "index" / f"{s}.parquet") for s in SPLITS])
    bench = results / "benchmarks"
    n = len(index)
    manifest = json.loads((results / "raw" / "manifest.json").read_text())
    stages = {}

    def add(name: str, tsv: Path, out: Path | int, videos: int = n) -> None:
        if tsv.exists():
            jobs, wall, cpu = read_benchmarks(tsv)
            size = out if isinstance(out, int) else folder_bytes(out)
            stages[name] = Measured(jobs, wall, cpu, size, videos)

    add("extract", bench / "extract.tsv", int(manifest["frame_bytes"]), int(manifest["videos"]))
    add("split + index", bench / "index.tsv", results / "index")
    if "split" in stages or (bench / "split.tsv").exists():
        _, wall, cpu = read_benchmarks(bench / "split.tsv")
        stages["split + index"].wall_s += wall
        stages["split + index"].cpu_s += cpu
        stages["split + index"].jobs += 1
    add("flow (TV-L1)", bench / "flow", results / "flow")
    add("boxes", bench / "boxes", results / "boxes")
    for stream in ("rgb", "flow"):
        add(f"features ({stream})", bench / "features" / stream, results / "features" / stream)
    if (bench / "weights").exists():
        finetunes = sorted((bench / "weights").glob("finetune-*.tsv"))
        if finetunes:
            wall = sum(read_benchmarks(p)[1] for p in finetunes)
            cpu = sum(read_benchmarks(p)[2] for p in finetunes)
            stages["weights + finetune"] = Measured(
                len(finetunes) + 1, wall + read_benchmarks(bench / "weights" / "weights.tsv")[1],
                cpu, folder_bytes(results / "weights"), n,
            )
    add("GCN train + evaluate", bench / "gcn", results / "gcn")
    return stages, index


def flow_compression(results: Path) -> float:
    """Stored bytes of the flow shards over their uint8 (T-1, H, W, 2) size."""
    stored = raw = 0
    for path in sorted((results / "flow").rglob("shard-*.h5")):
        stored += path.stat().st_size
        with h5py.File(path, "r") as handle:
            for video in handle.values():
                raw += int(np.prod(video["flow"].shape))
    return stored / raw


def features_layout(results: Path) -> tuple[int, int, int]:
    """(T, K, C) of the demo's feature shards."""
    path = next(iter(sorted((results / "features").rglob("shard-*.h5"))))
    with h5py.File(path, "r") as handle:
        _, t, k, c = handle["roi"].shape
    return t, k, c


def measure_tvl1(pairs: int = 3) -> float:
    """Seconds per 176x100 pair and core, OpenCV TV-L1 with its default parameters."""
    cv2.setNumThreads(1)  # the flow stage runs one single-threaded OpenCV process per core
    solver = cv2.optflow.DualTVL1OpticalFlow_create()
    rng = np.random.default_rng(0)
    times = []
    for _ in range(pairs):
        a, b = translated_pair(rng, 100, 176, 1.5, -0.5)
        start = time.perf_counter()
        solver.calc(a, b, None)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def measure_decode(results: Path, frames: int = 200) -> float:
    """Seconds to read and decode one JPEG frame of the synthetic set, per core."""
    cv2.setNumThreads(1)
    paths = sorted((results / "raw").rglob("*.jpg"))[:frames]
    start = time.perf_counter()
    for path in paths:
        cv2.imread(str(path))
    return (time.perf_counter() - start) / max(len(paths), 1)


def measure_index(index: pd.DataFrame, videos: int = 100) -> float:
    """Seconds per frame to check a frame folder as the index stage does (every JPEG's bytes)."""
    sample = index.head(videos)
    start = time.perf_counter()
    for row in sample.itertuples():
        check_frame_folder(row.video_id, row.frame_dir)
    return (time.perf_counter() - start) / max(int(sample.n_frames.sum()), 1)


# Per-GPU throughputs: (anchor of docs/architecture.md, what it is). bench/measured.csv names
# each figure as here; scale.py prefers a GPU measurement there to the anchor.
GPU_FIGURES = {
    "features_clips_per_s": "I3D R50 32x224 features stage, clips/s (anchor: 293, forward only, bf16, batch 16)",
    "detector_frames_per_s": "Faster R-CNN R50-FPN boxes stage at min side 320, frames/s (anchor: 263, fp16)",
    "flow_pairs_per_s": "TV-L1 flow stage, torch backend with the Triton kernel, pairs/s",
    "finetune_clips_per_s": "I3D R50 32x224 fine-tuning, clips/s (anchor: 293 / 3, a step costing three forwards)",
    "gcn_videos_per_s": "GCN training, one head, videos/s (anchor: 6,500, the train step)",
}
ANCHORS = {
    "features_clips_per_s": 293.0,
    "detector_frames_per_s": 263.0,
    "flow_pairs_per_s": 2909.0,
    "finetune_clips_per_s": 293.0 / 3,
    "gcn_videos_per_s": 6500.0,
}
MEASURED_AS = {"flow_pairs_per_s": "flow_stage_pairs_per_s"}  # bench/measured.csv's names


def gpu_figure(flag: str, given: float | None) -> tuple[float, str]:
    """(value, where it comes from): the flag, a GPU measurement, or the anchor."""
    if given is not None:
        return given, f"given (--{flag.replace('_', '-')})"
    row = best_measured(MEASURED_AS.get(flag, flag), gpu=True)
    if row is not None:
        return float(row["value"]), f"measured on {row['device']} ({row['date']})"
    return ANCHORS[flag], "anchor (docs/architecture.md), not measured"


def fmt_bytes(value: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(value) < 1000 or unit == "TB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return ""


def fmt_time(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--results", type=Path, default=Path("results"))
    parser.add_argument("--videos", type=int, default=108_499)
    parser.add_argument("--frames", type=float, default=36.0, help="mean frames per SSv1 video")
    parser.add_argument("--height", type=int, default=100)
    parser.add_argument("--width", type=int, default=176)
    parser.add_argument("--archive-gb", type=float, default=20.0, help="the SSv1 download")
    parser.add_argument("--extract-mb-per-s", type=float, default=None,
                        help="extract throughput (bench/extract.py measures it); default: the "
                        "demo's extract job, whose start-up makes it a lower bound")
    parser.add_argument("--ws-cores", type=int, default=16)
    parser.add_argument("--ws-gpus", type=int, default=1)
    parser.add_argument("--nodes", type=int, default=8)
    parser.add_argument("--node-cores", type=int, default=32)
    parser.add_argument("--node-gpus", type=int, default=4)
    # GPU throughputs per GPU: measured (bench/measured.csv) or the anchors of
    # docs/architecture.md; a flag overrides both
    for flag, text in GPU_FIGURES.items():
        parser.add_argument(f"--{flag.replace('_', '-')}", type=float, default=None, help=text)
    parser.add_argument("--memory-gb", type=float, default=256.0, help="memory of one GPU machine")
    parser.add_argument("--read-gb-per-s", type=float, default=1.0,
                        help="feature shards read by GCN training (local NVMe or a fast share)")
    parser.add_argument("--finetune-epochs", type=int, default=5)
    parser.add_argument("--gcn-epochs", type=int, default=30)
    parser.add_argument("--gcn-models", type=int, default=4)
    parser.add_argument("--streams", type=int, default=2)
    parser.add_argument("--eval-views", type=int, default=1, help="evaluate.views (ssv1.yaml: 1)")
    parser.add_argument("--eval-crops", type=int, default=3, help="evaluate.crops (ssv1.yaml: 3)")
    args = parser.parse_args()
    figures = {flag: gpu_figure(flag, getattr(args, flag)) for flag in GPU_FIGURES}
    results = args.results
    if not (results / "index").exists() or not (results / "benchmarks").exists():
        raise SystemExit(f"{results}: no finished run here; run `make demo` first or pass --results")

    stages, index = measure_stages(results)
    tvl1_s = measure_tvl1()
    decode_s = measure_decode(results)
    index_s = measure_index(index)
    n_toy = len(index)

    print(f"## Measured on the synthetic data ({results}: {n_toy} videos, "
          f"{index.n_frames.mean():.0f} frames at {index.height.mean():.0f}x"
          f"{index.width.mean():.0f} on average)\n")
    print("| stage | jobs | wall s (sum) | wall s / video | CPU s / video | output / video |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, m in stages.items():
        print(f"| {name} | {m.jobs} | {m.wall_s:.1f} | {m.wall_s / m.videos:.3f} | "
              f"{m.cpu_s / m.videos:.3f} | {fmt_bytes(m.bytes / m.videos)} |")
    print(f"\nMeasured in this run (1 core): OpenCV TV-L1, default parameters, 176x100 pair: "
          f"{tvl1_s:.3f} s (docs/architecture.md anchor 0.12-0.15 s; ratio to 0.135 s: "
          f"{tvl1_s / 0.135:.2f}); JPEG decode: {decode_s * 1e3:.2f} ms per frame; index check: "
          f"{index_s * 1e3:.3f} ms per frame.\n")

    # ---- projection ------------------------------------------------------------------------
    n, frames, h, w = args.videos, args.frames, args.height, args.width
    pairs = n * (frames - 1)
    n_train = round(n * SSV1_TRAIN_FRACTION)
    ws_cores, ws_gpus = args.ws_cores, args.ws_gpus
    cl_cores, cl_gpus = args.nodes * args.node_cores, args.nodes * args.node_gpus
    t_demo, k, c = features_layout(results) if "features (rgb)" in stages else (8, 10, 2048)
    t_ssv1 = 16  # 32 clip frames, temporal stride 2 after res2
    rows = []  # (stage, disk bytes, workstation s, cluster s, source)

    archive = args.archive_gb * 1e9
    ext = stages.get("extract")
    mb_s = args.extract_mb_per_s or (ext.bytes / ext.wall_s / 1e6 if ext else float("nan"))
    extract_s = archive / (mb_s * 1e6)
    rows.append(("download + extract", 2 * archive, extract_s, extract_s,
                 f"archive size (--archive-gb) at {mb_s:.0f} MB/s; one job"))
    si = stages.get("split + index")
    # the index reads every frame; 8 threads in the rule, the cluster profile gives it 8 CPUs
    si_s = n * frames * index_s / 8
    rows.append(("split + index", si.bytes / si.videos * n if si else 0, si_s, si_s,
                 "index check s/frame measured, 8 workers; one job"))
    flow_bytes = pairs * h * w * 2 * flow_compression(results)
    flow_core_s = pairs * tvl1_s
    rows.append(("flow (TV-L1, OpenCV, CPU)", flow_bytes, flow_core_s / ws_cores,
                 flow_core_s / cl_cores,
                 f"{pairs / 1e6:.2f} M pairs x TV-L1 s measured; gzip ratio measured on synthetic flow"))
    flow_rate, flow_source = figures["flow_pairs_per_s"]
    rows.append(("flow on GPUs (TV-L1, torch backend, Triton kernel)", flow_bytes,
                 pairs / flow_rate / ws_gpus, pairs / flow_rate / cl_gpus,
                 f"the stage at {flow_rate:.0f} pairs/s/GPU, {flow_source}; instead of the row above"))
    n_eval = n - n_train  # validation and test: a clip per view and crop, boxes per view
    clips = n_train + n_eval * args.eval_views * args.eval_crops
    box_frames = n_train * t_ssv1 + n_eval * min(t_ssv1 * args.eval_views, frames)
    boxes = stages.get("boxes")
    box_bytes = boxes.bytes / boxes.videos * (t_ssv1 * 10) / (t_demo * 10) * n if boxes else 0
    box_rate, box_source = figures["detector_frames_per_s"]
    rows.append(("boxes (Faster R-CNN, GPU)", box_bytes, box_frames / box_rate / ws_gpus,
                 box_frames / box_rate / cl_gpus,
                 f"{box_frames / 1e6:.2f} M frames at {box_rate:.0f} frames/s/GPU, {box_source}"))
    per_video_features = (t_ssv1 * 10 * c * 2 + c * 2 + t_ssv1 * 10 * 17 + 16)  # roi+global+boxes+mask+ids
    feat = stages.get("features (rgb)")
    if feat:  # measured bytes per roi element, so HDF5 overheads are included
        per_video_features = feat.bytes / feat.videos * (t_ssv1 * 10 * c + c) / (t_demo * k * c + c)
    # clips per second: the GPU's, unless decoding 32 frames per clip on the CPUs is slower
    clip_rate, clip_source = figures["features_clips_per_s"]
    ws_rate = min(clip_rate * ws_gpus, ws_cores / (32 * decode_s))
    cl_rate = min(clip_rate * cl_gpus, cl_cores / (32 * decode_s))
    rows.append((f"features (I3D + RoIAlign, GPU, {args.streams} streams, "
                 f"{args.eval_views}x{args.eval_crops} views of the validation and test videos)",
                 per_video_features * clips * args.streams, clips * args.streams / ws_rate,
                 clips * args.streams / cl_rate,
                 f"{clip_rate:.0f} clips/s/GPU, {clip_source}; loader {32 * decode_s * 1e3:.0f} ms/clip/core"))
    tune_rate, tune_source = figures["finetune_clips_per_s"]
    ft_s = args.finetune_epochs * n_train / tune_rate
    rows.append((f"finetune ({args.finetune_epochs} epochs x {args.streams} streams)",
                 4 * 4 * 36e6, ft_s * args.streams / min(ws_gpus, args.streams),
                 ft_s * args.streams / min(cl_gpus, args.streams),
                 f"{tune_rate:.0f} clips/s/GPU, {tune_source}; one GPU per stream"))
    # one job per stream trains every head in one pass: each epoch reads the stream's train
    # features once (or, kept in memory, only the first epoch does)
    gcn_rate, gcn_source = figures["gcn_videos_per_s"]
    stream_bytes = n_train * per_video_features
    cached = stream_bytes < args.memory_gb * 1e9 / 2
    epoch_read_s = stream_bytes / (args.read_gb_per_s * 1e9)
    compute_s = args.gcn_models * n_train / gcn_rate
    gcn_s = (max(compute_s, epoch_read_s) + (args.gcn_epochs - 1) * (compute_s if cached else max(compute_s, epoch_read_s)))
    gcn = stages.get("GCN train + evaluate")
    demo_heads = len(list((results / "gcn").glob("*/*/model.pt")))
    gcn_runs = args.gcn_models * args.streams
    gcn_bytes = gcn.bytes / max(demo_heads, 1) * gcn_runs if gcn else 0  # checkpoints, logs, plots
    rows.append((f"GCN ({args.gcn_models} models x {args.streams} streams x {args.gcn_epochs} epochs)",
                 gcn_bytes, gcn_s * args.streams / min(ws_gpus, args.streams),
                 gcn_s * max(1.0, args.streams / cl_gpus),
                 f"{gcn_rate:.0f} videos/s/GPU per head, {gcn_source}; one job per stream, every "
                 f"head in one pass; {fmt_bytes(stream_bytes)} of train features a stream "
                 f"{'kept in memory' if cached else f'read at {args.read_gb_per_s:g} GB/s each epoch'}"))

    print(f"## Projection for SSv1: {n:,} videos x {frames:.0f} frames at {w}x{h}; "
          f"workstation {ws_cores} cores + {ws_gpus} GPU; cluster {args.nodes} nodes x "
          f"({args.node_cores} cores + {args.node_gpus} GPUs)\n")
    print("| stage | disk | workstation | cluster | cluster speed-up | figures from |")
    print("|---|---:|---:|---:|---:|---|")
    for stage, disk, ws, cl, source in rows:
        print(f"| {stage} | {fmt_bytes(disk)} | {fmt_time(ws)} | {fmt_time(cl)} | "
              f"{ws / cl:.1f}x | {source} |")
    by_name = {r[0].split(" (")[0]: r for r in rows}
    # CPU flow runs beside the GPU stages that do not need it (boxes, rgb finetune/features)
    gpu_before_flow = by_name["boxes"][2] + by_name["finetune"][2] / 2 + by_name["features"][2] / 2
    prefix = by_name["download + extract"][2] + by_name["split + index"][2]
    gpu_after = by_name["finetune"][2] / 2 + by_name["features"][2] / 2 + by_name["GCN"][2]
    ws_total = prefix + max(by_name["flow"][2], gpu_before_flow) + gpu_after
    cl_total = (prefix + max(by_name["flow"][3], by_name["boxes"][3] + by_name["finetune"][3] / 2
                + by_name["features"][3] / 2) + by_name["finetune"][3] / 2
                + by_name["features"][3] / 2 + by_name["GCN"][3])
    total_disk = sum(r[1] for r in rows if not r[0].startswith("flow on GPUs"))
    print(f"| **total** (critical path; flow overlaps the GPU stages that do not need it) | "
          f"**{fmt_bytes(total_disk)}** | **{fmt_time(ws_total)}** | **{fmt_time(cl_total)}** | "
          f"{ws_total / cl_total:.1f}x | |")
    gpu_flow = by_name["flow on GPUs"]
    ws_gpu_total = prefix + gpu_flow[2] + gpu_before_flow + gpu_after
    cl_gpu_total = (prefix + gpu_flow[3] + by_name["boxes"][3] + by_name["finetune"][3]
                    + by_name["features"][3] + by_name["GCN"][3])
    print(f"| **total with the flow on the GPUs** (every stage after index in turn) | | "
          f"**{fmt_time(ws_gpu_total)}** | **{fmt_time(cl_gpu_total)}** | "
          f"{ws_gpu_total / cl_gpu_total:.1f}x | |")
    biggest_disk = max(rows, key=lambda r: r[1])
    slowest = max(rows, key=lambda r: r[2])
    print(f"\nLargest on disk: {biggest_disk[0]} ({fmt_bytes(biggest_disk[1])}). "
          f"Longest on the workstation: {slowest[0]} ({fmt_time(slowest[2])}).")


if __name__ == "__main__":
    main()
