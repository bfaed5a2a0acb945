"""The four CSVs of Something-Something v1 and the split layout of links.

- ``something-something-v1-labels.csv``: one label per line (labels may contain commas, so
  the file is read line by line, not as CSV). The label index is the 0-based row order of
  this file, the convention of mmaction2; TSM sorts the labels alphabetically instead.
- ``something-something-v1-{train,validation}.csv``: ``video_id;label`` per line.
- ``something-something-v1-test.csv``: one video id per line (no labels).

Video ids become folder and link names, so every id is checked before it touches a path: SSv1
ids are numbers, and anything else (``../x``, an empty field) is an error naming the file and
line. A label missing from the labels file is an error listing every unknown label and how many
videos carry it (``index.unknown_labels: error``), or, with ``drop``, those videos are listed in
the dropped table like every other video left out.

:func:`split_videos` lays out ``frames/{split}/{label_index}/{video_id}`` as symbolic links to
the extracted frame folders (``frames/test/unlabeled/{video_id}`` for the test split). The raw
frames are never moved or modified: the original recipe moved them with ``mv``, destroying the
extracted archive.
"""

from __future__ import annotations

import logging
import os
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

log = logging.getLogger(__name__)

CSV_PREFIX = "something-something-v1"
SPLITS = ("train", "validation", "test")
TEST_LABEL_DIR = "unlabeled"
VIDEO_ID = re.compile(r"^[0-9]+$")
UNKNOWN_LABEL_POLICIES = ("error", "drop")
LISTED_COLUMNS = ["video_id", "split", "label", "label_index"]
PLACEHOLDERS = "placeholders"  # SSv2's objects per video: a list of strings


class AnnotationError(ValueError):
    """An annotation file cannot be used at all (missing, or ambiguous labels)."""


def read_labels(path: str | os.PathLike) -> list[str]:
    """Labels in file order; a duplicate label is an error (the index would be ambiguous)."""
    path = Path(path)
    if not path.exists():
        raise AnnotationError(f"{path}: labels file does not exist")
    labels: list[str] = []
    seen: dict[str, int] = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        label = line.strip()
        if not label:
            continue
        if label in seen:
            raise AnnotationError(
                f"{path}:{number}: duplicate label {label!r} (first on line {seen[label]})"
            )
        seen[label] = number
        labels.append(label)
    if not labels:
        raise AnnotationError(f"{path}: labels file is empty")
    return labels


def check_video_id(video_id: str, where: str) -> str:
    """``video_id`` when it is an SSv1 id (digits only); else an error naming ``where``."""
    if not VIDEO_ID.match(video_id):
        raise AnnotationError(
            f"{where}: video id {video_id!r} is not a number (Something-Something ids are "
            "digits); fix the file"
        )
    return video_id


def read_split_csv(path: str | os.PathLike, labeled: bool) -> list[tuple[str, str | None, int]]:
    """``(video_id, label or None, line number)`` for each non-empty line; ids are checked."""
    path = Path(path)
    if not path.exists():
        raise AnnotationError(f"{path}: split file does not exist")
    rows = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        line = line.strip()
        if not line:
            continue
        if labeled:
            video_id, sep, label = line.partition(";")
            if not sep:
                raise AnnotationError(f"{path}:{number}: expected 'video_id;label', got {line!r}")
            rows.append((check_video_id(video_id.strip(), f"{path}:{number}"), label.strip(), number))
        else:
            video_id = line.split(";")[0].strip()
            rows.append((check_video_id(video_id, f"{path}:{number}"), None, number))
    return rows


@dataclass
class SplitResult:
    videos: pd.DataFrame  # video_id, split, label, label_index, frame_dir, raw_dir
    dropped: pd.DataFrame  # video_id, split, reason, stage
    labels: list[str]
    # every video the CSVs list once with a usable label (test: -1), linked or not: the
    # evaluation predicts each of the validation and test ones, readable or not
    listed: pd.DataFrame  # video_id, split, label, label_index


def unknown_labels_message(unknown: Counter, where: dict[str, str], labels_file: Path) -> str:
    """What to tell the user about labels that are not in the labels file."""
    listing = "; ".join(
        f"{label!r}: {count} video{'s' if count > 1 else ''} (first at {where[label]})"
        for label, count in unknown.most_common()
    )
    total = sum(unknown.values())
    return (
        f"{total} {'videos carry labels that are' if total > 1 else 'video carries a label that is'} "
        f"not in {labels_file}: "
        f"{listing}. Use the labels file of the same download, or set "
        "index.unknown_labels: drop to leave these videos out"
    )


@dataclass(frozen=True)
class Listed:
    """One video as an annotation file lists it (any dataset)."""

    video_id: str
    split: str
    label: str | None  # the class text (SSv2: the template without brackets); None for test
    where: str  # file and line (or entry) for messages
    placeholders: tuple[str, ...] | None = None  # SSv2: the objects filling the template


def read_ssv1_listing(annotations: Path) -> list[Listed]:
    """Every line of the three SSv1 split CSVs, in file order."""
    listing = []
    for split in SPLITS:
        csv_path = annotations / f"{CSV_PREFIX}-{split}.csv"
        for video_id, label, number in read_split_csv(csv_path, labeled=split != "test"):
            listing.append(Listed(video_id, split, label, f"{csv_path.name}:{number}"))
    return listing


def split_videos(
    annotations: str | os.PathLike,
    raw_frames: str | os.PathLike,
    frames_out: str | os.PathLike,
    unknown_labels: str = "error",
) -> SplitResult:
    """SSv1: map every video of the CSVs to its label index and link its frame folder into
    the split layout (:func:`link_split`)."""
    annotations = Path(annotations)
    labels_file = annotations / f"{CSV_PREFIX}-labels.csv"
    labels = read_labels(labels_file)
    return link_split(
        read_ssv1_listing(annotations), labels, labels_file, raw_frames, frames_out, unknown_labels
    )


def link_split(
    listing: list[Listed],
    labels: list[str],
    labels_file: str | os.PathLike,
    raw_frames: str | os.PathLike,
    frames_out: str | os.PathLike,
    unknown_labels: str = "error",
    earlier_drops: dict[str, tuple[str, str]] | None = None,
) -> SplitResult:
    """Map every listed video to its label index and link its frame folder into the split layout.

    A label missing from the labels file stops the split with every unknown label and its count
    (``unknown_labels="error"``, before any link is made), or drops those videos
    (``"drop"``). Ids listed twice (in one split or across splits: the first listing wins) and
    ids without a frame folder are reported in the result's ``dropped`` table, and the run goes
    on; a video an earlier stage left out (``earlier_drops``: id -> (reason, stage), e.g. a
    webm that does not decode) is reported with that stage's reason.
    """
    if unknown_labels not in UNKNOWN_LABEL_POLICIES:
        raise ValueError(
            f"index.unknown_labels must be one of {UNKNOWN_LABEL_POLICIES}, got {unknown_labels!r}"
        )
    raw_frames, frames_out = Path(raw_frames), Path(frames_out)
    earlier_drops = earlier_drops or {}
    label_index = {label: i for i, label in enumerate(labels)}
    with_placeholders = any(item.placeholders is not None for item in listing)
    kept, dropped, listed = [], [], []
    unknown: Counter = Counter()
    unknown_where: dict[str, str] = {}
    first_seen: dict[str, str] = {}
    for item in listing:
        video_id, split, label, where = item.video_id, item.split, item.label, item.where
        if video_id in first_seen:
            reason = f"duplicate id ({where}); first listed in {first_seen[video_id]}"
            dropped.append((video_id, split, reason, "split"))
            continue
        first_seen[video_id] = f"{split} ({where})"
        if label is not None and label not in label_index:
            unknown[label] += 1
            unknown_where.setdefault(label, where)
            dropped.append((video_id, split, f"unknown label {label!r} ({where})", "split"))
            continue
        index = label_index[label] if label is not None else -1
        extra = (list(item.placeholders or ()),) if with_placeholders else ()
        listed.append((video_id, split, label or "", index, *extra))
        raw_dir = raw_frames / video_id
        if not raw_dir.is_dir():
            if video_id in earlier_drops:
                reason, stage = earlier_drops[video_id]
                dropped.append((video_id, split, reason, stage))
            else:
                dropped.append((video_id, split, f"no frame folder {raw_dir}", "split"))
            continue
        kept.append((video_id, split, label or "", index, raw_dir, extra))
    if unknown:
        message = unknown_labels_message(unknown, unknown_where, Path(labels_file))
        if unknown_labels == "error":
            raise AnnotationError(message)
        log.warning("index.unknown_labels is drop: %s", message)
    for video_id, split, reason, _stage in dropped:
        log.warning("dropped video %s (%s): %s", video_id, split, reason)
    if frames_out.exists():
        _remove_links(frames_out)
    partial = frames_out.with_name(frames_out.name + ".partial")
    if partial.exists():
        _remove_links(partial)
    rows = []
    made: set[Path] = set()
    for video_id, split, label, index, raw_dir, extra in kept:
        group = frames_out / split / (str(index) if index >= 0 else TEST_LABEL_DIR)
        link_dir = partial / group.relative_to(frames_out)
        if link_dir not in made:
            link_dir.mkdir(parents=True, exist_ok=True)
            made.add(link_dir)
        # relative links keep working when the results folder is moved or mounted elsewhere
        os.symlink(os.path.relpath(raw_dir, group), link_dir / video_id)
        rows.append((video_id, split, label, index, str(group / video_id), str(raw_dir), *extra))
    partial.mkdir(parents=True, exist_ok=True)
    os.replace(partial, frames_out)
    extra_columns = [PLACEHOLDERS] if with_placeholders else []
    videos = pd.DataFrame(
        rows,
        columns=[
            "video_id", "split", "label", "label_index", "frame_dir", "raw_dir", *extra_columns
        ],
    )
    videos["label_index"] = videos["label_index"].astype("int64")
    dropped_df = pd.DataFrame(dropped, columns=["video_id", "split", "reason", "stage"])
    listed_df = pd.DataFrame(listed, columns=[*LISTED_COLUMNS, *extra_columns])
    listed_df["label_index"] = listed_df["label_index"].astype("int64")
    log.info("split: %d videos linked, %d dropped", len(videos), len(dropped_df))
    return SplitResult(videos, dropped_df, labels, listed_df)


def _remove_links(folder: Path) -> None:
    """Remove a tree of directories and symlinks without ever following a link.

    Refuses (before removing anything) when the tree holds a regular file: a split folder
    holds only links, so anything else means the path points at real data.
    """
    for root, _dirs, files in os.walk(folder):
        for name in files:
            if not os.path.islink(os.path.join(root, name)):
                raise AnnotationError(
                    f"{folder}: holds a regular file {name!r}; not a split folder, not removing it"
                )
    for root, dirs, files in os.walk(folder, topdown=False):
        links = [d for d in dirs if os.path.islink(os.path.join(root, d))]
        for name in files + links:
            os.unlink(os.path.join(root, name))
        for name in set(dirs) - set(links):
            os.rmdir(os.path.join(root, name))
    os.rmdir(folder)
