"""The labels of Something-Something v2, its official split, and Something-Else's splits.

The download's ``20bn-something-something-download-package-labels.zip`` holds (older copies
name the same files ``something-something-v2-{labels,train,validation,test}.json``; either
naming is read, from the zip or from a folder holding the four files)::

    labels/labels.json       {"Approaching something with your camera": "0", ...}
    labels/train.json        [{"id": "78687", "label": "holding potato next to vicks vaporub bottle",
                               "template": "Holding [something] next to [something]",
                               "placeholders": ["potato", "vicks vaporub bottle"]}, ...]
    labels/validation.json   (the same)
    labels/test.json         [{"id": "1420"}, ...]   (ids only)

- The class of a video is its ``template`` with the brackets removed (``Holding something next
  to something``), looked up in ``labels.json``; the class index is the value ``labels.json``
  gives it (a string or a number; the indices must be 0..N-1, each once), not an alphabetical
  order. ``index/labels.csv`` lists the classes in that order.
- ``placeholders`` (the objects) are kept per video in the split and index tables.
- A template missing from ``labels.json``, an id listed twice and an id without a video follow
  the same rules as SSv1's CSVs (:func:`regiongraph.dataset.annotations.link_split`, with
  ``index.unknown_labels``).

``dataset.splits`` chooses the train and validation lists: ``official`` (the two files above),
or a folder of Something-Else split files (its compositional split: ``train.json`` and
``validation.json`` in the same entry format, and optionally its own ``labels.json``, which
then gives the class indices). The test split is always the official ``test.json`` (ids only).
"""

from __future__ import annotations

import json
import logging
import os
import posixpath
import zipfile
from pathlib import Path

import pandas as pd

from regiongraph.dataset.annotations import (
    AnnotationError,
    Listed,
    SplitResult,
    check_video_id,
    link_split,
)

log = logging.getLogger(__name__)

LABEL_NAMES = ("labels", "train", "validation", "test")
OLD_PREFIX = "something-something-v2"
SPLIT_FILES = ("train", "validation")


def template_class(template: str) -> str:
    """The class text of a template: ``Putting [something] onto [something]`` -> ``Putting
    something onto something`` (the form ``labels.json`` uses)."""
    return template.replace("[", "").replace("]", "")


class LabelFiles:
    """The four label JSONs, from the labels zip or a folder (either naming)."""

    def __init__(self, source: str | os.PathLike):
        self.source = Path(source)
        if not self.source.exists():
            raise AnnotationError(
                f"{self.source}: dataset.annotations does not exist (the labels zip "
                "20bn-something-something-download-package-labels.zip, or a folder of its JSONs)"
            )
        self.zipped = self.source.is_file()
        if self.zipped:
            try:
                with zipfile.ZipFile(self.source) as archive:
                    self.members = [i.filename for i in archive.infolist() if not i.is_dir()]
            except zipfile.BadZipFile as error:
                raise AnnotationError(
                    f"{self.source}: not a readable zip ({error}); download the labels zip again"
                ) from error

    def _candidates(self, name: str) -> list[str]:
        return [f"labels/{name}.json", f"{OLD_PREFIX}-{name}.json", f"{name}.json"]

    def locate(self, name: str) -> str:
        """Where the file ``name`` (``labels``, ``train``, ...) is: a zip member or a path."""
        candidates = self._candidates(name)
        if self.zipped:
            by_path = {m: m for m in self.members}
            by_base: dict[str, str] = {}
            for member in self.members:
                by_base.setdefault(posixpath.basename(member), member)
            for candidate in candidates:
                if candidate in by_path:
                    return candidate
            for candidate in candidates[1:]:
                if candidate in by_base:
                    return by_base[candidate]
            shown = ", ".join(self.members[:8]) or "nothing"
            raise AnnotationError(
                f"{self.source}: holds no {candidates[0]} (nor {candidates[1]}); it holds "
                f"{shown}. Is this the labels zip of Something-Something v2 "
                "(20bn-something-something-download-package-labels.zip)?"
            )
        for candidate in candidates:
            if (self.source / candidate).is_file():
                return str(self.source / candidate)
        raise AnnotationError(
            f"{self.source}: no {name}.json (looked for {', '.join(candidates)}); give the labels "
            "zip or the folder holding its four JSONs"
        )

    def read(self, name: str) -> tuple[object, str]:
        """The parsed JSON of ``name`` and its location for messages."""
        location = self.locate(name)
        where = f"{self.source}:{location}" if self.zipped else location
        try:
            if self.zipped:
                with zipfile.ZipFile(self.source) as archive:
                    text = archive.read(location).decode("utf-8")
            else:
                text = Path(location).read_text(encoding="utf-8")
            return json.loads(text), where
        except (json.JSONDecodeError, UnicodeDecodeError, zipfile.BadZipFile) as error:
            raise AnnotationError(f"{where}: not valid JSON ({error})") from error


def read_class_index(data: object, where: str) -> list[str]:
    """The classes of a ``labels.json`` in index order (its values), checked to be 0..N-1."""
    if not isinstance(data, dict) or not data:
        raise AnnotationError(f"{where}: expected an object mapping each template to its index")
    by_index: dict[int, str] = {}
    for text, value in data.items():
        try:
            index = int(value)
        except (TypeError, ValueError):
            raise AnnotationError(
                f"{where}: template {text!r} has index {value!r}, not a number"
            ) from None
        if index in by_index:
            raise AnnotationError(
                f"{where}: index {index} is given to both {by_index[index]!r} and {text!r}"
            )
        by_index[index] = str(text)
    if sorted(by_index) != list(range(len(by_index))):
        missing = sorted(set(range(len(by_index))) - set(by_index))
        raise AnnotationError(
            f"{where}: class indices must be 0..{len(by_index) - 1}, each once (missing {missing[:5]})"
        )
    return [by_index[i] for i in range(len(by_index))]


def read_entries(data: object, where: str, split: str, labeled: bool) -> list[Listed]:
    """The videos of a train/validation (``labeled``) or test JSON; ids are checked."""
    if not isinstance(data, list):
        raise AnnotationError(f"{where}: expected a list of videos, got {type(data).__name__}")
    listing = []
    for number, entry in enumerate(data):
        at = f"{where} entry {number}"
        if not isinstance(entry, dict) or "id" not in entry:
            raise AnnotationError(f"{at}: expected an object with an 'id'")
        video_id = check_video_id(str(entry["id"]).strip(), at)
        if not labeled:
            listing.append(Listed(video_id, split, None, at))
            continue
        if not isinstance(entry.get("template"), str):
            raise AnnotationError(f"{at}: video {video_id} has no 'template'")
        placeholders = entry.get("placeholders") or []
        if not isinstance(placeholders, list):
            raise AnnotationError(f"{at}: 'placeholders' of video {video_id} is not a list")
        listing.append(
            Listed(
                video_id,
                split,
                template_class(entry["template"]),
                at,
                tuple(str(p) for p in placeholders),
            )
        )
    return listing


def _split_folder_file(folder: Path, name: str) -> Path:
    path = folder / f"{name}.json"
    if not path.is_file():
        raise AnnotationError(
            f"{folder}: dataset.splits folder has no {name}.json (Something-Else's split folders "
            "hold train.json and validation.json)"
        )
    return path


def _read_json(path: Path) -> object:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise AnnotationError(f"{path}: not valid JSON ({error})") from error


def ssv2_listing(
    annotations: str | os.PathLike, splits_folder: str | os.PathLike | None = None
) -> tuple[list[Listed], list[str], str]:
    """(every listed video, the classes in index order, where the classes came from)."""
    files = LabelFiles(annotations)
    if splits_folder is not None:
        splits_folder = Path(splits_folder)
        if not splits_folder.is_dir():
            raise AnnotationError(f"{splits_folder}: dataset.splits folder does not exist")
    own_labels = splits_folder / "labels.json" if splits_folder is not None else None
    if own_labels is not None and own_labels.is_file():
        labels_where = str(own_labels)
        labels = read_class_index(_read_json(own_labels), labels_where)
    else:
        data, labels_where = files.read("labels")
        labels = read_class_index(data, labels_where)
    listing: list[Listed] = []
    for split in SPLIT_FILES:
        if splits_folder is None:
            data, where = files.read(split)
        else:
            path = _split_folder_file(splits_folder, split)
            data, where = _read_json(path), str(path)
        listing += read_entries(data, where, split, labeled=True)
    data, where = files.read("test")
    listing += read_entries(data, where, "test", labeled=False)
    return listing, labels, labels_where


def split_ssv2(
    annotations: str | os.PathLike,
    raw_frames: str | os.PathLike,
    frames_out: str | os.PathLike,
    unknown_labels: str = "error",
    splits_folder: str | os.PathLike | None = None,
    decode_dropped: pd.DataFrame | None = None,
) -> SplitResult:
    """Read the labels (zip or folder) and the split, and link every video's frame folder;
    a video the decode stage dropped is reported with its reason (stage ``decode``)."""
    listing, labels, labels_where = ssv2_listing(annotations, splits_folder)
    earlier = {}
    if decode_dropped is not None:
        earlier = {
            str(row.video_id): (str(row.reason), "decode") for row in decode_dropped.itertuples()
        }
    log.info(
        "%d classes from %s; %d videos listed (%s split)",
        len(labels),
        labels_where,
        len(listing),
        "official" if splits_folder is None else str(splits_folder),
    )
    return link_split(
        listing, labels, labels_where, raw_frames, frames_out, unknown_labels, earlier
    )
