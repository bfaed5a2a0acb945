"""HDF5 shards: one writer per file, atomic completion, provenance in attributes.

Every stage that writes ``{stage}/{split}/shard-{k}.h5`` goes through :func:`shard_writer`:
the file is written under a temporary name, its root attributes record what produced it
(``stage``, the stage's settings as JSON, the code version, the inputs' sizes), the videos the
job left out (``dropped``) and a SHA-256 of everything it holds (``content_digest``), and
``complete = True`` is set last, before the rename. A later stage that must know whether its
inputs changed (a resumed training run) compares content digests, which stay the same when a
shard is rewritten with the same data and change with any byte of it. :func:`open_shard` opens read-only,
refuses a file without ``complete`` (a shard left half-written by a killed job under an old
non-atomic writer, or copied partially), and refuses one whose recorded settings disagree with
what the reader expects, naming both.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import subprocess
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from regiongraph import __version__
from regiongraph.io.atomic import atomic_path
from regiongraph.io.dropped import DROPPED_COLUMNS

log = logging.getLogger(__name__)


# Root attributes that describe how a shard was made rather than what it holds.
PROVENANCE_ATTRIBUTES = ("stage", "settings", "code_version", "inputs", "complete", "content_digest")
DROPPED_ATTRIBUTE = "dropped"


class ShardMismatchError(ValueError):
    """A shard was produced under other settings than the reader expects."""


def code_version() -> str:
    """The package version, plus the git commit when run from a checkout."""
    here = Path(__file__).resolve().parents[2]
    try:
        commit = subprocess.run(
            ["git", "-C", str(here), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    return f"{__version__}+{commit}" if commit else __version__


def file_checksum(path: str | os.PathLike, algorithm: str = "sha256") -> str:
    digest = hashlib.new(algorithm)
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return f"{algorithm}:{digest.hexdigest()}"


def input_summary(paths: Mapping[str, str | os.PathLike]) -> dict[str, dict[str, Any]]:
    """Size and modification time of each named input (cheap; checksums are for weights)."""
    summary = {}
    for name, path in paths.items():
        stat = os.stat(path)
        summary[name] = {"path": str(path), "bytes": stat.st_size, "mtime": int(stat.st_mtime)}
    return summary


def _encode(value: Any) -> Any:
    if isinstance(value, (dict, list, tuple)) or value is None:
        return json.dumps(value, sort_keys=True, default=str)
    return value


def _hash_attributes(digest, obj: h5py.HLObject, skip: tuple[str, ...] = ()) -> None:
    for key in sorted(obj.attrs):
        if key not in skip:
            digest.update(f"@{key}={_encode_attribute(obj.attrs[key])}".encode())


def _encode_attribute(value: Any) -> str:
    if isinstance(value, np.ndarray):
        return json.dumps(value.tolist(), default=str)
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return json.dumps(value, default=str) if not isinstance(value, str) else value


def _hash_dataset(digest, dataset: h5py.Dataset) -> None:
    digest.update(f"{dataset.name}:{dataset.dtype.str}:{dataset.shape}".encode())
    if dataset.dtype.kind == "O" or h5py.check_string_dtype(dataset.dtype) is not None:
        # variable-length strings: the stored bytes are heap references; hash the values
        for value in dataset.asstr()[()].reshape(-1).tolist():
            digest.update(value.encode("utf-8") + b"\0")
    elif dataset.chunks is not None:
        # the stored chunks as they are (compressed ones too): no decompression needed
        dataset_id = dataset.id
        for i in range(dataset_id.get_num_chunks()):
            info = dataset_id.get_chunk_info(i)
            _, raw = dataset_id.read_direct_chunk(info.chunk_offset)
            digest.update(f"{info.chunk_offset}".encode())
            digest.update(raw)
    else:
        digest.update(np.ascontiguousarray(dataset[()]).tobytes())
    _hash_attributes(digest, dataset)


def content_digest(handle: h5py.File) -> str:
    """SHA-256 over every group, dataset and attribute of ``handle`` except the provenance
    attributes, in name order: equal for shards that hold the same data."""
    digest = hashlib.sha256()
    _hash_attributes(digest, handle, PROVENANCE_ATTRIBUTES)
    names: list[str] = []
    handle.visit(names.append)
    for name in sorted(names):
        obj = handle[name]
        if isinstance(obj, h5py.Dataset):
            _hash_dataset(digest, obj)
        else:
            digest.update(f"{obj.name}/".encode())
            _hash_attributes(digest, obj)
    return f"sha256:{digest.hexdigest()}"


def record_shard_drops(handle: h5py.File, rows: list[Mapping[str, str]]) -> None:
    """Store the videos this job left out (``video_id``, ``split``, ``reason``, ``stage``) in
    the shard itself; the ``dropped`` rule gathers them into ``index/dropped.csv``."""
    handle.attrs[DROPPED_ATTRIBUTE] = json.dumps(
        [{key: str(row.get(key, "")) for key in DROPPED_COLUMNS} for row in rows]
    )


class DropReport:
    """The videos one shard job leaves out: logged as they go, recorded in the shard."""

    def __init__(self, stage: str, split: str) -> None:
        self.stage, self.split = stage, split
        self.rows: list[dict[str, str]] = []

    def drop(self, video_id: str, reason: str) -> None:
        log.warning("%s: video %s left out: %s", self.stage, video_id, reason)
        self.rows.append(
            {"video_id": str(video_id), "split": self.split, "reason": str(reason), "stage": self.stage}
        )

    def __len__(self) -> int:
        return len(self.rows)

    def record(self, handle: h5py.File) -> None:
        record_shard_drops(handle, self.rows)


def shard_drops(path: str | os.PathLike) -> list[dict[str, str]]:
    """The videos a finished shard's job left out (see :func:`record_shard_drops`)."""
    with open_shard(path) as handle:
        return json.loads(handle.attrs.get(DROPPED_ATTRIBUTE, "[]"))


def shard_digest(path: str | os.PathLike) -> str:
    """The ``content_digest`` a finished shard records."""
    with open_shard(path) as handle:
        return str(handle.attrs["content_digest"])


@contextlib.contextmanager
def shard_writer(
    path: str | os.PathLike,
    stage: str,
    settings: Mapping[str, Any],
    inputs: Mapping[str, str | os.PathLike] | None = None,
) -> Iterator[h5py.File]:
    """Open ``path``'s temporary twin for writing; on clean exit mark complete and rename."""
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w", libver="latest") as handle:
            try:
                handle.attrs["stage"] = stage
                handle.attrs["settings"] = json.dumps(dict(settings), sort_keys=True, default=str)
                handle.attrs["code_version"] = code_version()
                handle.attrs["inputs"] = json.dumps(input_summary(inputs or {}), sort_keys=True)
                handle.attrs["complete"] = False
                yield handle
                handle.flush()
                handle.attrs["content_digest"] = content_digest(handle)
                handle.attrs["complete"] = True
                handle.flush()
            except OSError as error:
                # HDF5 follows a failed write with a long chain of its own errors (and may
                # crash on close): say the one thing that matters first, in the job's log.
                message = (
                    f"{path}: writing the shard failed (disk full or file-size limit?): {error}"
                )
                log.error(message)
                raise OSError(error.errno, message) from error


def shard_settings(handle: h5py.File) -> dict[str, Any]:
    return json.loads(handle.attrs["settings"])


def open_shard(
    path: str | os.PathLike,
    stage: str | None = None,
    expect: Mapping[str, Any] | None = None,
) -> h5py.File:
    """Open a finished shard read-only; check completeness, stage and expected settings.

    ``expect`` maps setting names to the values the reader needs; any that differ from the
    recorded ones raise :class:`ShardMismatchError` listing shard value and expected value.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: shard does not exist")
    try:
        handle = h5py.File(path, "r")
    except OSError as error:
        raise ValueError(
            f"{path}: not a readable HDF5 file ({error}); delete it and rerun"
        ) from error
    if not bool(handle.attrs.get("complete", False)):
        handle.close()
        raise ValueError(
            f"{path}: shard is incomplete (written by a job that did not finish); delete it and rerun"
        )
    if stage is not None and handle.attrs.get("stage") != stage:
        found = handle.attrs.get("stage")
        handle.close()
        raise ShardMismatchError(f"{path}: holds stage {found!r}, expected {stage!r}")
    if expect:
        recorded = shard_settings(handle)
        diffs = [
            f"{key}: shard has {recorded.get(key)!r}, config wants {value!r}"
            for key, value in expect.items()
            if _normalise(recorded.get(key)) != _normalise(value)
        ]
        if diffs:
            handle.close()
            raise ShardMismatchError(f"{path}: produced under other settings: " + "; ".join(diffs))
    return handle


def _normalise(value: Any) -> Any:
    return json.loads(json.dumps(value, sort_keys=True, default=str))
