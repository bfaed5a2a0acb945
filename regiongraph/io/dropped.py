"""``index/dropped.csv``: every video left out, by any stage, with its reason.

The index stage writes the file; later stages (flow, boxes, features) append the videos they
could not process (a JPEG that fails to decode, say) under an exclusive lock, so that parallel
shard jobs never interleave rows. Appending is idempotent: a row already present (same
video, split, stage and reason) is not written twice when a job is rerun.
"""

from __future__ import annotations

import csv
import fcntl
import os
from collections.abc import Iterable, Mapping
from pathlib import Path

import pandas as pd

DROPPED_COLUMNS = ["video_id", "split", "reason", "stage"]


def read_dropped(path: str | os.PathLike) -> pd.DataFrame:
    path = Path(path)
    if not path.exists():
        return pd.DataFrame(columns=DROPPED_COLUMNS)
    return pd.read_csv(path, dtype=str, keep_default_na=False)


def record_dropped(path: str | os.PathLike, rows: Iterable[Mapping[str, str]]) -> int:
    """Append ``rows`` (dicts with ``DROPPED_COLUMNS``) to ``path``; return how many were new."""
    rows = [{key: str(row.get(key, "")) for key in DROPPED_COLUMNS} for row in rows]
    if not rows:
        return 0
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+", newline="") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            handle.seek(0)
            existing = {tuple(r[k] for k in DROPPED_COLUMNS) for r in csv.DictReader(handle)}
            new = [r for r in rows if tuple(r.values()) not in existing]
            handle.seek(0, os.SEEK_END)
            writer = csv.DictWriter(handle, fieldnames=DROPPED_COLUMNS)
            if handle.tell() == 0:
                writer.writeheader()
            writer.writerows(new)
            handle.flush()
            os.fsync(handle.fileno())
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
    return len(new)
