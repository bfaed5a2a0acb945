"""Videos left out, with the stage and the reason: per stage, then gathered in one table.

Each stage reports the videos it leaves out in its own output: the SSv2 decode stage in
``raw/decode-dropped.csv`` (the split stage names its reason for every listed video it
concerns, stage ``decode``), the split and index stages in
``split/dropped.csv`` and ``index/index-dropped.csv``, the per-shard stages (flow, boxes,
features) in a ``dropped`` attribute of the shard they write
(:func:`regiongraph.io.shards.record_shard_drops`). The ``dropped`` rule gathers all of them
into ``index/dropped.csv`` (:func:`merge_dropped`); no job ever appends to another stage's
output. :func:`summarise_dropped` is what the console shows at the end of a run.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from pathlib import Path

import pandas as pd

DROPPED_COLUMNS = ["video_id", "split", "reason", "stage"]
STAGE_ORDER = ("decode", "split", "index", "flow", "boxes", "features")


def read_dropped(path: str | os.PathLike) -> pd.DataFrame:
    path = Path(path)
    if not path.exists():
        return pd.DataFrame(columns=DROPPED_COLUMNS)
    return pd.read_csv(path, dtype=str, keep_default_na=False)


def merge_dropped(tables: Iterable[pd.DataFrame]) -> pd.DataFrame:
    """One table of every drop, in stage order, each (video, split, stage, reason) once."""
    frames = [table[DROPPED_COLUMNS].astype(str) for table in tables if len(table)]
    if not frames:
        return pd.DataFrame(columns=DROPPED_COLUMNS)
    merged = pd.concat(frames, ignore_index=True).drop_duplicates()
    rank = {stage: i for i, stage in enumerate(STAGE_ORDER)}
    order = merged["stage"].map(lambda stage: rank.get(stage, len(rank)))
    return merged.assign(_order=order).sort_values(["_order"], kind="stable").drop(
        columns="_order"
    ).reset_index(drop=True)


def reason_kind(reason: str) -> str:
    """A reason without the file, line and number details: ``unknown label 'X'``,
    ``too short``, ``missing frame``, ``zero-byte JPEG`` ..."""
    kind = re.split(r" \(|: |\s+\d", reason, maxsplit=1)[0]
    return kind.strip() or reason


def summarise_dropped(table: pd.DataFrame, most: int = 8) -> list[str]:
    """Console lines: how many videos each stage dropped, and why, most frequent first."""
    if table.empty:
        return []
    lines = [f"{len(table)} videos were left out (details: the table's reason column):"]
    counts = (
        table.assign(kind=table["reason"].map(reason_kind))
        .groupby(["stage", "split", "kind"], sort=False)
        .size()
        .sort_values(ascending=False, kind="stable")
    )
    for (stage, split, kind), count in counts.head(most).items():
        lines.append(f"  {count:6d}  {stage:<8} {split:<10} {kind}")
    if len(counts) > most:
        lines.append(f"  ... and {len(counts) - most} more kinds of reason")
    return lines
