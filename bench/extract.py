"""Benchmark: extract throughput against `cat parts | tar xz`, and index time at 10,000 videos.

    python bench/extract.py [--videos 160] [--repeats 3] [--index-videos 10000]

Both extractors read the same parts (the synthetic dataset's) into fresh folders on the same
filesystem, alternating, `repeats` times each; the table reports the median MB/s of the
archive and our ratio to tar. The index benchmark lays out `--index-videos` frame folders of
~36 small valid JPEGs (hard links to a few files: the index reads every file's bytes either
way) and times `build_index` with 1 and 2 worker processes.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from regiongraph.dataset.archive import extract_archive, find_parts
from regiongraph.dataset.index import build_index
from regiongraph.dataset.toy import ToySettings, make_toy_dataset


def time_tar(parts: list[Path], out: Path) -> float:
    out.mkdir(parents=True)
    start = time.perf_counter()
    cat = subprocess.Popen(["cat", *map(str, parts)], stdout=subprocess.PIPE)
    subprocess.run(["tar", "xz", "-C", str(out)], stdin=cat.stdout, check=True)
    cat.wait()
    return time.perf_counter() - start


def time_ours(archives: Path, out: Path) -> float:
    start = time.perf_counter()
    extract_archive(archives, out)
    return time.perf_counter() - start


def bench_extract(root: Path, videos: int, repeats: int) -> list[tuple]:
    archives = root / "archives"
    summary = make_toy_dataset(
        archives, root / "annotations", ToySettings(videos=videos, part_bytes=4_000_000)
    )
    parts = [p.path for p in find_parts(archives)]
    megabytes = sum(p.stat().st_size for p in parts) / 1e6
    times: dict[str, list[float]] = {"tar": [], "ours": []}
    for r in range(repeats):
        # alternate which goes first (the filesystem's writeback of the previous run's files
        # slows whichever comes second), and flush before each
        runs = [
            ("tar", lambda r=r: time_tar(parts, root / f"tar{r}")),
            ("ours", lambda r=r: time_ours(archives, root / f"ours{r}")),
        ]
        for name, run in runs if r % 2 == 0 else runs[::-1]:
            subprocess.run(["sync"], check=False)
            time.sleep(1)
            times[name].append(run())
        shutil.rmtree(root / f"tar{r}")
        for folder in (root / f"ours{r}").rglob("*"):
            if folder.is_dir():
                os.chmod(folder, 0o755)
        subprocess.run(["chmod", "-R", "u+w", str(root / f"ours{r}")], check=True)
        shutil.rmtree(root / f"ours{r}")
    tar, ours = statistics.median(times["tar"]), statistics.median(times["ours"])
    return [
        (
            "extract: cat parts | tar xz",
            f"{summary['frames']} frames, {megabytes:.1f} MB",
            f"{tar:.2f} s",
            f"{megabytes / tar:.1f} MB/s",
            "1.00",
        ),
        (
            "extract: regiongraph (stream, checks)",
            f"{summary['frames']} frames, {megabytes:.1f} MB",
            f"{ours:.2f} s",
            f"{megabytes / ours:.1f} MB/s",
            f"{tar / ours:.2f}",
        ),
    ]


def bench_index(root: Path, n_videos: int) -> list[tuple]:
    rng = np.random.default_rng(0)
    templates = []
    for i in range(32):  # ext4 allows 65,000 links per file
        image = rng.integers(0, 255, size=(100, 176, 3), dtype=np.uint8)
        path = root / f"template{i}.jpg"
        cv2.imwrite(str(path), image)
        templates.append(path)
    frames_root = root / "frames"
    rows = []
    start = time.perf_counter()
    for v in range(n_videos):
        folder = frames_root / str(v)
        folder.mkdir(parents=True)
        n = int(rng.integers(30, 43))
        for f in range(n):
            os.link(templates[(v + f) % 32], folder / f"{f + 1:05d}.jpg")
        rows.append((str(v), "train", "x", 0, str(folder), str(folder)))
    layout = time.perf_counter() - start
    videos = pd.DataFrame(
        rows, columns=["video_id", "split", "label", "label_index", "frame_dir", "raw_dir"]
    )
    out = []
    base = None
    for workers in (1, 2):
        subprocess.run(["sync"], check=False)
        start = time.perf_counter()
        result = build_index(
            videos, {"train": 256, "validation": 1, "test": 1}, 32, "drop", workers=workers
        )
        elapsed = time.perf_counter() - start
        base = base or elapsed
        kept = len(result.splits["train"])
        out.append(
            (
                f"index: {workers} worker(s)",
                f"{n_videos} videos ({kept} kept)",
                f"{elapsed:.2f} s",
                f"{n_videos / elapsed:.0f} videos/s",
                f"{base / elapsed:.2f}",
            )
        )
    print(f"(index layout of {n_videos} folders took {layout:.1f} s, not counted)", file=sys.stderr)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--videos", type=int, default=160)
    parser.add_argument("--repeats", type=int, default=4)
    parser.add_argument("--index-videos", type=int, default=10_000)
    parser.add_argument(
        "--workdir",
        type=Path,
        default=None,
        help="folder on the filesystem to measure (default: a temporary one)",
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        rows = bench_extract(Path(tmp), args.videos, args.repeats)
        print(rows, file=sys.stderr)
        rows += bench_index(Path(tmp), args.index_videos)
        subprocess.run(["chmod", "-R", "u+w", tmp], check=False)
    print(
        f"\nmachine: {os.cpu_count()} cores; median of {args.repeats} repeats for extract, alternating which runs first\n"
    )
    print("| what | data | time | throughput | ratio to baseline |")
    print("|---|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
