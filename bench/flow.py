"""Benchmark the TV-L1 backends: OpenCV on one core and on all cores, the torch port per batch.

    .venv/bin/python bench/flow.py                     # OpenCV's default parameters, 176x100
    .venv/bin/python bench/flow.py --params demo       # the demo config's lighter parameters
    .venv/bin/python bench/flow.py --batch-sizes 1 4   # fewer torch CPU rows
    .venv/bin/python bench/flow.py --torch-threads 2   # torch on two CPU threads

Prints one markdown table. Pairs are natural-looking scenes (texture at several scales, edges,
text, JPEG) warped by smooth random fields (regiongraph.flow.synthetic); ``--pairs`` distinct
pairs are tiled to fill larger batches. Every ratio is against the OpenCV one-core rate
measured in the same run; the parity columns compare each torch row's flow with OpenCV's on
the same pairs (mean end-point error, and the share of quantised values within +-1 level).
With CUDA, rows for the torch backend on the GPU at 176x100 and 320x240 follow.
"""

from __future__ import annotations

import argparse
import os
import time
from concurrent.futures import ProcessPoolExecutor

import cv2
import numpy as np
import torch
import yaml

from regiongraph.flow.opencv_backend import create_tvl1, init_worker
from regiongraph.flow.params import TVL1Params
from regiongraph.flow.quantize import quantize_flow
from regiongraph.flow.synthetic import warped_pair
from regiongraph.flow.torch_tvl1 import torch_pairs_flow

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def make_pairs(n: int, height: int, width: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    pairs = [warped_pair(rng, height, width, magnitude=float(m)) for m in np.linspace(1.0, 5.0, n)]
    return np.stack([a for a, _, _ in pairs]), np.stack([b for _, b, _ in pairs])


def _opencv_chunk(args) -> np.ndarray:
    first, second, tvl1 = args
    solver = create_tvl1(TVL1Params.from_config(tvl1))
    return np.stack([solver.calc(a, b, None) for a, b in zip(first, second, strict=True)])


def opencv_rate(first, second, params: TVL1Params, workers: int) -> tuple[float, np.ndarray]:
    """Pairs/s of single-threaded OpenCV in ``workers`` processes (1: in this process)."""
    tvl1 = params.to_config()
    if workers == 1:
        init_worker()
        start = time.perf_counter()
        flow = _opencv_chunk((first, second, tvl1))
        return len(first) / (time.perf_counter() - start), flow
    chunks = [(first[i::workers], second[i::workers], tvl1) for i in range(workers)]
    with ProcessPoolExecutor(workers, initializer=init_worker) as pool:
        list(pool.map(_opencv_chunk, [(c[0][:1], c[1][:1], tvl1) for c in chunks]))  # start-up
        start = time.perf_counter()
        parts = list(pool.map(_opencv_chunk, chunks))
        elapsed = time.perf_counter() - start
    flow = np.empty((len(first), *first.shape[1:], 2), np.float32)
    for i, part in enumerate(parts):
        flow[i::workers] = part
    return len(first) / elapsed, flow


def torch_rate(first, second, params, device, batch, repeats) -> tuple[float, np.ndarray]:
    """Pairs/s of the torch backend on ``batch`` pairs (tiled from the distinct ones)."""
    index = np.arange(batch) % len(first)
    a, b = first[index], second[index]
    torch_pairs_flow(a[:1], b[:1], params, device)  # warm-up: allocator, CUDA context
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(repeats):
        flow = torch_pairs_flow(a, b, params, device)  # ends with a copy to the host: synchronous
    return batch * repeats / (time.perf_counter() - start), flow


def parity(flow, reference, index) -> tuple[float, float]:
    ref = reference[index]
    epe = float(np.linalg.norm(flow - ref, axis=-1).mean())
    levels = np.abs(quantize_flow(flow, 20).astype(int) - quantize_flow(ref, 20).astype(int))
    return epe, float((levels <= 1).mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", choices=["defaults", "demo"], default="defaults", help="OpenCV's defaults or config/config.yaml's flow.tvl1")
    parser.add_argument("--pairs", type=int, default=8, help="distinct frame pairs per size")
    parser.add_argument("--opencv-pairs", type=int, default=16, help="pairs timed for OpenCV (tiled)")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 4, 16, 64, 256])
    parser.add_argument("--gpu-batch-sizes", type=int, nargs="+", default=[16, 64, 256, 1024])
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="OpenCV processes of the all-cores row")
    parser.add_argument("--torch-threads", type=int, default=1, help="torch CPU threads (1: comparable with one OpenCV core)")
    args = parser.parse_args()

    if args.params == "demo":
        with open(os.path.join(REPO, "config", "config.yaml")) as handle:
            params = TVL1Params.from_config(yaml.safe_load(handle)["flow"]["tvl1"])
    else:
        params = TVL1Params()
    torch.set_num_threads(args.torch_threads)
    cv2.setNumThreads(1)
    print(f"TV-L1 parameters: {params.to_config()}")
    print(f"CPU: {os.cpu_count()} cores visible; torch {torch.__version__}, OpenCV {cv2.__version__}; torch CPU threads {args.torch_threads}")

    rows = []
    first, second = make_pairs(args.pairs, 100, 176)
    tiled = np.arange(args.opencv_pairs) % args.pairs
    base, flow = opencv_rate(first[tiled], second[tiled], params, 1)
    reference = flow[: args.pairs]
    rows.append(("opencv", "cpu, 1 process", "176x100", "-", base, None))
    if args.threads > 1:
        rate, _ = opencv_rate(first[tiled], second[tiled], params, args.threads)
        rows.append(("opencv", f"cpu, {args.threads} processes", "176x100", "-", rate, None))
    cpu = torch.device("cpu")
    for batch in args.batch_sizes:
        repeats = 3 if batch <= 4 else 1
        rate, flow = torch_rate(first, second, params, cpu, batch, repeats)
        rows.append(("torch", f"cpu, {args.torch_threads} thread(s)", "176x100", batch, rate, parity(flow, reference, np.arange(batch) % args.pairs)))
    if torch.cuda.is_available():
        gpu = torch.device("cuda")
        name = torch.cuda.get_device_name(0)
        for height, width in ((100, 176), (240, 320)):
            a, b = (first, second) if (height, width) == (100, 176) else make_pairs(args.pairs, height, width, seed=1)
            ref = reference if (height, width) == (100, 176) else opencv_rate(a, b, params, 1)[1]
            for batch in args.gpu_batch_sizes:
                rate, flow = torch_rate(a, b, params, gpu, batch, 1)
                rows.append(("torch", name, f"{width}x{height}", batch, rate, parity(flow, ref, np.arange(batch) % args.pairs)))

    print()
    print("| backend | device | frame size | batch | pairs/s | x OpenCV 1 core | EPE vs OpenCV (px) | quantised within +-1 |")
    print("|---|---|---|---|---:|---:|---:|---:|")
    for backend, device, size, batch, rate, par in rows:
        epe, within = ("-", "-") if par is None else (f"{par[0]:.4f}", f"{100 * par[1]:.3f}%")
        print(f"| {backend} | {device} | {size} | {batch} | {rate:.2f} | {rate / base:.2f} | {epe} | {within} |")


if __name__ == "__main__":
    main()
