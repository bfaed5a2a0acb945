"""The ``annotations`` box backend: Something-Else style per-frame box annotations.

Accepted format (that of Something-Else's ``bounding_box_smthsmth_part*.json``, Materzynska et
al., CVPR 2020; the synthetic dataset writes ``something-else-boxes.json`` the same way)::

    {
      "<video_id>": [                                  # one entry per annotated frame
        {
          "name": "<video_id>/0001.jpg",               # 1-based frame number, any zero padding
          "labels": [
            {"box2d": {"x1": 10.0, "y1": 20.0, "x2": 50.0, "y2": 80.0},   # frame pixels
             "category": "cup",                        # free text (ignored)
             "standard_category": "0000"},             # object identity within the video
            ...
          ],
          "nr_instances": 1                            # optional; not checked
        },
        ...
      ],
      ...
    }

Several files (Something-Else ships four parts, ``bounding_box_smthsmth_part{1..4}.json``) are
merged; a video in two files is an error. Something-Else numbers the frames of the video decoded
at its own 12 fps from ``0001.jpg``: frame ``n`` is the decode stage's ``{n:05d}.jpg``.

Mapping to the clip's box frames (0-based indices, ``00001.jpg`` is 0):

- Objects are matched across frames by ``standard_category`` (``"0000"``, ``"0001"``, ...,
  ``"hand"``); when one frame lists the same ``standard_category`` twice (two hands), the
  n-th occurrence in a frame is matched to the n-th occurrence in the others.
- A box frame with an entry gets the boxes listed there (an object absent from a frame that
  has an entry is absent: occluded or out of view).
- A box frame without an entry gets, for each object, the box linearly interpolated between
  the nearest earlier and later frames where that object is annotated; an object with no
  annotation on one side (beyond the ends) is left out.
- Boxes are clipped to the frame; a box left empty by clipping is dropped. Up to ``per_frame``
  boxes are kept, ordered by class id and occurrence, each with score 1.0.
- Class ids are positions in the sorted list of every ``standard_category`` in the file(s)
  (``"0000" < "0001" < ... < "hand"``), the same for every shard; the list is returned as
  :attr:`BoxAnnotations.class_names` and stored in the shard.
- A video missing from the file gets no valid boxes (the caller warns).
"""

from __future__ import annotations

import json
import os
import re
from bisect import bisect_left
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from regiongraph.detect.boxes import VideoBoxes, clip_boxes_to_frame

FRAME_NUMBER = re.compile(r"(\d+)\.[A-Za-z]+$")

# one object track: 0-based frame index -> (x1, y1, x2, y2)
Track = dict[int, tuple[float, float, float, float]]


class BoxAnnotations:
    """Per-video object tracks read from one or more Something-Else style files."""

    def __init__(
        self,
        tracks: dict[str, dict[tuple[str, int], Track]],
        annotated_frames: dict[str, set[int]],
        class_names: list[str],
    ):
        self.tracks = tracks
        self.annotated_frames = annotated_frames
        self.class_names = class_names
        self._class_ids = {name: i for i, name in enumerate(class_names)}

    @classmethod
    def load(
        cls,
        paths: str | os.PathLike | Sequence[str | os.PathLike],
        video_ids: Iterable[str] | None = None,
        class_names: list[str] | None = None,
    ) -> BoxAnnotations:
        """Read the file(s); keep only ``video_ids`` when given (class ids use the whole file,
        or ``class_names`` when given: those of every file a shard's subset was cut from)."""
        if isinstance(paths, (str, os.PathLike)):
            paths = [paths]
        wanted = None if video_ids is None else set(map(str, video_ids))
        tracks: dict[str, dict[tuple[str, int], Track]] = {}
        annotated: dict[str, set[int]] = {}
        seen_in: dict[str, Path] = {}
        categories: set[str] = set()
        for path in map(Path, paths):
            data = read_json_object(path)
            for video_id, entries in data.items():
                video_id = str(video_id)
                if video_id in seen_in:
                    raise ValueError(f"{path}: video {video_id!r} is also in {seen_in[video_id]}")
                seen_in[video_id] = path
                parsed = _parse_video(path, video_id, entries)
                for frame_labels in parsed.values():
                    categories.update(category for category, _ in frame_labels)
                if wanted is not None and video_id not in wanted:
                    continue
                annotated[video_id] = set(parsed)
                video_tracks: dict[tuple[str, int], Track] = {}
                for frame, frame_labels in parsed.items():
                    counts: dict[str, int] = {}
                    for category, box in frame_labels:
                        occurrence = counts.get(category, 0)
                        counts[category] = occurrence + 1
                        video_tracks.setdefault((category, occurrence), {})[frame] = box
                tracks[video_id] = video_tracks
        if class_names is not None:
            unknown = sorted(categories - set(class_names))
            if unknown:
                raise ValueError(f"{paths}: standard categories {unknown[:5]} are not in the class list")
            return cls(tracks, annotated, list(class_names))
        return cls(tracks, annotated, sorted(categories))

    def __contains__(self, video_id: str) -> bool:
        return video_id in self.tracks

    def last_frame(self, video_id: str) -> int:
        """The last 0-based frame the file annotates for a video (-1 if none)."""
        return max(self.annotated_frames.get(video_id) or {-1})

    def video_boxes(
        self,
        video_id: str,
        box_frames: Sequence[int],
        height: int,
        width: int,
        per_frame: int,
    ) -> VideoBoxes:
        """Boxes on the given 0-based ``box_frames``; no valid box if the video is unknown."""
        out = VideoBoxes.empty(len(box_frames), per_frame)
        if video_id not in self.tracks:
            return out
        annotated = self.annotated_frames[video_id]
        ordered = sorted(
            self.tracks[video_id].items(),
            key=lambda item: (self._class_ids[item[0][0]], item[0][1]),
        )
        for t, frame in enumerate(int(f) for f in box_frames):
            boxes, classes = [], []
            for (category, _), track in ordered:
                box = track.get(frame) if frame in annotated else _interpolate(track, frame)
                if box is None:
                    continue
                box = clip_boxes_to_frame(np.asarray(box), height, width)
                if box[2] <= box[0] or box[3] <= box[1]:
                    continue
                boxes.append(box)
                classes.append(self._class_ids[category])
                if len(boxes) == per_frame:
                    break
            if boxes:
                out.set_frame(
                    t, np.stack(boxes), np.ones(len(boxes), np.float32), np.asarray(classes)
                )
        return out


def _interpolate(track: Track, frame: int) -> tuple[float, float, float, float] | None:
    """Linear interpolation between the nearest annotated frames on both sides, else None."""
    frames = sorted(track)
    i = bisect_left(frames, frame)
    if i < len(frames) and frames[i] == frame:
        return track[frame]
    if i == 0 or i == len(frames):
        return None
    before, after = frames[i - 1], frames[i]
    w = (frame - before) / (after - before)
    a, b = np.asarray(track[before]), np.asarray(track[after])
    return tuple(((1 - w) * a + w * b).tolist())


def _parse_video(path: Path, video_id: str, entries) -> dict[int, list[tuple[str, tuple]]]:
    """0-based frame index -> [(standard_category, box)] for one video's entries."""
    where = f"{path}: video {video_id!r}"
    if not isinstance(entries, list):
        raise ValueError(f"{where}: expected a list of frame entries, got {type(entries).__name__}")
    frames: dict[int, list[tuple[str, tuple]]] = {}
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict) or "name" not in entry:
            raise ValueError(f"{where}: entry {i} has no 'name'")
        match = FRAME_NUMBER.search(str(entry["name"]))
        if not match or int(match.group(1)) < 1:
            raise ValueError(
                f"{where}: entry {i}: cannot read a 1-based frame number from {entry['name']!r}"
            )
        frame = int(match.group(1)) - 1
        if frame in frames:
            raise ValueError(f"{where}: frame {entry['name']!r} is listed twice")
        labels = []
        for j, label in enumerate(entry.get("labels") or []):
            try:
                box2d = label["box2d"]
                x1, y1, x2, y2 = (float(box2d[key]) for key in ("x1", "y1", "x2", "y2"))
                category = str(label["standard_category"])
            except (KeyError, TypeError, ValueError) as error:
                raise ValueError(
                    f"{where}: frame {entry['name']!r} label {j}: needs box2d x1/y1/x2/y2 numbers "
                    f"and standard_category ({error!r})"
                ) from error
            labels.append((category, (min(x1, x2), min(y1, y2), max(x1, x2), max(y1, y2))))
        frames[frame] = labels
    return frames


def read_json_object(path: Path) -> dict:
    """A box annotation file's top-level object, or an error naming the file."""
    if not path.exists():
        raise FileNotFoundError(f"{path}: box annotation file does not exist")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: not valid JSON ({error})") from error
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected an object mapping video ids to frame lists")
    return data


def shard_fragment(out_dir: str | os.PathLike, split: str, shard: int, part: int) -> Path:
    """Where :func:`shard_box_annotations` writes part ``part``'s videos of one shard."""
    return Path(out_dir) / split / f"shard-{shard:03d}.part{part}.json"


def shard_box_annotations(
    parts: Sequence[str | os.PathLike],
    owners: dict[str, tuple[str, int]],
    shards: dict[str, int],
    out_dir: str | os.PathLike,
) -> dict[str, int]:
    """Cut Something-Else's part files into one small file per shard and part, read once.

    The four ``bounding_box_smthsmth_part*.json`` hold the boxes of 180,049 videos (several GB
    of JSON): every boxes job reading all of them would parse them once per shard. Here each
    part is parsed once (one at a time, so memory stays at one part), every video is checked
    as :meth:`BoxAnnotations.load` checks it, and the videos of the index (``owners``: video id
    -> (split, shard)) are written to :func:`shard_fragment` files, in the same format; the
    sorted standard categories of every part go to ``classes.json``, so that class ids are the
    same in every shard. Returns counts: videos annotated, of them in the index, index videos
    without annotations.
    """
    from regiongraph.io import atomic_path

    out_dir = Path(out_dir)
    categories: set[str] = set()
    seen_in: dict[str, Path] = {}
    for number, path in enumerate(map(Path, parts)):
        data = read_json_object(path)
        buckets: dict[tuple[str, int], dict] = {
            (split, k): {} for split, n in shards.items() for k in range(n)
        }
        for video_id, entries in data.items():
            video_id = str(video_id)
            if video_id in seen_in:
                raise ValueError(f"{path}: video {video_id!r} is also in {seen_in[video_id]}")
            seen_in[video_id] = path
            for frame_labels in _parse_video(path, video_id, entries).values():
                categories.update(category for category, _ in frame_labels)
            if video_id in owners:
                buckets[owners[video_id]][video_id] = entries
        del data
        for (split, k), videos in buckets.items():
            target = shard_fragment(out_dir, split, k, number)
            target.parent.mkdir(parents=True, exist_ok=True)
            with atomic_path(target) as tmp:
                tmp.write_text(json.dumps(videos))
    with atomic_path(out_dir / "classes.json") as tmp:
        tmp.write_text(json.dumps(sorted(categories)))
    annotated = set(seen_in)
    return {
        "annotated": len(annotated),
        "in_index": len(annotated & set(owners)),
        "unannotated": len(set(owners) - annotated),
    }
