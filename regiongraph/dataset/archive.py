"""Extracting the split Something-Something archives safely, without a concatenated copy.

Each download is one tar.gz cut into parts:

- SSv1: ``20bn-something-something-v1-00``, ``-01``, ... (``cat 20bn-something-something-v1-??
  | tar zx`` in the official instructions);
- SSv2 as Qualcomm serves it: ``20bn-something-something-v2-00.zip`` ... ``-19.zip``, each zip
  holding the one piece ``20bn-something-something-v2-NN`` (``unzip`` each, then ``cat`` the
  pieces into ``tar zx``). Unzipped pieces are accepted as well; where a number has both, the
  zip is read (an unzipped copy may be half written).

Here the pieces are read in number order through one stream into :mod:`tarfile`, a zipped
piece straight out of its zip (no unzipped copy, no 20 GB concatenation is written), and every
member is checked before anything is written:

- absolute paths, ``..`` components, links of any kind (neither SSv1 nor SSv2 holds one),
  devices and FIFOs, and members larger than ``max_member_bytes`` are refused with an error
  naming the part and the member;
- a gap in the part numbering, a first part that is not gzip, and a stream that fails or
  ends early are reported with the name of the part where it happened; a zip that is
  truncated or not a zip, a zip holding anything but its one piece, and a zip CRC error are
  reported naming the zip (all zips are checked before anything is extracted).

Frames are extracted into ``{out}.partial`` and renamed to ``{out}`` when the whole archive
is read, so a failed run never leaves a half-extracted folder that looks complete. Small
members (frames) are written by a few threads; a large one is streamed to disk in pieces, so
memory stays bounded whatever the archive holds. A stamp records the parts (names, sizes and
the SHA-256 of each piece, computed while reading: for a zip, of the piece it holds, so that
zipped and unzipped parts give the same digests); rerunning on the same parts is a no-op.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import posixpath
import re
import shutil
import stat
import tarfile
import threading
import zipfile
import zlib
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

log = logging.getLogger(__name__)

PART_PATTERN = re.compile(r"^(?P<stem>.+)-(?P<number>\d{2,})(?P<zip>\.zip)?$")
STAMP = ".regiongraph-extract.json"
GZIP_MAGIC = b"\x1f\x8b"
STREAM_MEMBER_BYTES = 8 << 20  # members larger than this are written in pieces, not buffered


class ArchiveError(ValueError):
    """The archive's parts are missing, corrupt or hold unsafe members."""


@dataclass(frozen=True)
class Part:
    """One piece of the tar.gz: a file, or the one member ``member`` of the zip at ``path``.
    ``size`` is the piece's size (for a zip, unzipped)."""

    path: Path
    number: int
    size: int
    member: str | None = None

    @property
    def zipped(self) -> bool:
        return self.member is not None

    def open(self):
        """A binary stream of the piece (a zip's member is decompressed as it is read)."""
        if not self.zipped:
            return open(self.path, "rb")
        archive = zipfile.ZipFile(self.path)
        try:
            return _ZipMemberStream(archive, archive.open(self.member))
        except BaseException:
            archive.close()
            raise


class _ZipMemberStream(io.RawIOBase):
    """A zip member's stream that closes its zip with it; zip errors name the zip file."""

    def __init__(self, archive: zipfile.ZipFile, member):
        self.archive, self.member = archive, member

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        try:
            return self.member.readinto(buffer)
        except zipfile.BadZipFile as error:  # "Bad CRC-32 for file ...", a damaged header
            raise ArchiveError(f"{self.archive.filename}: damaged zip ({error})") from error

    def close(self) -> None:
        self.member.close()
        self.archive.close()
        super().close()


def _zip_part(path: Path, number: int, stem: str) -> Part:
    """Check that ``path`` is a readable zip holding only the piece ``{stem}-NN``."""
    expected = f"{stem}-{number:02d}"
    try:
        with zipfile.ZipFile(path) as archive:
            files = [info for info in archive.infolist() if not info.is_dir()]
    except (zipfile.BadZipFile, OSError) as error:
        raise ArchiveError(
            f"{path}: not a readable zip ({error}): truncated or not the downloaded file? "
            "Download it again"
        ) from error
    names = [info.filename for info in files]
    if len(files) != 1 or posixpath.basename(names[0]) != expected:
        raise ArchiveError(
            f"{path}: holds {names or 'nothing'}, expected the one file {expected}: not a part "
            "of this archive (or a different download)"
        )
    return Part(path, number, files[0].file_size, member=names[0])


def find_parts(folder: str | os.PathLike, stem: str = "20bn-something-something-v1") -> list[Part]:
    """The archive's parts in number order; error on none found or a gap in the numbering.

    A part is ``{stem}-NN`` or ``{stem}-NN.zip`` (checked to hold only ``{stem}-NN``); where
    both exist, the zip is used."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ArchiveError(f"{folder}: archive folder does not exist")
    found: dict[int, Path] = {}
    for entry in sorted(folder.iterdir()):
        match = PART_PATTERN.match(entry.name)
        if match and match["stem"] == stem and entry.is_file():
            number = int(match["number"])
            if number not in found or match["zip"]:
                found[number] = entry
    if not found:
        raise ArchiveError(
            f"{folder}: no archive parts named {stem}-00, {stem}-01, ... (or {stem}-00.zip, ...)"
        )
    parts = [
        _zip_part(path, number, stem)
        if path.suffix == ".zip"
        else Part(path, number, path.stat().st_size)
        for number, path in sorted(found.items())
    ]
    expected = 0
    for part in parts:
        if part.number != expected:
            missing = f"{stem}-{expected:02d}"
            raise ArchiveError(
                f"{folder / missing}: archive part is missing (gap in part numbering before {part.path.name})"
            )
        expected += 1
    return parts


class PartsReader(io.RawIOBase):
    """Reads the parts back to back as one stream and knows which part it is in."""

    def __init__(self, parts: list[Part], progress: tqdm | None = None):
        self.parts = parts
        self.current = -1
        self.handle = None
        self.progress = progress
        self.digests: list[str] = []  # SHA-256 of each part read to its end
        self._hash = None
        self._advance()

    def _advance(self) -> bool:
        if self.handle:
            self.handle.close()
            self.digests.append(self._hash.hexdigest())
        self._hash = hashlib.sha256()
        self.current += 1
        if self.current >= len(self.parts):
            self.handle = None
            return False
        self.handle = self.parts[self.current].open()
        return True

    @property
    def part(self) -> Part:
        return self.parts[min(self.current, len(self.parts) - 1)]

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        while self.handle is not None:
            n = self.handle.readinto(buffer)
            if n:
                self._hash.update(memoryview(buffer)[:n])
                if self.progress is not None:
                    self.progress.update(n)
                return n
            self._advance()
        return 0

    def close(self) -> None:
        if self.handle:
            self.handle.close()
        super().close()


class GunzipReader(io.RawIOBase):
    """Decompresses a gzip stream (possibly several members) and supports forward seeks.

    :mod:`tarfile`'s own streaming mode (``r|gz``) keeps its decompressed data in one bytes
    object and re-slices it on every 512-byte header read, which is quadratic in the chunk
    size; reading ``r:`` over this forward-seekable stream costs one copy per byte.
    """

    def __init__(self, raw: PartsReader, chunk_bytes: int = 1 << 20):
        self.raw = raw
        self.chunk_bytes = chunk_bytes
        self.inflate = zlib.decompressobj(wbits=31)
        self.buffer = b""
        self.offset = 0  # read position inside self.buffer
        self.position = 0  # absolute position in the decompressed stream
        self.finished = False
        self.member_open = False  # a gzip member has started and not yet ended

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.position

    def _fill(self) -> bool:
        while not self.finished:
            if self.inflate.unconsumed_tail:
                data = self.inflate.decompress(self.inflate.unconsumed_tail, self.chunk_bytes)
            else:
                compressed = self.raw.read(self.chunk_bytes)
                if not compressed:
                    if self.member_open:
                        raise EOFError("compressed stream ended before the end-of-stream marker")
                    self.finished = True
                    return False
                self.member_open = True
                data = self.inflate.decompress(compressed, self.chunk_bytes)
            if self.inflate.eof:  # concatenated gzip members, as `cat a.gz b.gz` makes
                rest = self.inflate.unused_data
                self.inflate = zlib.decompressobj(wbits=31)
                self.member_open = bool(rest)
                if rest:
                    data += self.inflate.decompress(rest, self.chunk_bytes)
            if data:
                self.buffer, self.offset = data, 0
                return True
        return False

    def readinto(self, out) -> int:
        # Fill ``out`` completely unless the stream ends: tarfile takes a short header read
        # for the end of the archive.
        view, filled = memoryview(out), 0
        while filled < len(view):
            if self.offset >= len(self.buffer) and not self._fill():
                break
            n = min(len(view) - filled, len(self.buffer) - self.offset)
            view[filled : filled + n] = self.buffer[self.offset : self.offset + n]
            self.offset += n
            self.position += n
            filled += n
        return filled

    def read_exact(self, size: int) -> bytes:
        pieces, left = [], size
        while left:
            if self.offset >= len(self.buffer) and not self._fill():
                raise EOFError(f"stream ended {left} bytes before the end of a member")
            take = min(left, len(self.buffer) - self.offset)
            pieces.append(self.buffer[self.offset : self.offset + take])
            self.offset += take
            self.position += take
            left -= take
        return b"".join(pieces)

    def copy_to(self, fd: int, size: int) -> None:
        """Write the next ``size`` bytes to file descriptor ``fd`` straight from the
        decompressed buffer (no copies: memory stays at one buffer whatever ``size`` is)."""
        left = size
        while left:
            if self.offset >= len(self.buffer) and not self._fill():
                raise EOFError(f"stream ended {left} bytes before the end of a member")
            take = min(left, len(self.buffer) - self.offset)
            view = memoryview(self.buffer)[self.offset : self.offset + take]
            while view:
                view = view[os.write(fd, view) :]
            self.offset += take
            self.position += take
            left -= take

    def seek(self, target: int, whence: int = io.SEEK_SET) -> int:
        if whence == io.SEEK_CUR:
            target += self.position
        elif whence != io.SEEK_SET:
            raise io.UnsupportedOperation("only forward seeks from the start or current position")
        if target < self.position:
            raise io.UnsupportedOperation(f"cannot seek backwards from {self.position} to {target}")
        left = target - self.position
        while left:
            if self.offset >= len(self.buffer) and not self._fill():
                break
            take = min(left, len(self.buffer) - self.offset)
            self.offset += take
            self.position += take
            left -= take
        return self.position


class FileWriterPool:
    """Writes small files from a few threads: creating a file is a syscall that waits on the
    filesystem (the GIL is released), so overlapping creates hides most of their latency
    while the main thread decompresses and parses headers. At most ``4 * threads`` writes are
    pending, which bounds memory; the first error is raised on the next submit or close.
    """

    def __init__(self, threads: int):
        self.pool = ThreadPoolExecutor(max_workers=max(1, threads), thread_name_prefix="extract")
        self.slots = threading.BoundedSemaphore(4 * max(1, threads))
        self.pending: set[Future] = set()
        self.closed = False

    @staticmethod
    def _write(path: Path, data: bytes) -> None:
        # created read-only: raw data is read-only to the pipeline
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o444)
        try:
            os.write(fd, data)
        finally:
            os.close(fd)

    def _done(self, future: Future) -> None:
        self.slots.release()

    def _raise_failed(self) -> None:
        finished = {f for f in self.pending if f.done()}
        self.pending -= finished
        for future in finished:
            future.result()

    def submit(self, path: Path, data: bytes) -> None:
        self.slots.acquire()
        future = self.pool.submit(self._write, path, data)
        future.add_done_callback(self._done)
        self.pending.add(future)
        if len(self.pending) > 64:
            self._raise_failed()

    def drain(self) -> None:
        for future in list(self.pending):
            future.result()
        self.pending.clear()

    def close(self, wait: bool = True) -> None:
        if self.closed:
            return
        self.closed = True
        try:
            if wait:
                self.drain()
        finally:
            self.pool.shutdown(wait=True, cancel_futures=not wait)


def check_member(member: tarfile.TarInfo, max_member_bytes: int | None = None) -> None:
    """Raise :class:`ArchiveError` for a member that is not a plain file or folder inside the
    output folder, or a file larger than ``max_member_bytes``."""
    name = member.name
    if name.startswith("/") or posixpath.isabs(name) or re.match(r"^[A-Za-z]:", name):
        raise ArchiveError(f"tar member {name!r} has an absolute path")
    parts = name.replace("\\", "/").split("/")
    if ".." in parts:
        raise ArchiveError(f"tar member {name!r} escapes the output folder ('..' in its path)")
    if member.isdev() or member.isfifo():
        raise ArchiveError(f"tar member {name!r} is a device or FIFO")
    if member.issym() or member.islnk():
        kind = "symlink" if member.issym() else "hard link"
        raise ArchiveError(
            f"tar member {name!r} is a {kind} (to {member.linkname!r}); Something-Something "
            "archives hold only folders and files, so this archive is not one"
        )
    if not (member.isfile() or member.isdir()):
        raise ArchiveError(f"tar member {name!r} has an unsupported type {member.type!r}")
    if max_member_bytes is not None and member.isfile() and member.size > max_member_bytes:
        raise ArchiveError(
            f"tar member {name!r} is {member.size} bytes, more than extract.max_member_bytes "
            f"({max_member_bytes}); raise that limit if the member is genuine"
        )


def _parts_stamp(parts: list[Part]) -> list[dict]:
    return [
        {"name": p.path.name, "bytes": p.size}
        | ({"zip_bytes": p.path.stat().st_size} if p.zipped else {})
        for p in parts
    ]


def _stream_member(stream: GunzipReader, target: Path, size: int) -> None:
    """Copy ``size`` bytes of ``stream`` to a new read-only file, buffer by buffer."""
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o444)
    try:
        stream.copy_to(fd, size)
    finally:
        os.close(fd)


@dataclass
class _Extracted:
    """What the extraction has written so far (for the manifest)."""

    videos: set[str] = field(default_factory=set)
    frames: int = 0
    frame_bytes: int = 0
    video_bytes: int = 0

    def add(self, target: Path, size: int) -> None:
        if target.suffix.lower() == ".jpg":  # SSv1: a folder of frames per video
            self.frames += 1
            self.frame_bytes += size
            self.videos.add(target.parent.name)
        elif target.suffix.lower() == ".webm":  # SSv2: one file per video
            self.video_bytes += size
            self.videos.add(target.stem)


def extract_archive(
    folder: str | os.PathLike,
    out: str | os.PathLike,
    stem: str = "20bn-something-something-v1",
    buffer_bytes: int = 4 << 20,
    write_threads: int = 4,
    max_member_bytes: int | None = 1 << 30,
) -> dict:
    """Extract the parts in ``folder`` into ``out``; return the manifest (videos, frames, bytes).

    A no-op returning the recorded manifest when ``out`` was extracted from the same parts.
    """
    out = Path(out)
    parts = find_parts(folder, stem)
    recorded = _recorded_manifest(out, parts)
    if recorded is not None:
        return recorded
    _check_gzip_start(parts[0])
    partial = out.with_name(out.name + ".partial")
    if partial.exists():
        shutil.rmtree(partial)
    partial.mkdir(parents=True)
    total = sum(p.size for p in parts)
    with tqdm(total=total, unit="B", unit_scale=True, desc="extract") as progress:
        reader = PartsReader(parts, progress)
        stream = GunzipReader(reader, chunk_bytes=buffer_bytes)
        writer = FileWriterPool(write_threads)
        try:
            extracted = _write_members(stream, reader, partial, writer, max_member_bytes)
            writer.close()
        except ArchiveError:
            writer.close(wait=False)
            shutil.rmtree(partial, ignore_errors=True)
            raise
        except (tarfile.ReadError, EOFError, zlib.error, OSError) as error:
            writer.close(wait=False)  # no thread may write into the folder being removed
            shutil.rmtree(partial, ignore_errors=True)
            raise _stream_error(error, parts, reader.part.path) from error
        except BaseException:
            writer.close(wait=False)
            shutil.rmtree(partial, ignore_errors=True)
            raise
        finally:
            writer.close(wait=False)
            reader.close()
    manifest = {
        "parts": [
            {**stamp, "sha256": digest}
            for stamp, digest in zip(_parts_stamp(parts), reader.digests, strict=True)
        ],
        "archive_bytes": total,
        "videos": len(extracted.videos),
        "frames": extracted.frames,
        "frame_bytes": extracted.frame_bytes,
        "video_bytes": extracted.video_bytes,
    }
    _install(partial, out, parts, manifest)
    log.info(
        "extracted %d videos, %d frames (%d bytes), %d bytes of video files into %s",
        len(extracted.videos),
        extracted.frames,
        extracted.frame_bytes,
        extracted.video_bytes,
        out,
    )
    return manifest


def _recorded_manifest(out: Path, parts: list[Part]) -> dict | None:
    """The manifest of an earlier extraction of the same parts into ``out``, if any."""
    stamp = out / STAMP
    if not stamp.exists():
        return None
    recorded = json.loads(stamp.read_text())
    if recorded.get("parts") == _parts_stamp(parts):
        log.info("%s: already extracted from the same %d parts; nothing to do", out, len(parts))
        return recorded["manifest"]
    log.info("%s: parts changed since the last extraction; extracting again", out)
    return None


def _check_gzip_start(first: Part) -> None:
    with first.open() as handle:
        if handle.read(2) != GZIP_MAGIC:
            inside = f" (its {first.member})" if first.zipped else ""
            raise ArchiveError(
                f"{first.path}{inside}: not a gzip file (the first part must start a tar.gz)"
            )


def _write_members(
    stream: GunzipReader,
    reader: PartsReader,
    partial: Path,
    writer: FileWriterPool,
    max_member_bytes: int | None,
) -> _Extracted:
    """Check and write every member of the tar stream into ``partial``, then check that
    nothing but padding follows the last one."""
    extracted = _Extracted()
    made: set[Path] = set()
    tar = tarfile.open(fileobj=stream, mode="r:")
    while (member := tar.next()) is not None:
        tar.members.clear()  # SSv1 has 11 M members: keep none in memory
        try:
            check_member(member, max_member_bytes)
        except ArchiveError as error:
            raise ArchiveError(f"{reader.part.path}: {error}") from None
        target = partial / member.name
        folder = target if member.isdir() else target.parent
        if folder not in made:
            folder.mkdir(parents=True, exist_ok=True)
            made.add(folder)
        if member.isdir():
            continue
        stream.seek(member.offset_data)
        if member.size > STREAM_MEMBER_BYTES:
            _stream_member(stream, target, member.size)
        else:
            writer.submit(target, stream.read_exact(member.size))
        extracted.add(target, member.size)
    # tarfile ends quietly at a header it cannot parse, and deflate decodes some garbage
    # without complaint: read the stream to its end so that zlib checks the gzip CRC and
    # length, and only zero padding may follow the last member.
    while chunk := stream.read(1 << 20):
        if chunk.count(0) != len(chunk):
            raise ArchiveError(
                f"{reader.part.path}: corrupt archive data found in this part or the one before "
                f"(unreadable tar header at byte {tar.offset} of the uncompressed stream)"
            )
    return extracted


def _stream_error(error: Exception, parts: list[Part], where: Path) -> ArchiveError:
    """What a failure of the compressed stream most likely means, naming the part."""
    # split -b cuts every part but the last to one size: a shorter one was truncated
    odd = [p for p in parts[:-1] if p.size != parts[0].size]
    if odd:
        return ArchiveError(
            f"{odd[0].path}: part is {odd[0].size} bytes where {parts[0].path.name} is "
            f"{parts[0].size}: truncated? (the stream failed in {where.name}: {error})"
        )
    if isinstance(error, EOFError) or "unexpected end" in str(error).lower():
        return ArchiveError(
            f"{where}: archive ends early: part truncated or a later part missing ({error})"
        )
    return ArchiveError(
        f"{where}: corrupt archive data found in this part; deflate detects damage late, so "
        f"it may lie in this part or the one before ({error})"
    )


def _install(partial: Path, out: Path, parts: list[Part], manifest: dict) -> None:
    """Stamp the finished extraction and put it in place of any earlier one."""
    (partial / STAMP).write_text(
        json.dumps({"parts": _parts_stamp(parts), "manifest": manifest}, indent=2)
    )
    if out.exists():
        _make_writable(out)
        shutil.rmtree(out)
    os.replace(partial, out)


def _make_writable(folder: Path) -> None:
    for root, _dirs, files in os.walk(folder):
        for name in files:
            path = os.path.join(root, name)
            if not os.path.islink(path):
                os.chmod(path, os.stat(path).st_mode | stat.S_IWUSR)
