"""Benchmark: SSv2 webm -> JPEG frame folders, our decoder (PyAV) against the ``ffmpeg`` program.

    python bench/decode.py [--videos DIR] [--count 24] [--frames 48] [--repeats 3] [--record]

Both decode the same files on one core into fresh folders, every frame written as a JPEG:
ours is :func:`regiongraph.dataset.video.decode_video` (one process, one decoder thread, the
decode stage's per-worker work), the reference ``ffmpeg -threads 1 -i X.webm -threads 1 -q:v 2
out/%05d.jpg`` (FFmpeg's own JPEG encoder at a high quality, as the usual frame-extraction
recipes run it; its time includes starting one ffmpeg process per video, as such a recipe
does). The table gives the median frames per second per core of ``repeats`` rounds
(alternating which goes first) and our ratio to ffmpeg; the goal is at least 0.8x. The decode
stage runs one such worker per core.

``--videos DIR`` times real ``<id>.webm`` files; without it, ``--count`` synthetic videos of
SSv2's size (240 x 428, 12 fps, VP9, ``--frames`` frames each) are encoded first.
``--record`` writes our frames per second per core into ``bench/measured.csv``
(``decode_frames_per_s_per_core``).
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

import numpy as np

from regiongraph.dataset.toy import encode_webm, render_video
from regiongraph.dataset.video import DecodeSettings, decode_video


def synthetic_videos(folder: Path, count: int, frames: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        images, _ = render_video(i % 10, frames, 240, 428, np.random.default_rng(i))
        path = folder / f"{i + 1}.webm"
        path.write_bytes(encode_webm(images))
        paths.append(path)
    return paths


def time_ours(videos: list[Path], out: Path, quality: int) -> tuple[float, int]:
    settings = DecodeSettings(short_side=None, jpeg_quality=quality)
    start, frames = time.perf_counter(), 0
    for video in videos:
        target = out / video.stem
        target.mkdir(parents=True)
        frames += decode_video(video, target, settings)
    return time.perf_counter() - start, frames


def time_ffmpeg(videos: list[Path], out: Path) -> tuple[float, int]:
    start = time.perf_counter()
    for video in videos:
        target = out / video.stem
        target.mkdir(parents=True)
        subprocess.run(
            ["ffmpeg", "-nostdin", "-v", "error", "-threads", "1", "-i", str(video),
             "-threads", "1", "-q:v", "2", str(target / "%05d.jpg")],
            check=True,
        )
    elapsed = time.perf_counter() - start
    return elapsed, sum(len(os.listdir(out / v.stem)) for v in videos)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=Path, help="folder of real <id>.webm files")
    parser.add_argument("--count", type=int, default=24)
    parser.add_argument("--frames", type=int, default=48)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quality", type=int, default=90, help="our JPEG quality (frames.jpeg_quality)")
    parser.add_argument("--record", action="store_true", help="write our rate to bench/measured.csv")
    args = parser.parse_args()
    if shutil.which("ffmpeg") is None:
        sys.exit("ffmpeg is not on PATH (apt-get install ffmpeg)")
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})  # one core for both, and ffmpeg's children
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        if args.videos:
            videos = sorted(args.videos.glob("*.webm"))[: args.count]
            source = f"{len(videos)} videos from {args.videos}"
        else:
            videos = synthetic_videos(root / "videos", args.count, args.frames)
            source = f"{len(videos)} synthetic VP9 videos, 240x428, {args.frames} frames each"
        times: dict[str, list[float]] = {"ours": [], "ffmpeg": []}
        frames: dict[str, int] = {}
        for r in range(args.repeats):
            runs = [("ours", lambda r=r: time_ours(videos, root / f"ours{r}", args.quality)),
                    ("ffmpeg", lambda r=r: time_ffmpeg(videos, root / f"ffmpeg{r}"))]
            for name, run in runs if r % 2 == 0 else runs[::-1]:
                os.sync()
                elapsed, n = run()
                times[name].append(elapsed)
                frames[name] = n
                shutil.rmtree(root / f"{name}{r}")
    if frames["ours"] != frames["ffmpeg"]:
        sys.exit(f"frame counts differ: ours {frames['ours']}, ffmpeg {frames['ffmpeg']}")
    rate = {name: frames[name] / statistics.median(t) for name, t in times.items()}
    print(f"decode to JPEG frame folders, one core: {source} ({frames['ours']} frames), "
          f"median of {args.repeats}")
    print(f"| {'decoder':<46} | frames/s per core | vs ffmpeg |")
    print(f"|{'-' * 48}|-------------------|-----------|")
    rows = [(f"ours: PyAV decode + OpenCV JPEG (quality {args.quality})", "ours"),
            ("ffmpeg -threads 1 ... -q:v 2 %05d.jpg", "ffmpeg")]
    for label, name in rows:
        print(f"| {label:<46} | {rate[name]:17.0f} | {rate[name] / rate['ffmpeg']:8.2f}x |")
    if args.record:
        from measured import record  # bench/measured.py, beside this script

        record("decode_frames_per_s_per_core", rate["ours"], "frames/s", "cpu")


if __name__ == "__main__":
    main()
