"""A synthetic dataset in the exact Something-Something v1 or v2 download format.

Each class is defined by what objects do over time — moving something left or right, up or
down, pushing something so it falls, covering something, bringing two things together or
apart — drawn as textured objects on textured backgrounds whose colours and textures are
drawn per video independently of the class. A single frame does not tell the class; the
motion and the relation between objects over time do, which is what the region graphs
model.

The output mirrors the real download:

- ``{archives}/20bn-something-something-v1-00``, ``-01``, ...: one tar.gz of
  ``20bn-something-something-v1/{id}/00001.jpg ...`` cut into parts of ``part_bytes`` bytes;
- ``{annotations}/something-something-v1-labels.csv`` (one label per line; some contain commas),
  ``-train.csv`` and ``-validation.csv`` (``id;label``), ``-test.csv`` (ids only);
- ``{annotations}/something-else-boxes.json``: per-frame object boxes in the format of
  Something-Else's ``bounding_box_smthsmth_*.json``.

or, with :func:`make_toy_ssv2`, the SSv2 download as Qualcomm serves it:

- ``{archives}/20bn-something-something-v2-00.zip``, ...: one tar.gz of
  ``20bn-something-something-v2/{id}.webm`` (VP9, 12 fps, no audio) cut into pieces of
  ``part_bytes`` bytes, each zipped alone as ``20bn-something-something-v2-NN`` inside
  ``20bn-something-something-v2-NN.zip``;
- ``{annotations}/20bn-something-something-download-package-labels.zip`` holding
  ``labels/labels.json`` (template -> index as a string; keys in alphabetical order, indices
  in the class order, so that sorting the keys gives other indices), ``labels/train.json`` and
  ``labels/validation.json`` (``{id, label, template, placeholders}``, ``[something]`` in the
  template) and ``labels/test.json`` (ids only);
- ``{boxes}/bounding_box_smthsmth_part1.json``, ``part2.json``: Something-Else's per-frame boxes,
  frames numbered ``0001.jpg`` over every frame of the video.

Generation is deterministic from the seed: the same settings give byte-identical SSv1 parts.
"""

from __future__ import annotations

import gzip
import io
import json
import logging
import os
import re
import tarfile
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from regiongraph.io import atomic_path

log = logging.getLogger(__name__)

ARCHIVE_STEM = "20bn-something-something-v1"
CSV_PREFIX = "something-something-v1"
BOXES_FILE = "something-else-boxes.json"
SSV2_STEM = "20bn-something-something-v2"
SSV2_LABELS_ZIP = "20bn-something-something-download-package-labels.zip"
SSV2_BOX_FILES = ("bounding_box_smthsmth_part1.json", "bounding_box_smthsmth_part2.json")
SSV2_FPS = 12
ZIP_DATE = (1980, 1, 1, 0, 0, 0)  # fixed, so zips are byte-identical across runs

# Label texts in the style of SSv1's (two contain commas, as some real ones do); the toy set
# uses the first ``classes`` of them.
CLASS_NAMES = [
    "Moving something from left to right",
    "Moving something from right to left",
    "Moving something up",
    "Moving something down",
    "Pushing something so that it falls off the table",
    "Covering something with something, so that it is hidden",
    "Moving something and something closer to each other",
    "Moving something and something away from each other",
    "Putting something next to something, then taking it away",
    "Lifting something up completely, then letting it drop down",
]
OBJECT_NAMES = ["box", "cup", "ball", "book", "phone", "bottle", "remote", "wallet"]


@dataclass(frozen=True)
class ToySettings:
    videos: int = 160
    classes: int = 8
    split_fractions: tuple[float, float, float] = (0.6, 0.25, 0.15)
    min_frames: int = 30
    max_frames: int = 60
    height: int = 100
    min_width: int = 120
    max_width: int = 176
    part_bytes: int = 2_000_000
    jpeg_quality: int = 90
    seed: int = 0

    def __post_init__(self) -> None:
        if not 2 <= self.classes <= len(CLASS_NAMES):
            raise ValueError(f"toy classes must be in 2..{len(CLASS_NAMES)}, got {self.classes}")
        if self.min_frames > self.max_frames:
            raise ValueError(f"toy min_frames {self.min_frames} > max_frames {self.max_frames}")
        if self.min_width > self.max_width:
            raise ValueError(f"toy min_width {self.min_width} > max_width {self.max_width}")
        if self.videos < 3 * self.classes:
            raise ValueError(
                f"toy videos ({self.videos}) must be at least 3 x classes ({self.classes})"
            )


@dataclass
class ToyVideo:
    video_id: str
    label: int
    split: str
    frames: list[np.ndarray] = field(repr=False)
    boxes: list[list[dict]] = field(repr=False)  # per frame: [{name, box: (x1,y1,x2,y2)}]


def _texture(rng: np.random.Generator, height: int, width: int, scale: float) -> np.ndarray:
    """A smooth random colour texture with stripes, (H, W, 3) float32 in 0..255."""
    base = rng.uniform(40, 215, size=3)
    noise = rng.normal(0, 1, size=(max(2, int(height / scale)), max(2, int(width / scale)), 3))
    noise = cv2.resize(noise.astype(np.float32), (width, height), interpolation=cv2.INTER_CUBIC)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    angle = rng.uniform(0, np.pi)
    period = rng.uniform(4, 14)
    stripes = np.sin((xx * np.cos(angle) + yy * np.sin(angle)) * 2 * np.pi / period)
    tint = rng.uniform(-1, 1, size=3)
    image = base + 28 * noise + 22 * stripes[..., None] * tint
    return np.clip(image, 0, 255).astype(np.float32)


def _object_sprite(
    rng: np.random.Generator, size: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """A textured object (H, W, 3) with an alpha mask: a box, or an ellipse."""
    h, w = size
    sprite = _texture(rng, h, w, scale=rng.uniform(2, 5))
    sprite = 0.5 * sprite + 0.5 * rng.uniform(0, 255, size=3)  # a distinct colour per object
    mask = np.zeros((h, w), np.float32)
    if rng.random() < 0.5:
        mask[:] = 1
        cv2.rectangle(sprite, (0, 0), (w - 1, h - 1), (20, 20, 20), 1)
    else:
        cv2.ellipse(mask, (w // 2, h // 2), (w // 2, h // 2), 0, 0, 360, 1.0, -1)
    return sprite.astype(np.float32), mask


def _paste(frame: np.ndarray, sprite: np.ndarray, mask: np.ndarray, x: float, y: float):
    """Paste ``sprite`` with its top-left at (x, y); return its visible box or None."""
    h, w = mask.shape
    H, W = frame.shape[:2]
    x0, y0 = int(round(x)), int(round(y))
    x1, y1 = max(x0, 0), max(y0, 0)
    x2, y2 = min(x0 + w, W), min(y0 + h, H)
    if x2 <= x1 or y2 <= y1:
        return None
    sub_mask = mask[y1 - y0 : y2 - y0, x1 - x0 : x2 - x0, None]
    frame[y1:y2, x1:x2] = (
        sub_mask * sprite[y1 - y0 : y2 - y0, x1 - x0 : x2 - x0]
        + (1 - sub_mask) * frame[y1:y2, x1:x2]
    )
    return (float(x1), float(y1), float(x2), float(y2))


def _trajectories(label: int, n: int, height: int, width: int, sizes, rng) -> list[np.ndarray]:
    """Top-left positions (n, 2) of each object over time for a class.

    Objects in classes with two objects are listed mover-last so that covering draws the
    cover on top.
    """
    t = np.linspace(0.0, 1.0, n)
    jitter = rng.uniform(-0.06, 0.06)
    t = np.clip(t + jitter * np.sin(np.pi * t), 0, 1)  # uneven speed per video
    (h0, w0) = sizes[0]
    margin_x = max(2, width - w0 - 2)
    margin_y = max(2, height - h0 - 2)
    y_mid = rng.uniform(0.25, 0.6) * margin_y
    x_mid = rng.uniform(0.3, 0.7) * margin_x
    a, b = rng.uniform(0.02, 0.15), rng.uniform(0.85, 0.98)
    if label == 0:  # left to right
        return [np.stack([(a + (b - a) * t) * margin_x, np.full(n, y_mid)], 1)]
    if label == 1:  # right to left
        return [np.stack([(b - (b - a) * t) * margin_x, np.full(n, y_mid)], 1)]
    if label == 2:  # up
        return [np.stack([np.full(n, x_mid), (b - (b - a) * t) * margin_y], 1)]
    if label == 3:  # down
        return [np.stack([np.full(n, x_mid), (a + (b - a) * t) * margin_y], 1)]
    if label == 4:  # pushed along the table, then falls off its edge with gravity
        edge = rng.uniform(0.45, 0.65)
        xs = np.where(t < edge, a + (b - a) * t / edge, b) * margin_x
        fall = np.clip(t - edge, 0, None) / (1 - edge)
        ys = y_mid * 0.5 + (height + h0) * fall**2
        return [np.stack([xs, ys], 1)]
    if label == 5:  # a cover slides over a resting object
        (h1, w1) = sizes[1]
        rest = np.stack([np.full(n, x_mid), np.full(n, y_mid)], 1)
        centre = np.array([x_mid + w0 / 2 - w1 / 2, y_mid + h0 / 2 - h1 / 2])
        side = -1 if rng.random() < 0.5 else 1
        start = centre + np.array([side * width * 0.6, 0.0])
        cover = start + (centre - start) * np.clip(t / 0.7, 0, 1)[:, None]
        return [rest, cover]
    if label in (6, 7):  # two objects closer together or further apart
        (h1, w1) = sizes[1]
        near = [0.35 * width - w0 / 2, 0.65 * width - w1 / 2]
        far = [0.04 * width, 0.96 * width - w1]
        start, end = (far, near) if label == 6 else (near, far)
        left = start[0] + (end[0] - start[0]) * t
        right = start[1] + (end[1] - start[1]) * t
        y2 = y_mid + rng.uniform(-5, 5)
        return [np.stack([left, np.full(n, y_mid)], 1), np.stack([right, np.full(n, y2)], 1)]
    if label == 8:  # one object put next to another, then taken away
        (h1, w1) = sizes[1]
        rest = np.stack([np.full(n, 0.55 * width), np.full(n, y_mid)], 1)
        pos = np.where(t < 0.5, t / 0.5, (1 - t) / 0.5)
        mover = np.stack([0.55 * width - w1 - 2 - 0.5 * width * (1 - pos), np.full(n, y_mid)], 1)
        return [rest, mover]
    # 9: lifted up completely, then dropped
    pos = np.where(t < 0.6, t / 0.6, 1 - ((t - 0.6) / 0.4) ** 2)
    ys = b * margin_y - pos * (b - a) * margin_y
    return [np.stack([np.full(n, x_mid), ys], 1)]


def render_video(label: int, n_frames: int, height: int, width: int, rng: np.random.Generator):
    """Frames (uint8 RGB) and per-frame visible boxes of one synthetic video of a class."""
    background = _texture(rng, height, width, scale=rng.uniform(6, 14))
    n_objects = 2 if label in (5, 6, 7, 8) else 1
    sizes = []
    for i in range(n_objects):
        side = int(rng.uniform(18, 30)) if not (label == 5 and i == 1) else int(rng.uniform(36, 44))
        sizes.append((side, int(side * rng.uniform(0.8, 1.3))))
    sprites = [_object_sprite(rng, size) for size in sizes]
    names = list(rng.choice(OBJECT_NAMES, size=n_objects, replace=False))
    paths = _trajectories(label, n_frames, height, width, sizes, rng)
    shake = rng.normal(0, 0.3, size=(n_frames, 2))  # a hand-held camera
    frames, boxes = [], []
    for f in range(n_frames):
        frame = background.copy()
        frame += rng.normal(0, 3, size=frame.shape).astype(np.float32)  # sensor noise
        visible = []
        for obj, ((sprite, mask), path) in enumerate(zip(sprites, paths, strict=True)):
            box = _paste(frame, sprite, mask, *(path[f] + shake[f]))
            if box is not None:
                visible.append({"object": obj, "name": str(names[obj]), "box": box})
        if label == 5:  # the covered object is hidden once the cover is over its centre
            covered = [v for v in visible if v["object"] == 1]
            if covered:
                cx1, cy1, cx2, cy2 = covered[0]["box"]
                px, py = paths[0][f] + np.array(sizes[0][::-1]) / 2
                if cx1 <= px - sizes[0][1] / 2 and px + sizes[0][1] / 2 <= cx2:
                    visible = [v for v in visible if v["object"] != 0]
        frames.append(np.clip(frame, 0, 255).astype(np.uint8))
        boxes.append(visible)
    return frames, boxes


def plan_videos(settings: ToySettings) -> list[tuple[str, int, str, int, int]]:
    """(video_id, label, split, n_frames, width) for every video, balanced over classes."""
    rng = np.random.default_rng(settings.seed)
    ids = rng.choice(np.arange(1, 200_000), size=settings.videos, replace=False)
    labels = np.arange(settings.videos) % settings.classes
    rng.shuffle(labels)
    fractions = np.asarray(settings.split_fractions, dtype=float)
    fractions = fractions / fractions.sum()
    n_train = int(round(fractions[0] * settings.videos))
    n_val = int(round(fractions[1] * settings.videos))
    splits = ["train"] * n_train + ["validation"] * n_val
    splits += ["test"] * (settings.videos - len(splits))
    plan = []
    for vid, label, split in zip(ids, labels, splits, strict=True):
        n = int(rng.integers(settings.min_frames, settings.max_frames + 1))
        width = int(rng.integers(settings.min_width, settings.max_width + 1))
        plan.append((str(vid), int(label), split, n, width))
    return plan


class PartWriter(io.RawIOBase):
    """A write-only stream that cuts what it receives into numbered parts of fixed size."""

    def __init__(self, folder: Path, stem: str, part_bytes: int):
        self.folder, self.stem, self.part_bytes = folder, stem, part_bytes
        self.index, self.handle, self.written = -1, None, 0
        self.paths: list[Path] = []

    def writable(self) -> bool:
        return True

    def _next_part(self) -> None:
        if self.handle:
            self.handle.close()
        self.index += 1
        path = self.folder / f"{self.stem}-{self.index:02d}"
        self.paths.append(path)
        self.handle, self.written = open(path, "wb"), 0

    def write(self, data) -> int:
        view = memoryview(data)
        total = len(view)
        while len(view):
            if self.handle is None or self.written == self.part_bytes:
                self._next_part()
            take = min(len(view), self.part_bytes - self.written)
            self.handle.write(view[:take])
            self.written += take
            view = view[take:]
        return total

    def close(self) -> None:
        if self.handle:
            self.handle.close()
            self.handle = None
        super().close()


def _tar_member(
    name: str, data: bytes, is_dir: bool = False
) -> tuple[tarfile.TarInfo, io.BytesIO | None]:
    info = tarfile.TarInfo(name)
    info.mtime = 0  # fixed, so archives are byte-identical across runs
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    if is_dir:
        info.type, info.mode = tarfile.DIRTYPE, 0o755
        return info, None
    info.size, info.mode = len(data), 0o644
    return info, io.BytesIO(data)


@contextmanager
def split_tar_gz(folder: Path, stem: str, part_bytes: int):
    """A tar stream, gzip-compressed and cut into ``{stem}-00``, ``-01``, ... in ``folder``
    (stale parts removed first), whose first member is the folder ``stem``; yields the tar and
    the part writer (its ``paths`` are complete once the block ends)."""
    for stale in folder.glob(f"{stem}-*"):
        stale.unlink()
    writer = PartWriter(folder, stem, part_bytes)
    with gzip.GzipFile(fileobj=writer, mode="wb", mtime=0, filename="") as gz:
        with tarfile.open(fileobj=gz, mode="w|", format=tarfile.GNU_FORMAT) as tar:
            tar.addfile(*_tar_member(stem, b"", is_dir=True))
            yield tar, writer
    writer.close()


def iter_videos(settings: ToySettings) -> Iterator[ToyVideo]:
    for i, (vid, label, split, n, width) in enumerate(plan_videos(settings)):
        rng = np.random.default_rng([settings.seed, i])
        frames, boxes = render_video(label, n, settings.height, width, rng)
        yield ToyVideo(vid, label, split, frames, boxes)


def something_else_frames(video: ToyVideo) -> list[dict]:
    """A video's boxes as Something-Else writes them: one entry per frame, ``0001.jpg`` first."""
    names = [v["name"] for frame in video.boxes for v in frame]
    placeholders = list(dict.fromkeys(names))
    return [
        {
            "name": f"{video.video_id}/{f + 1:04d}.jpg",
            "labels": [
                {
                    "box2d": dict(zip(("x1", "y1", "x2", "y2"), v["box"], strict=True)),
                    "category": v["name"],
                    "standard_category": f"{v['object']:04d}",
                }
                for v in frame_boxes
            ],
            "gt_placeholders": placeholders,
            "nr_instances": len(frame_boxes),
        }
        for f, frame_boxes in enumerate(video.boxes)
    ]


def make_toy_dataset(
    archives: str | os.PathLike, annotations: str | os.PathLike, settings: ToySettings
) -> dict:
    """Write the synthetic download (parts, CSVs, box JSON); return a summary."""
    archives, annotations = Path(archives), Path(annotations)
    archives.mkdir(parents=True, exist_ok=True)
    annotations.mkdir(parents=True, exist_ok=True)
    labels = CLASS_NAMES[: settings.classes]
    rows: dict[str, list[str]] = {"train": [], "validation": [], "test": []}
    boxes_json: dict[str, list[dict]] = {}
    encode = [int(cv2.IMWRITE_JPEG_QUALITY), settings.jpeg_quality]
    n_frames = 0
    with split_tar_gz(archives, ARCHIVE_STEM, settings.part_bytes) as (tar, writer):
        for video in tqdm(
            iter_videos(settings), total=settings.videos, desc="toy videos", unit="video"
        ):
            folder = f"{ARCHIVE_STEM}/{video.video_id}"
            tar.addfile(*_tar_member(folder, b"", is_dir=True))
            for f, frame in enumerate(video.frames):
                ok, jpeg = cv2.imencode(".jpg", cv2.cvtColor(frame, cv2.COLOR_RGB2BGR), encode)
                if not ok:
                    raise RuntimeError(
                        f"could not encode frame {f} of toy video {video.video_id}"
                    )
                tar.addfile(*_tar_member(f"{folder}/{f + 1:05d}.jpg", jpeg.tobytes()))
            n_frames += len(video.frames)
            text = labels[video.label]
            rows[video.split].append(
                video.video_id if video.split == "test" else f"{video.video_id};{text}"
            )
            boxes_json[video.video_id] = something_else_frames(video)
    with atomic_path(annotations / f"{CSV_PREFIX}-labels.csv") as tmp:
        tmp.write_text("".join(f"{label}\n" for label in labels))
    for split, lines in rows.items():
        with atomic_path(annotations / f"{CSV_PREFIX}-{split}.csv") as tmp:
            tmp.write_text("".join(f"{line}\n" for line in lines))
    with atomic_path(annotations / BOXES_FILE) as tmp:
        tmp.write_text(json.dumps(boxes_json))
    summary = {
        "videos": settings.videos,
        "frames": n_frames,
        "classes": settings.classes,
        "parts": [p.name for p in writer.paths],
        "bytes": sum(p.stat().st_size for p in writer.paths),
        "splits": {split: len(lines) for split, lines in rows.items()},
    }
    log.info("toy dataset: %s", summary)
    return summary


def ssv2_template(label: str) -> str:
    """The SSv2 template of a class text: every ``something`` in brackets."""
    return re.sub(r"\bsomething\b", "[something]", label)


def encode_webm(frames: list[np.ndarray]) -> bytes:
    """RGB frames as a VP9 WebM at 12 fps (as SSv2's videos are), no audio."""
    import av

    height, width = frames[0].shape[:2]
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="webm") as container:
        stream = container.add_stream("libvpx-vp9", rate=SSV2_FPS)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.thread_count = 1
        # fast, good-enough quality: the toy's objects must stay visible, nothing more
        stream.options = {"deadline": "realtime", "cpu-used": "8", "crf": "20", "b:v": "0"}
        for image in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return buffer.getvalue()


def _zip_bytes(path: Path, members: dict[str, bytes]) -> None:
    with atomic_path(path) as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            info = zipfile.ZipInfo(name, date_time=ZIP_DATE)
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, data)


def make_toy_ssv2(
    archives: str | os.PathLike,
    annotations: str | os.PathLike,
    boxes: str | os.PathLike,
    settings: ToySettings,
) -> dict:
    """Write the synthetic SSv2 download (zipped parts, labels zip, Something-Else boxes)."""
    archives, annotations, boxes = Path(archives), Path(annotations), Path(boxes)
    for folder in (archives, annotations, boxes):
        folder.mkdir(parents=True, exist_ok=True)
    labels = CLASS_NAMES[: settings.classes]
    entries: dict[str, list[dict]] = {"train": [], "validation": [], "test": []}
    box_json: dict[str, list[dict]] = {}
    n_frames = 0
    with split_tar_gz(archives, SSV2_STEM, settings.part_bytes) as (tar, writer):
        for video in tqdm(
            iter_videos(settings), total=settings.videos, desc="toy videos", unit="video"
        ):
            # 4:2:0 video has even sizes
            frames = [f[: f.shape[0] // 2 * 2, : f.shape[1] // 2 * 2] for f in video.frames]
            webm = encode_webm(frames)
            tar.addfile(*_tar_member(f"{SSV2_STEM}/{video.video_id}.webm", webm))
            n_frames += len(frames)
            if video.split == "test":
                entries["test"].append({"id": video.video_id})
            else:
                objects = list(dict.fromkeys(v["name"] for f in video.boxes for v in f))
                template = ssv2_template(labels[video.label])
                entries[video.split].append(
                    {
                        "id": video.video_id,
                        "label": labels[video.label].lower(),
                        "template": template,
                        "placeholders": objects,
                    }
                )
            box_json[video.video_id] = something_else_frames(video)
    zips = []
    for piece in writer.paths:
        _zip_bytes(piece.with_name(piece.name + ".zip"), {piece.name: piece.read_bytes()})
        piece.unlink()  # the download holds only the zips
        zips.append(piece.name + ".zip")
    class_index = {label: str(i) for i, label in enumerate(labels)}
    members = {"labels/labels.json": json.dumps(dict(sorted(class_index.items())), indent=1)}
    for split, items in entries.items():
        members[f"labels/{split}.json"] = json.dumps(items)
    _zip_bytes(annotations / SSV2_LABELS_ZIP, members)
    ids = sorted(box_json)
    half = (len(ids) + 1) // 2
    for name, part in zip(SSV2_BOX_FILES, (ids[:half], ids[half:]), strict=True):
        with atomic_path(boxes / name) as tmp:
            tmp.write_text(json.dumps({video_id: box_json[video_id] for video_id in part}))
    summary = {
        "videos": settings.videos,
        "frames": n_frames,
        "classes": settings.classes,
        "parts": zips,
        "splits": {split: len(items) for split, items in entries.items()},
    }
    log.info("toy SSv2 dataset: %s", summary)
    return summary
