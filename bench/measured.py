"""The stage figures the benchmarks measured: ``bench/measured.csv``, read by ``bench/scale.py``.

One row per (figure, device): the figure's name (``features_clips_per_s``, ...), its value
and unit, the device it was measured on (``cpu``, or the GPU's name), the date, and the
command that measured it. A benchmark run with ``--record`` replaces its rows; nothing else
writes the file, and ``bench/scale.py`` uses a figure only from here or, where nothing was
measured, from the anchors of docs/architecture.md, saying which.
"""

from __future__ import annotations

import csv
import datetime
import os
import sys
from pathlib import Path

MEASURED = Path(__file__).with_name("measured.csv")
COLUMNS = ["figure", "value", "unit", "device", "date", "command"]


def read_measured(path: Path | None = None) -> dict[tuple[str, str], dict[str, str]]:
    """(figure, device) -> its row."""
    path = MEASURED if path is None else path
    if not path.exists():
        return {}
    with open(path, newline="") as handle:
        return {(row["figure"], row["device"]): row for row in csv.DictReader(handle)}


def record(figure: str, value: float, unit: str, device: str, path: Path | None = None) -> None:
    """Replace the row of (figure, device) with this measurement (written atomically)."""
    path = MEASURED if path is None else path
    rows = read_measured(path)
    rows[(figure, device)] = {
        "figure": figure,
        "value": f"{value:.6g}",
        "unit": unit,
        "device": device,
        "date": datetime.date.today().isoformat(),
        "command": " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
    }
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(sorted(rows.values(), key=lambda r: (r["figure"], r["device"])))
    os.replace(tmp, path)


def best_measured(figure: str, gpu: bool) -> dict[str, str] | None:
    """The measured row of ``figure`` on a GPU (``gpu``) or on the CPU, if any."""
    rows = [row for (name, device), row in read_measured().items() if name == figure]
    rows = [row for row in rows if (row["device"] != "cpu") == gpu]
    return max(rows, key=lambda row: row["date"]) if rows else None


def device_name(device) -> str:
    """How measured.csv names a device: ``cpu``, or the GPU's name."""
    import torch

    device = torch.device(device)
    return torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
