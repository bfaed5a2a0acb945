"""One GPU per job on a machine with several: a slot allocator over lock files.

Snakemake counts the ``gpu`` resource of local jobs (``--resources gpu=4``) but does not say
which device a job should use (snakemake/snakemake#281), so four jobs would all start on GPU 0.
A GPU job's script therefore claims a device first::

    from regiongraph.gpus import claim_gpu_slot
    claim_gpu_slot(snakemake.params.device)   # before anything initialises CUDA

It takes the first free device among the visible ones (``CUDA_VISIBLE_DEVICES``, or those
``nvidia-smi`` lists), holding an exclusive ``flock`` on ``<lock_dir>/gpu-<id>.lock``, and sets
``CUDA_VISIBLE_DEVICES`` to that one device for this process, so ``cuda:0`` is the claimed GPU.
When every device is taken it waits for one to be freed. The lock belongs to the open file, so
the kernel releases it when the process exits or is killed: a crashed job never leaves a
stale claim, and a leftover lock file is harmless. Under SLURM each job already sees only the
GPUs it was given; the allocator then simply takes one of those.

The lock folder is private: ``$XDG_RUNTIME_DIR/regiongraph-gpu-slots`` (the user's own runtime
folder, shared by all of that user's runs on the machine), else
``.snakemake/regiongraph-gpu-slots`` under the run's working directory, or
``$REGIONGRAPH_GPU_LOCK_DIR``. It is created with mode 0700, and refused when it is a symbolic
link, belongs to another user or is open to others; lock files are opened without following
links. A predictable folder in a shared ``/tmp`` would let another user pre-create it, or plant
links in it, and so block or redirect every GPU job.
"""

from __future__ import annotations

import fcntl
import logging
import os
import re
import shutil
import stat
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO

log = logging.getLogger(__name__)

LOCK_DIR_ENV = "REGIONGRAPH_GPU_LOCK_DIR"
_held: list[IO] = []  # claims held for the life of the process (claim_gpu_slot)


def default_lock_dir() -> Path:
    """$REGIONGRAPH_GPU_LOCK_DIR, else $XDG_RUNTIME_DIR/regiongraph-gpu-slots, else
    .snakemake/regiongraph-gpu-slots in the working directory."""
    if os.environ.get(LOCK_DIR_ENV):
        return Path(os.environ[LOCK_DIR_ENV])
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime and os.path.isdir(runtime):
        return Path(runtime) / "regiongraph-gpu-slots"
    return Path.cwd() / ".snakemake" / "regiongraph-gpu-slots"


def private_dir(path: Path) -> Path:
    """``path`` as a folder only this user can enter: made with mode 0700 if missing; an error
    naming it when it is a link, another user's, or open to others."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    info = os.lstat(path)
    if stat.S_ISLNK(info.st_mode) or not stat.S_ISDIR(info.st_mode):
        raise RuntimeError(f"{path}: the GPU lock folder is a link or not a folder; remove it")
    if info.st_uid != os.getuid():
        raise RuntimeError(f"{path}: the GPU lock folder belongs to uid {info.st_uid}, not to you")
    if info.st_mode & 0o077:
        raise RuntimeError(
            f"{path}: the GPU lock folder is open to others (mode {stat.S_IMODE(info.st_mode):o}); "
            "chmod 700 it"
        )
    return path


def visible_devices() -> list[str]:
    """The GPU ids this process may use: CUDA_VISIBLE_DEVICES when set, else nvidia-smi's list.

    Never asks CUDA itself, since initialising CUDA would fix the device set before the slot
    is chosen. An empty CUDA_VISIBLE_DEVICES means no GPU, as it does for CUDA.
    """
    value = os.environ.get("CUDA_VISIBLE_DEVICES")
    if value is not None:
        return [d.strip() for d in value.split(",") if d.strip() and d.strip() != "-1"]
    if shutil.which("nvidia-smi") is None:
        return []
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=index", "--format=csv,noheader"],
            capture_output=True, text=True, timeout=30, check=True,
        ).stdout
    except (subprocess.SubprocessError, OSError):
        return []
    return [line.strip() for line in out.splitlines() if line.strip()]


def _lock_path(lock_dir: Path, device: str) -> Path:
    return lock_dir / f"gpu-{re.sub(r'[^A-Za-z0-9_.-]', '_', device)}.lock"


def _try_lock(path: Path) -> IO | None:
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    except OSError as error:
        raise RuntimeError(f"{path}: cannot open the GPU lock file ({error.strerror})") from error
    handle = os.fdopen(fd, "r+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        return None
    handle.seek(0)
    handle.truncate()
    handle.write(f"{os.getpid()}\n")  # for a person looking: who holds it (not used for locking)
    handle.flush()
    return handle


def _check_cuda_not_initialised() -> None:
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_initialized():
        raise RuntimeError(
            "regiongraph.gpus: CUDA is already initialised in this process, so setting "
            "CUDA_VISIBLE_DEVICES has no effect; claim the GPU slot before any CUDA call"
        )


def acquire_gpu(
    devices: Sequence[str] | None = None,
    lock_dir: Path | None = None,
    poll_seconds: float = 0.5,
    timeout: float | None = None,
) -> tuple[str, IO] | None:
    """Lock a free device and return (device id, open lock file); None when there is no GPU.

    Waits while all devices are taken; raises TimeoutError after ``timeout`` seconds.
    """
    devices = list(visible_devices() if devices is None else devices)
    if not devices:
        return None
    lock_dir = private_dir(Path(lock_dir or default_lock_dir()))
    start = time.monotonic()
    waiting_logged = False
    while True:
        for device in devices:
            handle = _try_lock(_lock_path(lock_dir, device))
            if handle is not None:
                return device, handle
        if timeout is not None and time.monotonic() - start > timeout:
            raise TimeoutError(
                f"no free GPU among {devices} after {timeout:.0f} s (locks in {lock_dir})"
            )
        if not waiting_logged:
            log.info("all GPUs %s are taken (locks in %s): waiting for one", devices, lock_dir)
            waiting_logged = True
        time.sleep(poll_seconds)


@contextmanager
def gpu_slot(
    device: str = "auto",
    devices: Sequence[str] | None = None,
    lock_dir: Path | None = None,
    poll_seconds: float = 0.5,
    timeout: float | None = None,
) -> Iterator[str | None]:
    """Hold one GPU for the ``with`` block; yields its id, or None on the CPU.

    ``device`` is the config's ``device`` (auto | cpu | cuda): cpu claims nothing; cuda
    without any visible GPU is an error; auto falls back to the CPU.
    """
    if device == "cpu":
        yield None
        return
    if os.environ.get("SLURM_JOB_ID"):
        # SLURM gave this job its own GPUs (and with cgroups renumbers them from 0, so two jobs
        # on one node may both see "0"): locking here would make them wait on each other.
        assigned = os.environ.get("CUDA_VISIBLE_DEVICES")
        log.info("GPUs assigned by SLURM (CUDA_VISIBLE_DEVICES=%s): no slot lock", assigned)
        yield assigned
        return
    _check_cuda_not_initialised()
    claim = acquire_gpu(devices, lock_dir, poll_seconds, timeout)
    if claim is None:
        if device == "cuda":
            raise RuntimeError("device is cuda but no GPU is visible (CUDA_VISIBLE_DEVICES, nvidia-smi)")
        yield None
        return
    chosen, handle = claim
    previous = os.environ.get("CUDA_VISIBLE_DEVICES")
    os.environ["CUDA_VISIBLE_DEVICES"] = chosen
    log.info("using GPU %s (slot lock %s)", chosen, handle.name)
    try:
        yield chosen
    finally:
        if previous is None:
            os.environ.pop("CUDA_VISIBLE_DEVICES", None)
        else:
            os.environ["CUDA_VISIBLE_DEVICES"] = previous
        handle.close()  # releases the flock


def resolve_device(device: str = "auto"):
    """The torch device of the config key ``device``: ``auto`` is CUDA when torch sees a GPU,
    else the CPU; ``cuda`` without one is an error naming the key."""
    import torch

    name = str(device)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    resolved = torch.device(name)
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            "device is 'cuda' in the config, but torch sees no CUDA GPU (CUDA_VISIBLE_DEVICES, "
            "driver); set device: auto or cpu"
        )
    return resolved


def claim_gpu_slot(device: str = "auto", **kwargs) -> str | None:
    """Claim a GPU for the rest of this process (a job script's first line); its id or None."""
    slot = gpu_slot(device, **kwargs)
    chosen = slot.__enter__()
    _held.append(slot)  # the lock lives until the process ends
    return chosen
