"""Benchmark the TV-L1 backends: OpenCV on one core and on all cores, the torch port per batch.

    .venv/bin/python bench/flow.py                     # OpenCV's default parameters, 176x100
    .venv/bin/python bench/flow.py --params demo       # the demo config's lighter parameters
    .venv/bin/python bench/flow.py --batch-sizes 1 4   # fewer torch CPU rows
    .venv/bin/python bench/flow.py --torch-threads 2   # torch on two CPU threads
    .venv/bin/python bench/flow.py --save-reference build/flow_reference.npz   # for a GPU machine
    PYTHONPATH=. python bench/flow.py --reference build/flow_reference.npz --no-cpu   # there

Prints one markdown table. Pairs are natural-looking scenes (texture at several scales, edges,
text, JPEG) warped by smooth random fields (regiongraph.flow.synthetic); ``--pairs`` distinct
pairs are tiled to fill larger batches. Every ratio is against the OpenCV one-core rate
at the same frame size measured in the same run; the parity columns compare each torch row's flow with OpenCV's on
the same pairs (mean end-point error, and the share of quantised values within +-1 level).
With CUDA, rows for the torch backend on the GPU at 176x100 and 320x240 follow: the fused
Triton kernel per batch size, a sweep of its launch settings, and the eager port for scale.

A GPU machine without OpenCV's contrib module (no TV-L1) takes the pairs, OpenCV's flow and
OpenCV's one-core rate from a ``--reference`` file written here with ``--save-reference``; the
ratio base is then this machine's one-core rate, and the table says so.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from concurrent.futures import ProcessPoolExecutor

import numpy as np
import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.append(os.path.join(REPO, "build", "gpu_pydeps"))  # pure-Python fallbacks, see README

from regiongraph.flow.params import TVL1Params  # noqa: E402
from regiongraph.flow.quantize import quantize_flow  # noqa: E402
from regiongraph.flow.torch_tvl1 import torch_pairs_flow  # noqa: E402

SIZES = ((100, 176), (240, 320))


def make_pairs(n: int, height: int, width: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    from regiongraph.flow.synthetic import warped_pair

    rng = np.random.default_rng(seed)
    pairs = [warped_pair(rng, height, width, magnitude=float(m)) for m in np.linspace(1.0, 5.0, n)]
    return np.stack([a for a, _, _ in pairs]), np.stack([b for _, b, _ in pairs])


def _opencv_chunk(args) -> np.ndarray:
    from regiongraph.flow.opencv_backend import create_tvl1

    first, second, tvl1 = args
    solver = create_tvl1(TVL1Params.from_config(tvl1))
    return np.stack([solver.calc(a, b, None) for a, b in zip(first, second, strict=True)])


def opencv_rate(first, second, params: TVL1Params, workers: int) -> tuple[float, np.ndarray]:
    """Pairs/s of single-threaded OpenCV in ``workers`` processes (1: in this process)."""
    from regiongraph.flow.opencv_backend import init_worker

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


def torch_rate(first, second, params, device, batch, kernel="auto", min_seconds=0.0):
    """Pairs/s of the torch backend on ``batch`` pairs (tiled from the distinct ones).

    Returns the rate, the flow of the last run and the mean inner iterations per pair
    (the fused kernel counts them; ``nan`` for the eager port).
    """
    index = np.arange(batch) % len(first)
    a, b = first[index], second[index]
    torch_pairs_flow(a, b, params, device, kernel)  # warm-up: compilation, allocator, context
    runs, elapsed = 0, 0.0
    iterations = torch.zeros(batch, dtype=torch.int32, device=device)
    while runs == 0 or elapsed < min_seconds:
        iterations.zero_()
        start = time.perf_counter()
        flow = torch_pairs_flow(a, b, params, device, kernel, iterations)  # ends with a host copy
        elapsed += time.perf_counter() - start
        runs += 1
    counted = float(iterations.float().mean())
    return batch * runs / elapsed, flow, counted if counted > 0 else float("nan")


def parity(flow, reference, index) -> tuple[float, float]:
    ref = reference[index]
    epe = float(np.linalg.norm(flow - ref, axis=-1).mean())
    levels = np.abs(quantize_flow(flow, 20).astype(int) - quantize_flow(ref, 20).astype(int))
    return epe, float((levels <= 1).mean())


def configure_launch(launch: str) -> None:
    """``BLOCKxWARPS[.cg]`` -> the Triton kernel's launch settings for later calls."""
    from regiongraph.flow import triton_tvl1

    settings, _, cache = launch.partition(".")
    block, warps = (int(v) for v in settings.split("x"))
    triton_tvl1.configure(block=block, num_warps=warps, cache="." + cache if cache else "")


def save_reference(path: str, params: TVL1Params, pairs: int) -> None:
    """Pairs at both sizes, OpenCV's flow of them and OpenCV's one-core rate, for a GPU run."""
    import cv2

    cv2.setNumThreads(1)
    data = {}
    for height, width in SIZES:
        first, second = make_pairs(pairs, height, width, seed=0 if height == 100 else 1)
        rate, flow = opencv_rate(first, second, params, 1)
        key = f"{width}x{height}"
        data.update({f"{key}_first": first, f"{key}_second": second, f"{key}_flow": flow})
        data[f"{key}_rate"] = np.float64(rate)
        print(f"OpenCV one core, {key}: {rate:.2f} pairs/s over {pairs} pairs")
    data["params"] = np.array(repr(params.to_config()))
    data["machine"] = np.array(f"{platform.node()}, {platform.processor() or platform.machine()}, OpenCV {cv2.__version__}")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    np.savez_compressed(path, **data)
    print(f"wrote {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", choices=["defaults", "demo"], default="defaults", help="OpenCV's defaults or config/config.yaml's flow.tvl1")
    parser.add_argument("--pairs", type=int, default=8, help="distinct frame pairs per size")
    parser.add_argument("--opencv-pairs", type=int, default=16, help="pairs timed for OpenCV (tiled)")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 4, 16, 64, 256])
    parser.add_argument("--gpu-batch-sizes", type=int, nargs="+", default=[16, 64, 256, 1024, 4096])
    parser.add_argument("--gpu-launch", nargs="*", default=["128x4", "256x8", "512x16", "1024x8"], metavar="BLOCKxWARPS[.cg]", help="Triton launch settings to compare first (pixels per step x warps, .cg: loads bypass L1); the fastest with parity serves the other rows")
    parser.add_argument("--gpu-launch-batch", type=int, default=1024, help="batch of the launch-settings rows")
    parser.add_argument("--gpu-eager-batch", type=int, default=256, help="batch of the eager port's GPU row (0: none)")
    parser.add_argument("--gpu-seconds", type=float, default=1.0, help="repeat each GPU measurement for at least this long")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="OpenCV processes of the all-cores row")
    parser.add_argument("--torch-threads", type=int, default=1, help="torch CPU threads (1: comparable with one OpenCV core)")
    parser.add_argument("--reference", help="take pairs, OpenCV flow and OpenCV's rate from this file (written by --save-reference)")
    parser.add_argument("--save-reference", metavar="PATH", help="write the reference file and stop")
    parser.add_argument("--no-cpu", action="store_true", help="skip the torch CPU rows")
    args = parser.parse_args()

    if args.params == "demo":
        import yaml

        with open(os.path.join(REPO, "config", "config.yaml")) as handle:
            params = TVL1Params.from_config(yaml.safe_load(handle)["flow"]["tvl1"])
    else:
        params = TVL1Params()
    if args.save_reference:
        save_reference(args.save_reference, params, args.pairs)
        return
    torch.set_num_threads(args.torch_threads)
    print(f"TV-L1 parameters: {params.to_config()}")
    print(f"CPU: {os.cpu_count()} cores visible; torch {torch.__version__}; torch CPU threads {args.torch_threads}")

    rows = []  # backend, kernel, device, size, batch, launch, rate, parity, iterations
    inputs, references, bases = {}, {}, {}  # per frame size
    if args.reference:
        ref = np.load(args.reference)
        if str(ref["params"]) != repr(params.to_config()):
            sys.exit(f"{args.reference} was made with parameters {ref['params']}, not {params.to_config()}")
        for height, width in SIZES:
            key = f"{width}x{height}"
            inputs[key] = ref[f"{key}_first"], ref[f"{key}_second"]
            references[key] = ref[f"{key}_flow"]
            bases[key] = float(ref[f"{key}_rate"])
            rows.append(("opencv", "-", f"cpu, 1 process (reference file: {ref['machine']})", key, "-", "-", bases[key], None, float("nan")))
        print(f"OpenCV rates and flow from {args.reference} ({ref['machine']})")
    else:
        import cv2

        cv2.setNumThreads(1)
        print(f"OpenCV {cv2.__version__}")
        first, second = make_pairs(args.pairs, 100, 176)
        inputs["176x100"] = first, second
        tiled = np.arange(args.opencv_pairs) % args.pairs
        bases["176x100"], flow = opencv_rate(first[tiled], second[tiled], params, 1)
        references["176x100"] = flow[: args.pairs]
        rows.append(("opencv", "-", "cpu, 1 process", "176x100", "-", "-", bases["176x100"], None, float("nan")))
        if args.threads > 1:
            rate, _ = opencv_rate(first[tiled], second[tiled], params, args.threads)
            rows.append(("opencv", "-", f"cpu, {args.threads} processes", "176x100", "-", "-", rate, None, float("nan")))

    first, second = inputs["176x100"]
    n = len(first)
    if not args.no_cpu:
        cpu = torch.device("cpu")
        for batch in args.batch_sizes:
            rate, flow, _ = torch_rate(first, second, params, cpu, batch, "eager", min_seconds=0.5 if batch <= 4 else 0.0)
            rows.append(("torch", "eager", f"cpu, {args.torch_threads} thread(s)", "176x100", batch, "-", rate, parity(flow, references["176x100"], np.arange(batch) % n), float("nan")))

    if torch.cuda.is_available():
        from regiongraph.flow import triton_tvl1

        gpu = torch.device("cuda")
        name = torch.cuda.get_device_name(0)
        if "320x240" not in inputs:
            inputs["320x240"] = make_pairs(args.pairs, 240, 320, seed=1)
            bases["320x240"], references["320x240"] = opencv_rate(*inputs["320x240"], params, 1)
            rows.append(("opencv", "-", "cpu, 1 process", "320x240", "-", "-", bases["320x240"], None, float("nan")))
        # launch settings first, at one batch size; the best (with parity) serves the rest
        best = (0.0, f"{triton_tvl1.BLOCK}x{triton_tvl1.NUM_WARPS}")
        for launch in args.gpu_launch:
            configure_launch(launch)
            rate, flow, iters = torch_rate(first, second, params, gpu, args.gpu_launch_batch, "triton", args.gpu_seconds)
            par = parity(flow, references["176x100"], np.arange(args.gpu_launch_batch) % n)
            rows.append(("torch", "triton", name, "176x100", args.gpu_launch_batch, launch, rate, par, iters))
            print(rows[-1], flush=True)
            if par[0] <= 0.15 and rate > best[0]:
                best = (rate, launch)
        configure_launch(best[1])
        for size in ("176x100", "320x240"):
            a, b = inputs[size]
            for batch in args.gpu_batch_sizes:
                if size == "320x240" and batch > 1024:
                    continue
                rate, flow, iters = torch_rate(a, b, params, gpu, batch, "triton", args.gpu_seconds)
                rows.append(("torch", "triton", name, size, batch, best[1], rate, parity(flow, references[size], np.arange(batch) % len(a)), iters))
                print(rows[-1], flush=True)
        if args.gpu_eager_batch:
            batch = args.gpu_eager_batch
            rate, flow, _ = torch_rate(first, second, params, gpu, batch, "eager")
            rows.append(("torch", "eager", name, "176x100", batch, "-", rate, parity(flow, references["176x100"], np.arange(batch) % n), float("nan")))

    print()
    print("| backend | kernel | device | frame size | batch | launch | pairs/s | x OpenCV 1 core | EPE vs OpenCV (px) | quantised within +-1 | inner iterations / pair |")
    print("|---|---|---|---|---:|---|---:|---:|---:|---:|---:|")
    for backend, kernel, device, size, batch, launch, rate, par, iters in rows:
        epe, within = ("-", "-") if par is None else (f"{par[0]:.4f}", f"{100 * par[1]:.3f}%")
        its = "-" if iters != iters else f"{iters:.0f}"
        ratio = rate / bases[size]
        print(f"| {backend} | {kernel} | {device} | {size} | {batch} | {launch} | {rate:.2f} | {ratio:.2f} | {epe} | {within} | {its} |")


if __name__ == "__main__":
    main()
