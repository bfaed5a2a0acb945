"""What every workflow job does: its log, its device, and reading ahead in order.

A rule's script starts with :func:`start_job`: everything the job prints (logging, warnings,
progress bars, C libraries writing to fd 2) goes to the rule's ``log:`` file, a GPU job claims
its own device (:func:`regiongraph.gpus.claim_gpu_slot`, before anything initialises CUDA), and
torch uses the job's ``threads``. :func:`prefetch` is the one ordered, bounded read-ahead the
stages use to decode frames while the previous video computes.
"""

from __future__ import annotations

import logging
import os
import sys
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Executor

from regiongraph.gpus import claim_gpu_slot


def log_to_file(path: str | os.PathLike | None, level: int = logging.INFO) -> logging.Logger:
    """Send logging, warnings, tqdm bars and stray stderr output of this process to ``path``.

    The file descriptor 2 is redirected as well, so messages from C libraries (OpenCV, HDF5)
    and from worker processes forked later land in the same log.
    """
    if path:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        handle = open(path, "a", buffering=1)
        os.dup2(handle.fileno(), 2)
        sys.stderr = handle
    logging.basicConfig(
        level=level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
        force=True,
    )
    logging.captureWarnings(True)
    return logging.getLogger("regiongraph")


def start_job(
    log_path: str | os.PathLike | None, device: str = "cpu", threads: int | None = None
) -> logging.Logger:
    """The first line of a rule's script: log to ``log_path``; with ``device`` ``auto`` or
    ``cuda``, claim one GPU for this job; with ``threads``, size torch's CPU thread pool."""
    log = log_to_file(log_path)
    claim_gpu_slot(device)  # one GPU per job when several jobs share a machine
    if threads is not None:
        import torch

        torch.set_num_threads(max(1, int(threads)))
    return log


def prefetch(pool: Executor, function: Callable, items: Iterable, ahead: int) -> Iterator:
    """``map(function, items)`` on ``pool``, in order, with at most ``ahead`` results
    computed and not yet taken (``Executor.map`` would submit a whole shard at once and hold
    all its decoded frames in memory when the consumer is slower)."""
    futures: deque = deque()
    for item in items:
        futures.append(pool.submit(function, item))
        if len(futures) > ahead:
            yield futures.popleft().result()
    while futures:
        yield futures.popleft().result()
