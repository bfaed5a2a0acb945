"""The boxes stage: one shard of the index in, ``boxes/{split}/shard-{k}.h5`` out.

For each video of the shard, :func:`regiongraph.dataset.sampling.box_frames_of_views` gives the
frames that any of its clips puts boxes on (every second clip frame, of each of the ``views``
evaluation views; one view for the train split), exactly as the features stage samples them;
the chosen backend gives up to ``per_frame`` boxes on each, written as docs/formats.md says.
A video whose box frames do not decode is left out and recorded in the
shard's ``dropped`` attribute (stage ``boxes``); the shard still completes.

Detector backends decode frames in a few threads ahead of the model and batch frames across
videos (``batch_size`` frames per forward pass), so that a GPU is not left waiting.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm import tqdm

from regiongraph.dataset.frames import (
    CorruptFrameError,
    check_jpeg_bytes,
    frame_path,
    read_video_frames,
)
from regiongraph.dataset.index import read_shard
from regiongraph.dataset.sampling import BOX_EVERY, box_frames_of_views
from regiongraph.detect.boxes import VideoBoxes
from regiongraph.detect.storage import BOXES_STAGE, write_video_boxes
from regiongraph.gpus import resolve_device
from regiongraph.io import DropReport, file_checksum, shard_writer
from regiongraph.jobs import prefetch

log = logging.getLogger(__name__)

BACKENDS = ("annotations", "torchvision", "detectron2")


@dataclass(frozen=True)
class BoxSettings:
    """The ``boxes:`` section of the config (see config/schema.yaml for each key)."""

    backend: str = "annotations"
    per_frame: int = 10
    weights: str | None = None
    sha256: str | None = None
    arch: str = "fasterrcnn_resnet50_fpn"
    detectron2_config: str = "COCO-Detection/faster_rcnn_R_50_FPN_3x.yaml"
    source: str = "detections"
    min_size: int = 800
    max_size: int | None = None
    score_threshold: float = 0.05
    nms_iou: float = 0.5
    rpn_top_n: int = 1000
    batch_size: int = 16
    fp16: bool = True
    decode_threads: int = 2

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ValueError(f"boxes.backend: {self.backend!r} is not one of {BACKENDS}")
        if self.source == "proposals" and self.backend != "detectron2":
            raise ValueError("boxes.source: proposals needs boxes.backend: detectron2")
        for key in ("per_frame", "min_size", "rpn_top_n", "batch_size", "decode_threads"):
            if getattr(self, key) < 1:
                raise ValueError(f"boxes.{key} must be at least 1, got {getattr(self, key)}")


def resolve_weights(settings: BoxSettings, weights_cache: str | os.PathLike) -> Path:
    """The detector's weights as a local file: ``boxes.weights`` itself, or its download."""
    from regiongraph.detect.detectron2_backend import MODEL_ZOO_CONFIG, MODEL_ZOO_WEIGHTS
    from regiongraph.detect.torchvision_backend import ARCHS, weights_url
    from regiongraph.io.download import fetch_weights

    if settings.backend == "torchvision":
        known = settings.arch in ARCHS
        url = weights_url(settings.arch) if known else None
        what = f"torchvision's COCO weights for {settings.arch}"
    else:
        url, what = MODEL_ZOO_WEIGHTS, f"the detectron2 model zoo's weights for {MODEL_ZOO_CONFIG}"
    where = (
        f"{what} are at {url}; give that URL as boxes.weights to download them once" if url else ""
    )
    if settings.weights is None:
        raise ValueError(
            f"boxes.weights is not set: the {settings.backend} backend needs trained weights; {where}"
        )
    try:
        return fetch_weights(settings.weights, weights_cache, sha256=settings.sha256)
    except FileNotFoundError as error:
        raise FileNotFoundError(
            f"boxes.weights: {settings.weights} does not exist; {where}"
        ) from error


def build_detector(settings: BoxSettings, device: str, weights: str | os.PathLike):
    """The torchvision or detectron2 detector with the given local weights file."""
    common = dict(
        per_frame=settings.per_frame,
        nms_iou=settings.nms_iou,
        batch_size=settings.batch_size,
        fp16=settings.fp16,
    )
    if settings.backend == "torchvision":
        from regiongraph.detect.torchvision_backend import TorchvisionDetector

        return TorchvisionDetector(
            settings.arch,
            weights,
            min_size=settings.min_size,
            max_size=settings.max_size,
            score_threshold=settings.score_threshold,
            rpn_top_n=settings.rpn_top_n,
            device=device,
            **common,
        )
    from regiongraph.detect import detectron2_backend as d2

    cfg = d2.detectron2_config(
        settings.detectron2_config,
        min_size=settings.min_size,
        max_size=settings.max_size,
        score_threshold=settings.score_threshold,
        rpn_top_n=settings.rpn_top_n,
        device=device,
    )
    return d2.Detectron2Detector(cfg, weights, source=settings.source, **common)


def extract_boxes_shard(
    index_path: str | os.PathLike,
    shard: int,
    output: str | os.PathLike,
    settings: BoxSettings,
    num_frames: int,
    frame_stride: int,
    sampling: str,
    *,
    views: int = 1,
    box_every: int = BOX_EVERY,
    device: str,
    weights_cache: str | os.PathLike,
    box_annotations: str | os.PathLike | list | None = None,
    box_classes: str | os.PathLike | None = None,
) -> dict[str, int]:
    """Write the boxes of every video of shard ``shard`` of ``index_path`` to ``output``.

    Returns counts: ``videos`` written, ``dropped`` (corrupt frames), ``unannotated``
    (annotations backend: videos missing from the file, written without valid boxes),
    ``beyond_length`` (annotations backend: videos whose annotations number frames past the
    video's last frame; those boxes are ignored). ``box_classes``: the class list (JSON) of
    :func:`regiongraph.detect.annotations.shard_box_annotations` when ``box_annotations`` are
    its per-shard files.
    """
    rows, split = read_shard(index_path, shard)
    job = _ShardJob(
        rows=rows,
        split=split,
        shard=int(shard),
        output=Path(output),
        per_frame=settings.per_frame,
        box_frames_per_video=num_frames // box_every,
        drops=DropReport(BOXES_STAGE, split),
    )
    job.clips = {
        row.video_id: box_frames_of_views(
            int(row.n_frames), num_frames, frame_stride, sampling, views, box_every
        )
        for row in job.rows.itertuples()
    }
    # what the boxes depend on; batch_size and decode_threads only change the speed
    recorded: dict[str, Any] = {
        **asdict(settings),
        "num_frames": num_frames,
        "frame_stride": frame_stride,
        "sampling": sampling,
        "views": views,
        "box_every": box_every,
        "weights_checksum": None,
        "annotations_checksum": None,
    }
    del recorded["batch_size"], recorded["decode_threads"]
    if settings.backend == "annotations":
        return _annotation_shard(
            job, settings, recorded, box_annotations, index_path, box_classes
        )
    return _detector_shard(job, settings, recorded, device, weights_cache, index_path)


@dataclass
class _ShardJob:
    """One shard's videos, where its outputs go, and what it has counted so far."""

    rows: pd.DataFrame
    split: str
    shard: int
    output: Path
    per_frame: int
    box_frames_per_video: int
    drops: DropReport
    clips: dict = field(default_factory=dict)  # video id -> its sorted box frames
    counts: dict = field(
        default_factory=lambda: {"videos": 0, "dropped": 0, "unannotated": 0, "beyond_length": 0}
    )

    @property
    def desc(self) -> str:
        return f"boxes {self.split} shard {self.shard:03d}"

    def drop(self, video_id: str, error: CorruptFrameError) -> None:
        self.drops.drop(video_id, str(error))
        self.counts["dropped"] += 1

    def write(self, handle, video_id: str, found: VideoBoxes, height: int, width: int) -> None:
        write_video_boxes(handle, video_id, found, self.clips[video_id], height, width)
        self.counts["videos"] += 1


def _annotation_shard(
    job: _ShardJob, settings, recorded, box_annotations, index_path, box_classes=None
) -> dict:
    """Annotations backend: boxes from the JSON; frames are only checked, never decoded."""
    from regiongraph.detect.annotations import BoxAnnotations

    if box_annotations is None:
        raise ValueError(
            "boxes.backend is annotations but no box annotation file is configured "
            "(dataset.box_annotations)"
        )
    paths = box_annotations if isinstance(box_annotations, list) else [box_annotations]
    class_names = json.loads(Path(box_classes).read_text()) if box_classes else None
    annotations = BoxAnnotations.load(paths, video_ids=list(job.clips), class_names=class_names)
    for key in (
        "arch",
        "detectron2_config",
        "weights",
        "sha256",
        "min_size",
        "max_size",
        "nms_iou",
        "rpn_top_n",
        "fp16",
    ):
        recorded[key] = None  # not used by this backend
    recorded.update(
        source="annotations",
        score_threshold=None,
        annotations=[str(p) for p in paths],
        annotations_checksum=[file_checksum(p) for p in paths],
    )
    inputs = {"index": index_path, **{f"annotations_{i}": p for i, p in enumerate(paths)}}
    with shard_writer(job.output, BOXES_STAGE, recorded, inputs) as handle:
        handle.attrs["class_names"] = np.array(annotations.class_names, dtype=object)
        for row in tqdm(job.rows.itertuples(), total=len(job.rows), desc=job.desc, unit="video"):
            box_frames = job.clips[row.video_id]
            problem = _check_frames(row.frame_dir, box_frames)
            if problem is not None:
                job.drop(row.video_id, problem)
                continue
            if row.video_id not in annotations:
                log.warning(
                    "%s: not in the box annotations %s; no valid boxes", row.video_id, paths
                )
                job.counts["unannotated"] += 1
            elif (last := annotations.last_frame(row.video_id)) >= int(row.n_frames):
                # the file numbers frames the decode did not produce: those frames' boxes are
                # never asked for (a box frame is always a frame of the video)
                log.warning(
                    "%s: the box annotations number frames up to %04d.jpg, the video has %d "
                    "frames; the boxes beyond its end are ignored",
                    row.video_id,
                    last + 1,
                    row.n_frames,
                )
                job.counts["beyond_length"] += 1
            height, width = int(row.height), int(row.width)
            found = annotations.video_boxes(row.video_id, box_frames, height, width, job.per_frame)
            job.write(handle, row.video_id, found, height, width)
        job.drops.record(handle)
    return job.counts


def _detector_shard(job: _ShardJob, settings, recorded, device, weights_cache, index_path) -> dict:
    """Detector backends: frames decoded in threads ahead, batched across videos."""
    if settings.backend == "detectron2":
        from regiongraph.detect.detectron2_backend import import_detectron2

        import_detectron2()  # the install hint before any download
    device = str(resolve_device(device))
    weights = resolve_weights(settings, weights_cache)
    detector = build_detector(settings, device, weights)
    recorded["weights_checksum"] = file_checksum(weights)
    recorded["detectron2_config" if settings.backend == "torchvision" else "arch"] = None
    recorded["fp16"] = detector.fp16  # effective precision: autocast applies on CUDA only
    log.info(
        "boxes: %s on %s, %d videos, batch %d",
        settings.backend,
        device,
        len(job.rows),
        settings.batch_size,
    )

    def decode(row) -> tuple[Any, np.ndarray | CorruptFrameError]:
        box_frames = job.clips[row.video_id]
        problem = _check_frames(row.frame_dir, box_frames)  # OpenCV decodes a truncated JPEG
        if problem is not None:
            return row, problem
        try:
            return row, read_video_frames(row.frame_dir, box_frames)
        except CorruptFrameError as error:
            return row, error

    inputs = {"index": index_path, "weights": weights}
    with (
        shard_writer(job.output, BOXES_STAGE, recorded, inputs) as handle,
        tqdm(total=len(job.rows), desc=job.desc, unit="video") as bar,
        ThreadPoolExecutor(max_workers=settings.decode_threads) as decoders,
    ):
        handle.attrs["class_names"] = np.array(detector.class_names, dtype=object)
        pending: list[tuple[Any, np.ndarray]] = []

        def flush() -> None:
            found = iter(detector.detect([frame for _, video in pending for frame in video]))
            for row, video in pending:
                boxes = VideoBoxes.empty(len(video), job.per_frame)
                for t in range(len(video)):
                    boxes.set_frame(t, *next(found))
                job.write(handle, row.video_id, boxes, video.shape[1], video.shape[2])
                bar.update()
            pending.clear()

        videos_ahead = max(4, 2 * settings.batch_size // job.box_frames_per_video)  # ~2 batches
        for row, result in prefetch(decoders, decode, job.rows.itertuples(), videos_ahead):
            if isinstance(result, CorruptFrameError):
                job.drop(row.video_id, result)
                bar.update()
                continue
            pending.append((row, result))
            if sum(len(video) for _, video in pending) >= settings.batch_size:
                flush()
        if pending:
            flush()
        job.drops.record(handle)
    return job.counts


def _check_frames(frame_dir: str, indices: Iterable[int]) -> CorruptFrameError | None:
    """Cheap integrity check of the box frames (annotations backend: nothing is decoded)."""
    for index in sorted(set(int(i) for i in indices)):
        path = frame_path(frame_dir, index)
        problem = check_jpeg_bytes(path)
        if problem is not None:
            return CorruptFrameError(path, problem)
    return None
