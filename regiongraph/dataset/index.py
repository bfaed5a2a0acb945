"""The video index: one row per kept video, checked cheaply, assigned to a fixed shard.

For each linked video the frame folder is listed once and every frame is checked without
decoding (:func:`regiongraph.dataset.frames.check_jpeg_bytes`: size, start and end markers),
so that gaps in the numbering, zero-byte and truncated JPEGs are reported here, before any
expensive stage reads them. The frame size comes from the first frame's JPEG header.

Only the train split drops short videos (``index.short_videos: drop``): a validation or test
video is kept whatever its length, and its clips loop over its frames, so that every video of
the evaluation splits is scored.

Shards are fixed per split and chosen by a stable hash of the video id, so the workflow's
DAG (one job per shard) is known before anything runs and does not change when videos are
dropped.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from PIL import Image
from tqdm import tqdm

from regiongraph.dataset.frames import check_jpeg_bytes

log = logging.getLogger(__name__)

FRAME_NAME = re.compile(r"^(\d+)\.jpg$")
INDEX_COLUMNS = [
    "video_id",
    "split",
    "label",
    "label_index",
    "n_frames",
    "height",
    "width",
    "frame_dir",
    "shard",
]
EXTRA_COLUMNS = ("placeholders",)  # kept when the split table has them (SSv2)


def stable_shard(video_id: str, n_shards: int) -> int:
    """Shard of a video: BLAKE2b of its id modulo the shard count (independent of Python's hash seed)."""
    digest = hashlib.blake2b(video_id.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") % n_shards


@dataclass(frozen=True)
class FrameCheck:
    video_id: str
    n_frames: int
    height: int
    width: int
    problem: str | None


def check_frame_folder(video_id: str, folder: str) -> FrameCheck:
    """Count frames, check numbering 1..N without gaps, check each JPEG's bytes, read the size."""
    try:
        names = os.listdir(folder)
    except OSError as error:
        return FrameCheck(
            video_id, 0, 0, 0, f"cannot list frame folder {folder} ({error.strerror})"
        )
    numbers = sorted(int(m.group(1)) for name in names if (m := FRAME_NAME.match(name)))
    if not numbers:
        return FrameCheck(video_id, 0, 0, 0, f"no frames in {folder}")
    if numbers[0] != 1 or numbers[-1] != len(numbers):
        expected = set(range(1, numbers[-1] + 1))
        missing = sorted(expected - set(numbers))
        first = missing[0] if missing else numbers[0]
        return FrameCheck(
            video_id,
            len(numbers),
            0,
            0,
            f"missing frame {first:05d}.jpg in {folder} ({len(missing)} missing)",
        )
    for number in numbers:
        path = os.path.join(folder, f"{number:05d}.jpg")
        problem = check_jpeg_bytes(path)
        if problem:
            return FrameCheck(video_id, len(numbers), 0, 0, f"{problem}: {os.path.realpath(path)}")
    first = os.path.join(folder, f"{numbers[0]:05d}.jpg")
    try:
        with Image.open(first) as image:  # reads the header only
            width, height = image.size
    except (OSError, ValueError) as error:
        return FrameCheck(
            video_id, len(numbers), 0, 0, f"unreadable JPEG header ({error}): {first}"
        )
    return FrameCheck(video_id, len(numbers), height, width, None)


def _check_many(items: list[tuple[str, str]]) -> list[FrameCheck]:
    return [check_frame_folder(video_id, folder) for video_id, folder in items]


def check_videos(videos: pd.DataFrame, workers: int = 1, chunk: int = 64) -> list[FrameCheck]:
    """Check every video's frame folder, in ``workers`` processes, with a progress bar."""
    items = list(zip(videos["video_id"], videos["frame_dir"], strict=True))
    batches = [items[i : i + chunk] for i in range(0, len(items), chunk)]
    results: list[FrameCheck] = []
    with tqdm(total=len(items), desc="index", unit="video") as progress:
        if workers <= 1:
            for batch in batches:
                results.extend(_check_many(batch))
                progress.update(len(batch))
        else:
            with ProcessPoolExecutor(max_workers=workers) as pool:
                for batch_result in pool.map(_check_many, batches):
                    results.extend(batch_result)
                    progress.update(len(batch_result))
    return results


@dataclass
class IndexResult:
    splits: dict[str, pd.DataFrame]
    dropped: pd.DataFrame


def build_index(
    videos: pd.DataFrame,
    shards: dict[str, int],
    min_frames: int,
    short_videos: str,
    workers: int = 1,
) -> IndexResult:
    """Index rows per split and the videos dropped here (bad frames; train videos too short)."""
    if short_videos not in ("drop", "loop"):
        raise ValueError(f"index.short_videos must be 'drop' or 'loop', got {short_videos!r}")
    checks = check_videos(videos, workers=workers)
    # SSv2 carries each video's objects (placeholders) through to the index
    extra = [c for c in EXTRA_COLUMNS if c in videos.columns]
    rows, dropped = [], []
    for (_, video), check in zip(videos.iterrows(), checks, strict=True):
        if check.problem:
            dropped.append((video.video_id, video.split, check.problem, "index"))
            continue
        if check.n_frames < min_frames and short_videos == "drop" and video.split == "train":
            reason = f"too short: {check.n_frames} frames < index.min_frames {min_frames}"
            dropped.append((video.video_id, video.split, reason, "index"))
            continue
        shard = stable_shard(video.video_id, shards[video.split])
        rows.append(
            (
                video.video_id,
                video.split,
                video.label,
                int(video.label_index),
                check.n_frames,
                check.height,
                check.width,
                video.frame_dir,
                shard,
                *(list(video[c]) for c in extra),
            )
        )
    for video_id, split, reason, _ in dropped:
        log.warning("dropped video %s (%s): %s", video_id, split, reason)
    table = pd.DataFrame(rows, columns=[*INDEX_COLUMNS, *extra])
    for column in ("label_index", "n_frames", "height", "width", "shard"):
        table[column] = table[column].astype("int64")
    splits = {
        split: table[table["split"] == split]
        .sort_values("video_id", key=_id_order)
        .reset_index(drop=True)
        for split in ("train", "validation", "test")
    }
    return IndexResult(
        splits, pd.DataFrame(dropped, columns=["video_id", "split", "reason", "stage"])
    )


def _id_order(ids: pd.Series) -> pd.Series:
    """Numeric order for SSv1's numeric ids, text order otherwise."""
    numeric = pd.to_numeric(ids, errors="coerce")
    return numeric if numeric.notna().all() else ids


def read_index(path: str | os.PathLike) -> pd.DataFrame:
    """``index/{split}.parquet``, checked for its columns, in its own (video id) order."""
    path = Path(path)
    table = pd.read_parquet(path)
    missing = [c for c in INDEX_COLUMNS if c not in table.columns]
    if missing:
        raise ValueError(f"{path}: index lacks columns {missing}; rerun the index stage")
    return table


def read_shard(path: str | os.PathLike, shard: int) -> tuple[pd.DataFrame, str]:
    """The rows of shard ``shard`` of the index at ``path``, in index order, and the split.

    Every per-shard stage reads its videos here, so that all of them see one order."""
    index = read_index(path)
    rows = index[index["shard"] == int(shard)].reset_index(drop=True)
    split = str(index["split"].iloc[0]) if len(index) else Path(path).stem
    return rows, split
