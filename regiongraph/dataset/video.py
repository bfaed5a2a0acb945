"""Decoding the SSv2 videos (``<id>.webm``, VP9, 12 fps) into the frame folders the later stages read.

Every decoded frame is kept, at the video's own rate, numbered from ``00001.jpg`` in the same
layout as the SSv1 download (``{frames}/{id}/00001.jpg ...``): Something-Else's boxes
(``bounding_box_smthsmth_part*.json``) number the frames of the same decode from ``0001.jpg``,
so frame ``n`` of the boxes is ``{n:05d}.jpg`` here. ``short_side`` (optional) resizes each
frame so that its shorter side has that many pixels (aspect kept, sizes rounded to even).

Decoding uses PyAV (FFmpeg's libraries: the same VP9 decoder as the ``ffmpeg`` program), one
video per task in ``workers`` processes, one decoder thread each (a 240-px VP9 frame gains
nothing from frame threads, and processes scale with the cores). A video that cannot be read
is dropped with its reason and the job goes on:

- a zero-byte file, a file FFmpeg cannot open or demux, a decoder error, no video stream or no
  frame;
- a truncated file: FFmpeg's Matroska demuxer says ``File ended prematurely``, or the frames
  decoded end more than two frames before the duration the container records (a file cut
  between two clusters otherwise decodes silently to a shorter video).

Each video is written into ``{id}.partial/`` and renamed to ``{id}/`` when whole, so a killed
job never leaves a folder that looks complete, and a rerun with the same settings decodes only
the videos that are not there yet (the settings are stamped in the folder; other settings start
afresh).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
from tqdm import tqdm

log = logging.getLogger(__name__)

STAMP = ".regiongraph-decode.json"
VIDEO_SUFFIX = ".webm"
DECODE_DROPPED_COLUMNS = ["video_id", "reason"]


class VideoDecodeError(ValueError):
    """A video file is empty, truncated or does not decode."""


@dataclass(frozen=True)
class DecodeSettings:
    """How frames are written (``frames`` in the config; defaults live in the schema)."""

    short_side: int | None
    jpeg_quality: int


def output_size(width: int, height: int, short_side: int | None) -> tuple[int, int]:
    """(width, height) of the written frames: native, or the short side scaled to ``short_side``
    with the aspect kept, both rounded to even numbers (what 4:2:0 video needs)."""
    if short_side is None:
        return width, height
    scale = short_side / min(width, height)
    return (
        max(2, int(round(width * scale / 2)) * 2),
        max(2, int(round(height * scale / 2)) * 2),
    )


def decode_video(path: str | os.PathLike, out_dir: str | os.PathLike, settings: DecodeSettings) -> int:
    """Decode every frame of ``path`` into ``out_dir/00001.jpg ...``; return the frame count.

    Raises :class:`VideoDecodeError` naming the file and the problem; ``out_dir`` may then hold
    some frames (the caller removes it)."""
    import av
    import av.logging

    path, out_dir = Path(path), Path(out_dir)
    if path.stat().st_size == 0:
        raise VideoDecodeError(f"zero-byte video file {path}")
    av.logging.set_level(av.logging.WARNING)  # so that the demuxer's warnings reach Capture
    encode = [int(cv2.IMWRITE_JPEG_QUALITY), settings.jpeg_quality]
    n = 0
    last_end = None
    try:
        with av.logging.Capture(True) as messages, av.open(str(path)) as container:
            if not container.streams.video:
                raise VideoDecodeError(f"no video stream in {path}")
            stream = container.streams.video[0]
            stream.thread_count = 1
            # where the frames should end, s (microseconds in the container's header)
            end = None
            if container.duration:
                end = ((container.start_time or 0) + container.duration) / 1e6
            step = 1 / float(stream.average_rate or stream.guessed_rate or 12)  # one frame, s
            size = None
            for frame in container.decode(stream):
                if size is None:
                    size = output_size(frame.width, frame.height, settings.short_side)
                image = frame.to_ndarray(
                    format="bgr24", width=size[0], height=size[1], interpolation="AREA"
                )
                ok, jpeg = cv2.imencode(".jpg", image, encode)
                if not ok:
                    raise VideoDecodeError(f"cannot encode frame {n + 1} of {path} as JPEG")
                n += 1
                jpeg.tofile(out_dir / f"{n:05d}.jpg")
                if frame.pts is not None and frame.time_base is not None:
                    last_end = float(frame.pts * frame.time_base) + step
    except av.error.FFmpegError as error:
        raise VideoDecodeError(f"undecodable video {path} after {n} frames ({error})") from error
    warnings = [text.strip() for _level, _name, text in messages if "prematurely" in text]
    if warnings:
        raise VideoDecodeError(f"truncated video {path}: {warnings[0]} (after {n} frames)")
    if n == 0:
        raise VideoDecodeError(f"no frame decodes in {path}")
    # more than two frames short: a rounded duration in a whole file never is
    if end is not None and last_end is not None and end - last_end > 2 * step:
        raise VideoDecodeError(
            f"truncated video {path}: its frames end at {last_end:.3f} s, the container says "
            f"{end:.3f} s ({n} frames decoded)"
        )
    return n


def _decode_one(task: tuple[str, str, str, DecodeSettings]) -> tuple[str, int, str | None]:
    """Worker: decode one video into ``{folder}/{id}.partial`` and rename it when whole."""
    video_id, source, target, settings = task
    target = Path(target)
    partial = target.with_name(target.name + ".partial")
    if partial.exists():
        shutil.rmtree(partial)
    partial.mkdir()
    try:
        n = decode_video(source, partial, settings)
    except VideoDecodeError as error:
        shutil.rmtree(partial, ignore_errors=True)
        return video_id, 0, str(error)
    except Exception as error:  # noqa: BLE001 - one bad video must not end a 220k-video job
        shutil.rmtree(partial, ignore_errors=True)
        return video_id, 0, f"cannot decode {source} ({type(error).__name__}: {error})"
    os.replace(partial, target)
    return video_id, n, None


@dataclass
class DecodeResult:
    videos: int  # videos with frames (decoded now or earlier)
    decoded: int  # decoded by this run
    frames: int  # frames written by this run
    dropped: list[tuple[str, str]]  # (video_id, reason)


def list_videos(folder: str | os.PathLike) -> dict[str, Path]:
    """``{video_id: path}`` of the ``<id>.webm`` files in ``folder``."""
    folder = Path(folder)
    if not folder.is_dir():
        raise VideoDecodeError(
            f"{folder}: no folder of videos (the extracted archive should hold "
            f"{folder.name}/<id>.webm)"
        )
    return {p.name[: -len(VIDEO_SUFFIX)]: p for p in folder.iterdir() if p.name.endswith(VIDEO_SUFFIX)}


def decode_videos(
    videos_dir: str | os.PathLike,
    frames_dir: str | os.PathLike,
    settings: DecodeSettings,
    workers: int = 1,
    source: object = None,
) -> DecodeResult:
    """Decode every ``<id>.webm`` of ``videos_dir`` into ``frames_dir/<id>/``; see the module.

    ``source`` identifies the videos (the extraction's part digests): frames decoded with other
    settings or from another source are removed and decoded again."""
    videos = list_videos(videos_dir)
    frames_dir = Path(frames_dir)
    stamp = frames_dir / STAMP
    wanted = {**asdict(settings), "source": source}
    if frames_dir.exists() and (not stamp.exists() or json.loads(stamp.read_text()) != wanted):
        log.info(
            "%s: decoded with other settings or from other videos; decoding again", frames_dir
        )
        shutil.rmtree(frames_dir)
    frames_dir.mkdir(parents=True, exist_ok=True)
    stamp.write_text(json.dumps(wanted))
    for partial in frames_dir.glob("*.partial"):  # a killed job's half-written videos
        shutil.rmtree(partial)
    done = {p.name for p in frames_dir.iterdir() if p.is_dir() and not p.name.endswith(".partial")}
    tasks = [
        (video_id, str(path), str(frames_dir / video_id), settings)
        for video_id, path in sorted(videos.items())
        if video_id not in done
    ]
    if done:
        log.info("%d videos already decoded with the same settings; %d to go", len(done), len(tasks))
    dropped: list[tuple[str, str]] = []
    decoded = frames = 0
    pool = ProcessPoolExecutor(max_workers=workers) if workers > 1 else None
    try:
        results = pool.map(_decode_one, tasks, chunksize=8) if pool else map(_decode_one, tasks)
        for video_id, n, problem in tqdm(results, total=len(tasks), desc="decode", unit="video"):
            if problem:
                log.warning("dropped video %s: %s", video_id, problem)
                dropped.append((video_id, problem))
            else:
                decoded += 1
                frames += n
    finally:
        if pool:
            pool.shutdown(cancel_futures=True)
    stale = set(done) - set(videos)
    for video_id in sorted(stale):  # a folder whose video is gone from the archive
        shutil.rmtree(frames_dir / video_id)
    log.info(
        "decoded %d videos (%d frames) into %s; %d dropped", decoded, frames, frames_dir, len(dropped)
    )
    return DecodeResult(len(videos) - len(dropped), decoded, frames, dropped)


def dropped_table(result: DecodeResult):
    import pandas as pd

    return pd.DataFrame(result.dropped, columns=DECODE_DROPPED_COLUMNS)


def read_frame_count(folder: str | os.PathLike) -> int:
    """Frames in a decoded folder (for tests and the benchmark)."""
    return len([p for p in os.listdir(folder) if p.endswith(".jpg")])


__all__ = [
    "DecodeResult",
    "DecodeSettings",
    "VideoDecodeError",
    "decode_video",
    "decode_videos",
    "dropped_table",
    "list_videos",
    "output_size",
    "read_frame_count",
]
