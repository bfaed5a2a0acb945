"""Logging for workflow jobs: everything a job prints goes to its rule's ``log:`` file."""

from __future__ import annotations

import logging
import os
import sys


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
