"""Benchmark the whole flow stage (decode, solve, quantise, write) against its solver alone.

    .venv/bin/python bench/flow_stage.py --params demo --videos 24          # CPU, light TV-L1
    PYTHONPATH=. python bench/flow_stage.py --videos 400 --batch-size 2048  # on a GPU machine

Writes ``--videos`` synthetic videos of 176x100 JPEG frames (a textured scene drifting along a
smooth random field, ``--frames`` per video) and their index to a temporary folder, then runs
:func:`regiongraph.flow.stage.compute_flow_shard` with the torch backend and times it. The
baseline, measured in the same run on the same pairs, is the solver alone:
``torch_pairs_flow`` in batches of the same size on frames already in memory. The ratio says
how much of the solver's rate the stage keeps (decoding, batching across videos, copies,
deflate and HDF5 writes). A third row runs the stage with the solver replaced by a replay of
the baseline's results (the same bytes to deflate and write): the host side's ceiling.

Where pyarrow is missing (a bare GPU machine), the index is handed to the stage in memory
instead of through its parquet file; the table says so.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.append(str(REPO / "build" / "gpu_pydeps"))  # pure-Python fallbacks (README)

from regiongraph.flow import stage, torch_tvl1  # noqa: E402
from regiongraph.flow.params import TVL1Params  # noqa: E402
from regiongraph.flow.synthetic import smooth_flow_field, textured_scene  # noqa: E402
from regiongraph.flow.torch_tvl1 import torch_pairs_flow  # noqa: E402
from regiongraph.gpus import resolve_device  # noqa: E402


def write_videos(root: Path, videos: int, frames: int, height: int = 100, width: int = 176) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    gx, gy = np.meshgrid(np.arange(width, dtype=np.float32), np.arange(height, dtype=np.float32))
    rows = []
    for v in range(videos):
        scene = textured_scene(rng, height, width)
        field = smooth_flow_field(rng, height, width, magnitude=float(rng.uniform(0.5, 2.0)))
        folder = root / "frames" / "train" / "0" / str(v)
        folder.mkdir(parents=True)
        for t in range(frames):
            frame = cv2.remap(scene, gx + t * field[0], gy + t * field[1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
            colour = cv2.cvtColor(np.clip(frame, 0, 255).astype(np.uint8), cv2.COLOR_GRAY2BGR)
            cv2.imwrite(str(folder / f"{t + 1:05d}.jpg"), colour, [cv2.IMWRITE_JPEG_QUALITY, 90])
        rows.append({"video_id": str(v), "split": "train", "label": "Pushing something", "label_index": 0,
                     "n_frames": frames, "height": height, "width": width, "frame_dir": str(folder), "shard": 0})
    return pd.DataFrame(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--videos", type=int, default=200)
    parser.add_argument("--frames", type=int, default=36, help="frames per video (SSv1: ~36)")
    parser.add_argument("--batch-size", type=int, default=2048)
    parser.add_argument("--workers", type=int, default=os.cpu_count(), help="the rule's threads: decoders and deflaters")
    parser.add_argument("--params", choices=["defaults", "demo"], default="defaults")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--jpeg-decode", nargs="+", choices=["host", "device"], default=None,
                        help="where the stage decodes frames (default: host on the CPU, both on a GPU)")
    parser.add_argument("--record", action="store_true", help="write the best stage figure to bench/measured.csv")
    args = parser.parse_args()
    if args.params == "demo":
        import yaml

        tvl1 = yaml.safe_load((REPO / "config" / "config.yaml").read_text())["flow"]["tvl1"]
    else:
        tvl1 = {}
    params = TVL1Params.from_config(tvl1)
    device = resolve_device(args.device)
    name = torch.cuda.get_device_name(0) if device.type == "cuda" else f"cpu ({os.cpu_count()} cores)"
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        index = write_videos(root, args.videos, args.frames)
        index_path = root / "index" / "train.parquet"
        index_path.parent.mkdir()
        try:
            index.to_parquet(index_path, index=False)
            how = "parquet index"
        except ImportError:  # no pyarrow: hand the index over in memory
            index_path.write_bytes(b"")
            stage.read_index = lambda _path: index
            how = "index in memory (no pyarrow)"
        pairs = args.videos * (args.frames - 1)

        # baseline: the solver alone, on the same pairs, in the same batches, frames in memory
        frames = np.stack([
            np.stack([cv2.imread(str(Path(row.frame_dir) / f"{t + 1:05d}.jpg"), cv2.IMREAD_GRAYSCALE) for t in range(args.frames)])
            for row in index.itertuples()
        ])
        first = frames[:, :-1].reshape(-1, *frames.shape[2:])
        second = frames[:, 1:].reshape(-1, *frames.shape[2:])
        torch_pairs_flow(first[: args.batch_size], second[: args.batch_size], params, device, bound=20.0)  # warm-up
        start = time.perf_counter()
        results = [
            torch_pairs_flow(first[s : s + args.batch_size], second[s : s + args.batch_size], params, device, bound=20.0)
            for s in range(0, pairs, args.batch_size)
        ]
        solver_rate = pairs / (time.perf_counter() - start)

        def run_stage(name: str, jpeg_decode: str) -> tuple[float, int]:
            start = time.perf_counter()
            counts = stage.compute_flow_shard(
                index_path, 0, root / "flow" / f"{name}.h5",
                backend="torch", tvl1=tvl1, workers=args.workers, device=str(device), batch_size=args.batch_size,
                jpeg_decode=jpeg_decode,
            )
            return counts["pairs"] / (time.perf_counter() - start), (root / "flow" / f"{name}.h5").stat().st_size

        decoders = args.jpeg_decode or (["host", "device"] if device.type == "cuda" else ["host"])
        stage_rates, host_rates = {}, {}
        for where in decoders:
            stage_rates[where], size = run_stage(f"stage-{where}", where)
            # the host side alone: the stage asks for the same batches in the same order
            replay = iter(results)
            real_solver = torch_tvl1.torch_pairs_flow
            torch_tvl1.torch_pairs_flow = lambda *args, _replay=replay, **kwargs: next(_replay)
            try:
                host_rates[where], _ = run_stage(f"replay-{where}", where)
            finally:
                torch_tvl1.torch_pairs_flow = real_solver

    print(f"TV-L1 parameters: {params.to_config()}")
    print(f"{args.videos} videos x {args.frames} frames at 176x100 = {pairs} pairs; batch {args.batch_size}; "
          f"{args.workers} worker threads; {how}; shard {size / pairs / 1e3:.1f} KB per pair\n")
    print("| what | device | pairs/s | x solver alone |")
    print("|---|---|---:|---:|")
    print(f"| solver alone (torch_pairs_flow, quantised on the device) | {name} | {solver_rate:.1f} | 1.00 |")
    for where in decoders:
        rate, host = stage_rates[where], host_rates[where]
        print(f"| flow stage (decode on the {where}, solve, quantise, deflate, write) | {name} | {rate:.1f} | {rate / solver_rate:.2f} |")
        print(f"| flow stage, decode on the {where}, solver replayed (the host side's ceiling) | {os.cpu_count()} cores | {host:.1f} | {host / solver_rate:.2f} |")
    if args.record:
        from measured import device_name, record  # bench/measured.py, beside this script

        record("flow_stage_pairs_per_s", max(stage_rates.values()), "pairs/s", device_name(device))
        print(f"\nrecorded flow_stage_pairs_per_s = {max(stage_rates.values()):.1f} in bench/measured.csv")


if __name__ == "__main__":
    main()
