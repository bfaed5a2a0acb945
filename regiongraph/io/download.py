"""Weights from a local path or a URL: resumable, checked downloads into a cache folder.

:func:`fetch_weights` is the one entry point (the boxes and the backbone stages use it): a
local path is returned as it is (an error if it does not exist); a URL is downloaded once into
``cache_dir`` under its file name and the cached copy returned on later calls.

A download goes to ``<name>.part`` first. The server's validator (``ETag``, else
``Last-Modified``) is kept beside it in ``<name>.part.json``, and an interrupted download
resumes with ``Range`` and ``If-Range``: a server whose file changed meanwhile sends the whole
new file instead of the rest of the old one (a part without a validator is downloaded afresh).
When complete, its SHA-256 is checked against the pinned value (config ``sha256``) and the hash
prefix that torch.hub-style names carry (``...-258fb6c6.pth``), recorded beside it as
``<name>.sha256``, and the file renamed into place. Every later use checks the cached file
against that record (and the pin), so a file changed or damaged on disk is never used. An
exclusive lock on ``<name>.lock`` keeps parallel jobs (one per shard) from downloading the
same file twice.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import re
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from tqdm import tqdm

from regiongraph.sources import is_url

log = logging.getLogger(__name__)

HASH_IN_NAME = re.compile(r"-([a-f0-9]{8,})\.[A-Za-z0-9]+$")  # torch.hub convention
CHUNK = 1 << 20


def sha256sum(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def check_sha256(path: Path, expected: str | None, what: str) -> str:
    """The file's SHA-256; an error naming ``what`` when it is not ``expected`` (if given)."""
    digest = sha256sum(path)
    if expected is not None and digest != expected.lower():
        raise ValueError(
            f"{path}: SHA-256 is {digest}, but {what} is {expected.lower()}; the file is not the "
            "one expected (damaged, replaced, or the pin is wrong)"
        )
    return digest


def fetch_weights(
    path_or_url: str | os.PathLike, cache_dir: str | os.PathLike, sha256: str | None = None
) -> Path:
    """A local path to the weights: ``path_or_url`` itself, or its download in ``cache_dir``.

    ``sha256`` pins the file's SHA-256 (hex). Raises ``FileNotFoundError`` for a local path
    that does not exist, ``ValueError`` when a file's SHA-256 disagrees with the pin, the hash
    prefix in its name or the digest recorded at its download, and ``OSError`` (naming the
    URL) when the download fails; a partial download is kept for resuming.
    """
    if not is_url(path_or_url):
        path = Path(path_or_url).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"{path}: weights file does not exist")
        if sha256 is not None:
            check_sha256(path, sha256, "the pinned sha256")
        return path
    url = str(path_or_url)
    name = Path(urllib.parse.urlparse(url).path).name
    if not name:
        raise ValueError(f"{url}: cannot tell a file name from the URL")
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    final = cache_dir / name
    record = final.with_name(final.name + ".sha256")
    with open(cache_dir / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if not final.exists():
                _download(url, final, sha256)
            elif record.exists():
                check_sha256(final, record.read_text().split()[0], f"the SHA-256 recorded in {record}")
                if sha256 is not None:
                    check_sha256(final, sha256, "the pinned sha256")
            else:  # cached before digests were recorded: record it now
                digest = check_sha256(final, sha256, "the pinned sha256")
                record.write_text(f"{digest}  {final.name}\n")
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    return final


def _validator(response) -> str | None:
    """What ``If-Range`` can send back: the ``ETag`` (strong ones only), else ``Last-Modified``."""
    etag = response.headers.get("ETag")
    if etag and not etag.startswith("W/"):
        return etag
    return response.headers.get("Last-Modified")


def _request(url: str, have: int, validator: str | None):
    request = urllib.request.Request(url, headers={"User-Agent": "regiongraph"})
    if have and validator:
        request.add_header("Range", f"bytes={have}-")
        request.add_header("If-Range", validator)
    try:
        return urllib.request.urlopen(request, timeout=60)
    except urllib.error.HTTPError as error:
        if error.code == 416 and have and validator:  # the .part already holds the whole file
            return None
        raise OSError(f"{url}: download failed (HTTP {error.code} {error.reason})") from error
    except urllib.error.URLError as error:
        raise OSError(f"{url}: download failed ({error.reason})") from error


def _download(url: str, final: Path, sha256: str | None = None) -> None:
    part = final.with_name(final.name + ".part")
    meta = final.with_name(final.name + ".part.json")
    have = part.stat().st_size if part.exists() else 0
    saved = json.loads(meta.read_text()) if have and meta.exists() else {}
    validator = saved.get("validator") if saved.get("url") == url else None
    if have and not validator:
        log.info("%s: no record of what the partial download %s was; starting afresh", url, part)
        have = 0
    response = _request(url, have, validator)
    if response is not None:
        with response:
            resumed = have and getattr(response, "status", 200) == 206
            if have and not resumed:
                log.info("%s: the file changed on the server, or it ignores ranges; downloading from the start", url)
                have = 0
            meta.write_text(json.dumps({"url": url, "validator": _validator(response)}))
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
    problem = None
    if sha256 is not None and digest != sha256.lower():
        problem = f"SHA-256 {digest} is not the pinned {sha256.lower()}"
    elif expected and not digest.startswith(expected.group(1)):
        problem = f"SHA-256 {digest} does not start with {expected.group(1)} (from the file name)"
    if problem:
        part.unlink()
        meta.unlink(missing_ok=True)
        raise ValueError(
            f"{url}: {problem}; the corrupt download was removed, rerun to fetch it again"
        )
    final.with_name(final.name + ".sha256").write_text(f"{digest}  {final.name}\n")
    os.replace(part, final)
    meta.unlink(missing_ok=True)
    log.info("%s: sha256 %s", final, digest)
