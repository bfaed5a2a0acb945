"""The flow stage: TV-L1 flow for every video of one index shard, into one HDF5 shard.

``compute_flow_shard`` reads the rows of ``index/{split}.parquet`` with ``shard == k``,
computes the flow between consecutive grayscale frames of each video with the configured
backend, quantises it and writes ``flow/{split}/shard-{k}.h5`` atomically
(:func:`regiongraph.io.shard_writer`). A video that cannot be processed (a frame that does
not decode, a single frame) is skipped and recorded with its reason in the shard's
``dropped`` attribute (gathered into ``index/dropped.csv``); the shard still completes. Output is deterministic: rerunning on the same inputs writes the
same flow datasets byte for byte.

* ``opencv``: one single-threaded OpenCV solver per worker process, ``workers`` processes,
  videos in index order.
* ``torch``: frame pairs of one size are batched across videos (``batch_size`` pairs per
  call) on CUDA when available, else on the CPU with ``workers`` threads; frames are decoded
  ahead by a thread pool while the solver runs (or, with ``jpeg_decode`` on the device,
  the threads read the JPEG bytes and each video is decoded on the GPU in one batched
  ``torchvision.io.decode_jpeg`` call). Videos are written as they complete, in an order
  fixed by the index.
"""

from __future__ import annotations

import logging
import os
import time
from collections import OrderedDict, deque
from collections.abc import Iterator, Mapping
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from regiongraph.dataset.frames import (
    CorruptFrameError,
    decode_jpegs,
    frame_path,
    jpeg_on_device,
    read_frame_bytes,
    read_video_frames,
)
from regiongraph.dataset.index import read_shard
from regiongraph.flow.params import TVL1Params, check_kernel
from regiongraph.flow.quantize import check_bound, quantize_flow
from regiongraph.flow.storage import FLOW_STAGE, check_video_id, write_video_flow
from regiongraph.io import DropReport, shard_writer
from regiongraph.jobs import prefetch

log = logging.getLogger(__name__)

BACKENDS = ("opencv", "torch")


def flow_settings(
    backend: str, bound: float, params: TVL1Params, kernel: str = "auto"
) -> dict[str, Any]:
    """The shard's root ``settings``: backend, bound, every TV-L1 parameter (flat), and for
    the torch backend the configured ``kernel``."""
    if backend not in BACKENDS:
        raise ValueError(f"flow.backend must be one of {BACKENDS}, got {backend!r}")
    check_kernel(kernel)
    settings = {"backend": backend, "bound": check_bound(bound), **params.to_config()}
    if backend == "torch":
        settings["kernel"] = kernel
    return settings


@dataclass
class VideoResult:
    """What a worker hands back for one video: quantised flow, or why it was dropped."""

    video_id: str
    flow: np.ndarray | None = None
    dropped: str | None = None
    warnings: list[str] = field(default_factory=list)


class _CaptureWarnings(logging.Handler):
    """Collects the warnings a worker process logs (resized frames) for the parent's log."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


# set in worker processes only: their warnings travel back to the parent, which logs them
_IN_WORKER_PROCESS = False


def _init_pool_worker() -> None:
    """Process-pool initialiser: one OpenCV thread; log records go back with the results."""
    from regiongraph.flow.opencv_backend import init_worker

    global _IN_WORKER_PROCESS
    _IN_WORKER_PROCESS = True
    logging.getLogger().handlers.clear()  # inherited through fork: the parent writes the log
    init_worker()


def _read_gray(frame_dir: str, n_frames: int) -> tuple[np.ndarray | None, str | None, list[str]]:
    """Decode a video's frames as grayscale: ``(frames, None, warnings)`` or ``(None, reason, ...)``.

    A frame of another size than the first is resized to it with a warning
    (:func:`read_video_frames`); in a worker process the warning is returned, not logged.
    """
    capture = _CaptureWarnings()
    frames_logger = logging.getLogger("regiongraph.dataset.frames")
    if _IN_WORKER_PROCESS:
        frames_logger.addHandler(capture)
    try:
        if n_frames < 2:
            return None, f"{n_frames} frame(s): no frame pair for optical flow", capture.messages
        frames = read_video_frames(frame_dir, np.arange(n_frames), grayscale=True)
        return frames, None, capture.messages
    except CorruptFrameError as error:
        return None, f"corrupt frame {error.path}: {error.problem}", capture.messages
    finally:
        frames_logger.removeHandler(capture)


def _read_gray_bytes(frame_dir: str, n_frames: int):
    """Device decoding: a video's JPEG bytes and paths, ``(datas, paths, None)`` or
    ``(None, None, reason)``."""
    if n_frames < 2:
        return None, None, f"{n_frames} frame(s): no frame pair for optical flow"
    paths = [str(frame_path(frame_dir, i)) for i in range(n_frames)]
    try:
        return [read_frame_bytes(p) for p in paths], paths, None
    except CorruptFrameError as error:
        return None, None, f"corrupt frame {error.path}: {error.problem}"


def _decode_gray_on_device(datas, paths, device):
    """A video's frames decoded on ``device``: uint8 ``(T, H, W)``, ``(None, reason)`` when a
    frame does not decode, or ``(None, None)`` when its frames differ in size (the host path
    then resizes them to the first, as it always has)."""
    import torch

    try:
        images = decode_jpegs(datas, device, grayscale=True, paths=paths)
    except CorruptFrameError as error:
        return None, f"corrupt frame {error.path}: {error.problem}"
    if len({tuple(image.shape) for image in images}) > 1:
        return None, None
    return torch.cat(images), None


def _opencv_video(task: tuple[str, str, int, dict[str, Any], float]) -> VideoResult:
    """Worker: decode one video and compute its quantised flow with OpenCV."""
    from regiongraph.flow.opencv_backend import opencv_video_flow

    video_id, frame_dir, n_frames, tvl1, bound = task
    frames, reason, warnings = _read_gray(frame_dir, n_frames)
    if frames is None:
        return VideoResult(video_id, dropped=reason, warnings=warnings)
    flow = opencv_video_flow(frames, TVL1Params.from_config(tvl1))
    return VideoResult(video_id, flow=quantize_flow(flow, bound), warnings=warnings)


def _opencv_results(tasks: list[tuple], workers: int) -> Iterator[VideoResult]:
    """Results in task order, from ``workers`` single-threaded OpenCV processes."""
    from regiongraph.flow.opencv_backend import init_worker

    if workers <= 1 or len(tasks) <= 1:
        init_worker()
        yield from map(_opencv_video, tasks)
        return
    with ProcessPoolExecutor(max_workers=workers, initializer=_init_pool_worker) as pool:
        yield from prefetch(pool, _opencv_video, tasks, ahead=2 * workers)


IN_FLIGHT = 2  # torch backend: batches submitted to the solver and not yet written


@dataclass
class _PendingVideo:
    video_id: str
    frames: np.ndarray
    flow: np.ndarray  # uint8 (T - 1, H, W, 2), filled batch by batch
    remaining: int
    warnings: list[str]


def _torch_results(
    tasks: list[tuple],
    params: TVL1Params,
    bound: float,
    workers: int,
    device: str,
    batch_size: int,
    kernel: str = "auto",
    jpeg_decode: str = "auto",
) -> Iterator[VideoResult]:
    """Results as videos complete: pairs of one frame size batched across videos.

    Videos are decoded ahead (a thread pool: JPEG decoding releases the GIL) and their pairs
    queued per frame size; a full queue runs as one batch, quantised on the device. Batches
    are solved in a thread of their own, up to ``IN_FLIGHT`` ahead of the videos being
    written, so a GPU does not wait for the host. A video is yielded once all its pairs are
    done, so the order depends only on the index and the batch size, never on timing.
    """
    import torch

    from regiongraph.flow.torch_tvl1 import resolve_kernel, torch_pairs_flow
    from regiongraph.gpus import resolve_device

    device = resolve_device(device)
    kernel = resolve_kernel(kernel, device, params)  # fails before any decoding if impossible
    on_device = jpeg_on_device(jpeg_decode, device)
    log.info(
        "torch TV-L1 on %s, %s kernel, batches of %d pairs, JPEG decoded on %s",
        device, kernel, batch_size, device if on_device else "the host",
    )
    if device.type == "cpu":
        torch.set_num_threads(max(1, workers))
    queues: OrderedDict[tuple[int, int], list[tuple[_PendingVideo, int]]] = OrderedDict()
    in_flight: deque[tuple[Future, list[tuple[_PendingVideo, int]]]] = deque()

    def finish() -> Iterator[VideoResult]:
        future, pairs = in_flight.popleft()
        for (video, i), q in zip(pairs, future.result(), strict=True):
            video.flow[i] = q
            video.remaining -= 1
            if video.remaining == 0:
                yield VideoResult(video.video_id, flow=video.flow, warnings=video.warnings)

    def run(size: tuple[int, int], count: int) -> Iterator[VideoResult]:
        pairs, queues[size] = queues[size][:count], queues[size][count:]
        stack = torch.stack if on_device else np.stack
        first = stack([v.frames[i] for v, i in pairs])
        second = stack([v.frames[i + 1] for v, i in pairs])
        in_flight.append(
            (solver.submit(torch_pairs_flow, first, second, params, device, kernel, None, bound), pairs)
        )
        if len(in_flight) > IN_FLIGHT:
            yield from finish()

    with (
        ThreadPoolExecutor(max_workers=max(1, workers)) as pool,
        ThreadPoolExecutor(max_workers=1, thread_name_prefix="tvl1") as solver,
    ):
        def read(task) -> tuple[str, Any, str | None, list[str]]:
            if on_device:
                datas, paths, reason = _read_gray_bytes(task[1], task[2])
                return task[0], None if reason else (datas, paths, task), reason, []
            return (task[0], *_read_gray(task[1], task[2]))

        decoded = prefetch(pool, read, tasks, ahead=4 * max(1, workers))
        for video_id, frames, reason, warnings in decoded:
            if on_device and reason is None:
                datas, paths, task = frames
                frames, reason = _decode_gray_on_device(datas, paths, device)
                if frames is None and reason is None:  # frame sizes differ: the host path
                    frames, reason, warnings = _read_gray(task[1], task[2])
                    if frames is not None:
                        frames = torch.from_numpy(frames).to(device)
            if frames is None:
                yield VideoResult(video_id, dropped=reason, warnings=warnings)
                continue
            n, h, w = frames.shape
            video = _PendingVideo(
                video_id, frames, np.empty((n - 1, h, w, 2), np.uint8), n - 1, warnings
            )
            queue = queues.setdefault((h, w), [])
            queue.extend((video, i) for i in range(n - 1))
            while len(queues[(h, w)]) >= batch_size:
                yield from run((h, w), batch_size)
        for size in list(queues):
            while queues[size]:
                yield from run(size, batch_size)
        while in_flight:
            yield from finish()


def compute_flow_shard(
    index_path: str | os.PathLike,
    shard: int,
    output: str | os.PathLike,
    *,
    backend: str = "opencv",
    bound: float = 20.0,
    tvl1: Mapping[str, Any] | None = None,
    workers: int = 1,
    device: str = "auto",
    batch_size: int = 64,
    kernel: str = "auto",
    jpeg_decode: str = "auto",
) -> dict[str, int]:
    """Compute the flow shard ``output`` for the index rows of shard ``shard``.

    Returns counts (``videos`` written, ``dropped``, ``pairs``). Dropped videos are recorded
    in the shard (stage ``flow``) before it is marked complete.
    """
    params = TVL1Params.from_config(tvl1)
    settings = flow_settings(backend, bound, params, kernel)
    if batch_size < 1:
        raise ValueError(f"flow.batch_size must be >= 1, got {batch_size!r}")
    rows, split = read_shard(index_path, shard)
    tasks = [
        (
            check_video_id(row.video_id),
            str(row.frame_dir),
            int(row.n_frames),
            params.to_config(),
            settings["bound"],
        )
        for row in rows.itertuples(index=False)
    ]
    if backend == "opencv":
        results = _opencv_results(tasks, workers)
    else:
        results = _torch_results(
            tasks, params, settings["bound"], workers, device, batch_size, kernel, jpeg_decode
        )
    counts = {"videos": 0, "dropped": 0, "pairs": 0}
    drops = DropReport(FLOW_STAGE, split)
    start = time.perf_counter()
    with (
        shard_writer(output, FLOW_STAGE, settings, inputs={"index": index_path}) as handle,
        ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="deflate") as deflate,
    ):
        bar = tqdm(
            results,
            total=len(tasks),
            desc=f"flow {Path(output).parent.name}/{Path(output).stem}",
            unit="video",
        )
        for result in bar:
            for message in result.warnings:
                log.warning("%s", message)
            if result.dropped is not None:
                drops.drop(result.video_id, result.dropped)
                counts["dropped"] += 1
                continue
            write_video_flow(handle, result.video_id, result.flow, deflate)
            counts["videos"] += 1
            counts["pairs"] += result.flow.shape[0]
        handle.attrs["n_videos"] = counts["videos"]
        handle.attrs["n_dropped"] = counts["dropped"]
        drops.record(handle)
    elapsed = time.perf_counter() - start
    log.info(
        "%s: %d videos, %d pairs, %d dropped in %.1f s (%.1f pairs/s, backend %s)",
        output,
        counts["videos"],
        counts["pairs"],
        counts["dropped"],
        elapsed,
        counts["pairs"] / max(elapsed, 1e-9),
        backend,
    )
    return counts
