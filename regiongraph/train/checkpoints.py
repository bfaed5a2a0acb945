"""Checkpoints of a training run and the one rule for resuming it (GCN heads and fine-tuning).

A run writes ``{directory}/epoch-{n}.pt`` after every epoch, to a temporary name and then
renamed into place, holding everything to go on from there: model, optimiser, scheduler, the
python/numpy/torch RNG states, the epoch, and the run's **record**: what it was started from
(its inputs' content digests, its video ids, every setting that changes the result) and the
record's SHA-256, its **fingerprint**.

A job may resume only the interrupted run of the same inputs and settings, that is a
checkpoint with its own fingerprint. Any other checkpoint belongs to another run (the features
were recomputed, a setting changed): the job moves the whole folder aside to
``{directory}.stale/`` (replacing an older one there), says in its log what changed, and
trains afresh. Nothing stale is ever resumed, and nothing needs deleting by hand.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import re
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from regiongraph.io import atomic_path

log = logging.getLogger(__name__)

CHECKPOINT_NAME = re.compile(r"^epoch-(\d+)\.pt$")
STALE_SUFFIX = ".stale"


def canonical(record: Any) -> Any:
    """``record`` as plain JSON data (tuples become lists, keys sorted when dumped)."""
    return json.loads(json.dumps(record, sort_keys=True, default=str))


def fingerprint(record: Mapping[str, Any]) -> str:
    """SHA-256 of a run's record: equal exactly when the records are."""
    text = json.dumps(canonical(record), sort_keys=True, separators=(",", ":"))
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def ids_digest(video_ids) -> str:
    """A short digest of an ordered list of video ids (for run records)."""
    digest = hashlib.sha256("\n".join(map(str, video_ids)).encode())
    return digest.hexdigest()[:16]


def record_changes(old: Any, new: Any, prefix: str = "", most: int = 6) -> list[str]:
    """What differs between two run records, as ``key: old -> new`` lines (at most ``most``)."""
    changes: list[str] = []

    def walk(a: Any, b: Any, where: str) -> None:
        if isinstance(a, dict) and isinstance(b, dict):
            for key in sorted(set(a) | set(b)):
                walk(a.get(key), b.get(key), f"{where}{key}.")
            return
        if a != b:
            shown = (
                "changed"
                if isinstance(a, list | dict) or isinstance(b, list | dict)
                else f"{a!r} -> {b!r}"
            )
            changes.append(f"{where.rstrip('.')}: {shown}")

    walk(canonical(old), canonical(new), prefix)
    return changes[:most] + ([f"... {len(changes) - most} more"] if len(changes) > most else [])


def rng_states() -> dict[str, Any]:
    """The python, numpy, torch (and CUDA) RNG states, in a ``weights_only``-loadable form."""
    kind, keys, position, has_gauss, gauss = np.random.get_state()
    states = {
        "python": random.getstate(),
        "numpy": (kind, torch.from_numpy(keys.astype(np.int64)), position, has_gauss, gauss),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: Mapping[str, Any]) -> None:
    random.setstate(_as_tuples(states["python"]))
    kind, keys, position, has_gauss, gauss = states["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), position, has_gauss, gauss))
    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def _as_tuples(value: Any) -> Any:
    if isinstance(value, list | tuple):
        return tuple(_as_tuples(v) for v in value)
    return value


def save_checkpoint(path: str | Path, state: Mapping[str, Any]) -> None:
    """Write ``state`` with ``torch.save`` to a temporary name, then rename it into place."""
    with atomic_path(path) as tmp:
        torch.save(dict(state), tmp)


def epoch_checkpoint(directory: str | Path, epoch: int) -> Path:
    return Path(directory) / f"epoch-{epoch}.pt"


def checkpoint_epochs(directory: str | Path) -> list[int]:
    """Epochs with a finished checkpoint ``epoch-{n}.pt`` in ``directory``, ascending."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    found = (CHECKPOINT_NAME.match(p.name) for p in directory.iterdir())
    return sorted(int(m.group(1)) for m in found if m)


def keep_latest(directory: str | Path, keep: int | None) -> None:
    """Remove all but the latest ``keep`` epoch checkpoints (``None`` keeps all)."""
    if not keep:
        return
    epochs = checkpoint_epochs(directory)
    for epoch in epochs[:-keep]:
        epoch_checkpoint(directory, epoch).unlink()


def set_aside(directory: str | Path, why: str) -> Path | None:
    """Move ``directory`` to ``{directory}.stale`` (replacing an older one) and log why."""
    directory = Path(directory)
    if not directory.exists():
        return None
    stale = directory.with_name(directory.name + STALE_SUFFIX)
    if stale.exists():
        shutil.rmtree(stale)
    directory.rename(stale)
    log.warning("%s: %s; moved its checkpoints to %s and training afresh", directory, why, stale)
    return stale


def resume_run(
    directory: str | Path,
    record: Mapping[str, Any],
    resume_from: int | None = None,
    what: str = "run",
) -> dict[str, Any] | None:
    """The checkpoint to go on from, or ``None`` to start afresh.

    ``resume_from`` None takes the latest checkpoint, ``N`` epoch N's, ``0`` none (the old
    checkpoints are set aside). A checkpoint with another fingerprint is set aside, with the
    changes logged, and ``None`` returned; an explicitly requested one (``resume_from = N``)
    of another run is an error, since the user asked for exactly that checkpoint.
    """
    directory = Path(directory)
    available = checkpoint_epochs(directory)
    if resume_from == 0:
        if available:
            set_aside(directory, f"{what}: resume_from is 0")
        return None
    if not available:
        return None
    epoch = available[-1] if resume_from is None else resume_from
    if epoch not in available:
        raise FileNotFoundError(
            f"{directory}: no checkpoint for epoch {epoch} (resume_from); found epochs {available}"
        )
    path = epoch_checkpoint(directory, epoch)
    state = torch.load(path, map_location="cpu", weights_only=True)
    wanted = fingerprint(record)
    if state.get("fingerprint") == wanted:
        log.info("resuming %s from %s (epoch %d)", what, path, epoch)
        return state
    changes = record_changes(state.get("record", {}), record) or ["no record in the checkpoint"]
    if resume_from is not None:
        raise ValueError(
            f"{path}: resume_from asks for epoch {epoch}, but that checkpoint belongs to another "
            f"run ({'; '.join(changes)}); remove resume_from to train afresh"
        )
    set_aside(directory, f"{what}: its checkpoints belong to another run ({'; '.join(changes)})")
    return None


def run_state(record: Mapping[str, Any]) -> dict[str, Any]:
    """The part of every checkpoint (and final model) that says which run it belongs to."""
    return {"record": canonical(record), "fingerprint": fingerprint(record)}
