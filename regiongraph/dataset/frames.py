"""Reading frames: the one place that decodes a JPEG, and cheap integrity checks."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import cv2
import numpy as np

log = logging.getLogger(__name__)

JPEG_START = b"\xff\xd8"
JPEG_END = b"\xff\xd9"


class CorruptFrameError(ValueError):
    """A frame file is missing, empty, truncated or does not decode."""

    def __init__(self, path: str | os.PathLike, problem: str):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{path}: {problem}")


def frame_path(frame_dir: str | os.PathLike, index: int) -> Path:
    """Path of 0-based frame ``index`` in an SSv1 frame folder (``00001.jpg`` is 0)."""
    return Path(frame_dir) / f"{index + 1:05d}.jpg"


def check_jpeg_bytes(path: str | os.PathLike) -> str | None:
    """Cheap check without decoding: the problem with the file, or None if it looks whole.

    Reads the first two and the last bytes only: a zero-byte file, a file that is not a JPEG
    (no SOI marker) and a truncated one (no EOI marker at the end; trailing padding of zero
    bytes after EOI, which some encoders write, is accepted) are caught at the cost of two
    small reads.
    """
    try:
        size = os.path.getsize(path)
    except OSError as error:
        return f"cannot read ({error.strerror})"
    if size == 0:
        return "zero-byte JPEG"
    with open(path, "rb") as handle:
        head = handle.read(2)
        if head != JPEG_START:
            return "not a JPEG (no start-of-image marker)"
        tail_len = min(size, 64)
        handle.seek(size - tail_len)
        tail = handle.read(tail_len).rstrip(b"\x00")
    if not tail.endswith(JPEG_END):
        return "truncated JPEG (no end-of-image marker)"
    return None


def read_frame(path: str | os.PathLike, grayscale: bool = False) -> np.ndarray:
    """Decode one JPEG to uint8 RGB ``(H, W, 3)`` (or ``(H, W)`` grayscale).

    Raises :class:`CorruptFrameError` naming the file when it is missing or fails to decode.
    """
    flag = cv2.IMREAD_GRAYSCALE if grayscale else cv2.IMREAD_COLOR
    data = np.fromfile(path, dtype=np.uint8) if os.path.exists(path) else None
    if data is None:
        raise CorruptFrameError(path, "frame file is missing")
    if data.size == 0:
        raise CorruptFrameError(path, "zero-byte JPEG")
    image = cv2.imdecode(data, flag)
    if image is None:
        raise CorruptFrameError(path, "JPEG does not decode")
    if not grayscale:
        image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    return image


def read_video_frames(
    frame_dir: str | os.PathLike,
    indices: np.ndarray | list[int],
    grayscale: bool = False,
) -> np.ndarray:
    """Decode the given 0-based frames of one video into ``(len(indices), H, W[, 3])`` uint8.

    Frames are decoded once each even when ``indices`` repeats them (looped clips). A frame
    whose size differs from the first one's is resized to it (SSv1 has a few such videos).
    """
    cache: dict[int, np.ndarray] = {}
    out = []
    for index in indices:
        index = int(index)
        if index not in cache:
            cache[index] = read_frame(frame_path(frame_dir, index), grayscale=grayscale)
        out.append(cache[index])
    first = out[0].shape[:2]
    for i, image in enumerate(out):
        if image.shape[:2] != first:
            log.warning(
                "%s: frame %d is %dx%d, the first frame is %dx%d; resized to the first",
                frame_dir,
                int(indices[i]),
                image.shape[1],
                image.shape[0],
                first[1],
                first[0],
            )
            out[i] = cv2.resize(image, (first[1], first[0]), interpolation=cv2.INTER_LINEAR)
    return np.stack(out)
