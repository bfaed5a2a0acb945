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


# --- decoding on the device (torchvision.io.decode_jpeg; nvJPEG on CUDA) -------------------

_SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}  # start-of-frame, not DHT/JPG/DAC


def jpeg_size(data: bytes | np.ndarray) -> tuple[int, int]:
    """``(height, width)`` of a JPEG from its start-of-frame header, without decoding.

    Walks the marker segments after SOI up to the first SOF. Raises ``ValueError`` when the
    bytes hold no frame header (not a JPEG, or cut before it).
    """
    buf = data if isinstance(data, bytes) else np.asarray(data, dtype=np.uint8).tobytes()
    if buf[:2] != JPEG_START:
        raise ValueError("not a JPEG (no start-of-image marker)")
    pos = 2
    while pos + 4 <= len(buf):
        if buf[pos] != 0xFF:
            raise ValueError(f"not a JPEG marker at byte {pos}")
        marker = buf[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in (0x01, *range(0xD0, 0xD8)):  # markers without a length
            pos += 2
            continue
        length = int.from_bytes(buf[pos + 2 : pos + 4], "big")
        if marker in _SOF_MARKERS:
            if pos + 9 > len(buf):
                break
            height = int.from_bytes(buf[pos + 5 : pos + 7], "big")
            width = int.from_bytes(buf[pos + 7 : pos + 9], "big")
            return height, width
        pos += 2 + length
    raise ValueError("no JPEG frame header (truncated before the image)")


JPEG_DECODE = ("auto", "host", "device")


def jpeg_on_device(choice: str, device) -> bool:
    """Config ``jpeg_decode``: decode on ``device`` (``device``, or ``auto`` on CUDA) rather
    than on the host."""
    if choice not in JPEG_DECODE:
        raise ValueError(f"jpeg_decode must be one of {', '.join(JPEG_DECODE)}, got {choice!r}")
    return choice == "device" or (choice == "auto" and getattr(device, "type", str(device)) == "cuda")


def read_frame_bytes(path: str | os.PathLike) -> np.ndarray:
    """The undecoded bytes of one JPEG frame as uint8, after the cheap checks of
    :func:`check_jpeg_bytes` (for decoding a batch on the device)."""
    problem = "frame file is missing" if not os.path.exists(path) else check_jpeg_bytes(path)
    if problem is not None:
        raise CorruptFrameError(path, problem)
    return np.fromfile(path, dtype=np.uint8)


def decode_jpegs(
    datas: list[np.ndarray],
    device,
    grayscale: bool = False,
    paths: list[str] | None = None,
) -> list:
    """Decode JPEG bytes to uint8 tensors ``(C, H, W)`` (C 3, or 1 with ``grayscale``) on
    ``device`` in one batched ``torchvision.io.decode_jpeg`` call (nvJPEG on CUDA).

    When the batch fails, each image is decoded alone to name the one that does not decode
    (:class:`CorruptFrameError`, with its path from ``paths``).
    """
    import warnings

    import torch
    from torchvision.io import ImageReadMode
    from torchvision.io import decode_jpeg as _decode_jpeg

    def decode_jpeg(*args, **kwargs):
        with warnings.catch_warnings():  # torchvision 0.29 points to torchcodec for the future
            warnings.filterwarnings("ignore", category=DeprecationWarning, module="torchvision")
            return _decode_jpeg(*args, **kwargs)

    mode = ImageReadMode.GRAY if grayscale else ImageReadMode.RGB
    tensors = [torch.from_numpy(np.asarray(d, dtype=np.uint8)) for d in datas]
    if not tensors:
        return []
    try:
        return decode_jpeg(tensors, mode=mode, device=device)
    except RuntimeError:
        for i, tensor in enumerate(tensors):
            try:
                decode_jpeg(tensor, mode=mode, device=device)
            except RuntimeError as error:
                path = paths[i] if paths else f"image {i} of the batch"
                raise CorruptFrameError(path, f"JPEG does not decode ({error})") from None
        raise
