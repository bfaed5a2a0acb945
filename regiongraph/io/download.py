"""Weights from a local path or a URL: resumable downloads into a cache folder.

:func:`fetch_weights` is the one entry point (the boxes and the backbone stages use it): a
local path is returned as it is (an error if it does not exist); a URL is downloaded once into
``cache_dir`` under its file name and the cached copy returned on later calls.

A download goes to ``<name>.part`` first and resumes from there with an HTTP ``Range``
request after an interruption (a server that ignores ``Range`` sends the whole file again,
which restarts the ``.part``); a progress bar shows the bytes. When complete, its SHA-256 is
checked against the hash prefix that torch.hub-style names carry (``...-258fb6c6.pth``), written
beside it as ``<name>.sha256``, and the file renamed into place. An exclusive lock on
``<name>.lock`` keeps parallel jobs (one per shard) from downloading the same file twice.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import re
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from tqdm import tqdm

log = logging.getLogger(__name__)

URL_SCHEMES = ("http://", "https://", "ftp://", "file://")
HASH_IN_NAME = re.compile(r"-([a-f0-9]{8,})\.[A-Za-z0-9]+$")  # torch.hub convention
CHUNK = 1 << 20


def is_url(path_or_url: str | os.PathLike) -> bool:
    return str(path_or_url).startswith(URL_SCHEMES)


def sha256sum(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def fetch_weights(path_or_url: str | os.PathLike, cache_dir: str | os.PathLike) -> Path:
    """A local path to the weights: ``path_or_url`` itself, or its download in ``cache_dir``.

    Raises ``FileNotFoundError`` for a local path that does not exist, ``ValueError`` when a
    downloaded file's SHA-256 disagrees with the hash prefix in its name, and ``OSError``
    (naming the URL) when the download fails; a partial download is kept for resuming.
    """
    if not is_url(path_or_url):
        path = Path(path_or_url).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"{path}: weights file does not exist")
        return path
    url = str(path_or_url)
    name = Path(urllib.parse.urlparse(url).path).name
    if not name:
        raise ValueError(f"{url}: cannot tell a file name from the URL")
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    final = cache_dir / name
    with open(cache_dir / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if not final.exists():
                _download(url, final)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    return final


def _download(url: str, final: Path) -> None:
    part = final.with_name(final.name + ".part")
    have = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"User-Agent": "regiongraph"})
    if have:
        request.add_header("Range", f"bytes={have}-")
    try:
        response = urllib.request.urlopen(request, timeout=60)
    except urllib.error.HTTPError as error:
        if error.code == 416 and have:  # the .part already holds the whole file
            response = None
        else:
            raise OSError(f"{url}: download failed (HTTP {error.code} {error.reason})") from error
    except urllib.error.URLError as error:
        raise OSError(f"{url}: download failed ({error.reason})") from error
    if response is not None:
        with response:
            resumed = have and getattr(response, "status", 200) == 206
            if have and not resumed:
                log.info("%s: server ignored the range request; downloading from the start", url)
                have = 0
            length = response.headers.get("Content-Length")
            total = have + int(length) if length is not None else None
            log.info(
                "downloading %s to %s%s", url, final, f" (resuming at {have} bytes)" if have else ""
            )
            with (
                open(part, "ab" if have else "wb") as out,
                tqdm(total=total, initial=have, unit="B", unit_scale=True, desc=final.name) as bar,
            ):
                try:
                    for block in iter(lambda: response.read(CHUNK), b""):
                        out.write(block)
                        bar.update(len(block))
                except OSError as error:
                    raise OSError(
                        f"{url}: download interrupted after {out.tell()} bytes ({error}); "
                        f"rerun to resume from {part}"
                    ) from error
            if total is not None and part.stat().st_size != total:
                raise OSError(
                    f"{url}: download incomplete ({part.stat().st_size} of {total} bytes); "
                    f"rerun to resume from {part}"
                )
    digest = sha256sum(part)
    expected = HASH_IN_NAME.search(final.name)
    if expected and not digest.startswith(expected.group(1)):
        part.unlink()
        raise ValueError(
            f"{url}: SHA-256 {digest} does not start with {expected.group(1)} (from the file name); "
            "the corrupt download was removed, rerun to fetch it again"
        )
    final.with_name(final.name + ".sha256").write_text(f"{digest}  {final.name}\n")
    os.replace(part, final)
    log.info("%s: sha256 %s", final, digest)
