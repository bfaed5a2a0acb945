"""extract: streaming the parts through tarfile, safety checks, errors naming the part."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from regiongraph.dataset.archive import ArchiveError, extract_archive, find_parts
from tests.conftest import REPO

STEM = "20bn-something-something-v1"


def _write_parts(folder: Path, data: bytes, part_bytes: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(0, len(data), part_bytes):
        path = folder / f"{STEM}-{i // part_bytes:02d}"
        path.write_bytes(data[i : i + part_bytes])
        paths.append(path)
    return paths


def _tar_gz(members: list[tuple[tarfile.TarInfo, bytes | None]]) -> bytes:
    buffer = io.BytesIO()
    with (
        gzip.GzipFile(fileobj=buffer, mode="wb", mtime=0) as gz,
        tarfile.open(fileobj=gz, mode="w|") as tar,
    ):
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return buffer.getvalue()


def _file(name: str, data: bytes = b"\xff\xd8jpeg\xff\xd9") -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    return info, data


def _good_members() -> list:
    return [_file(f"{STEM}/{v}/{f:05d}.jpg", os.urandom(3000)) for v in (1, 2) for f in (1, 2, 3)]


def test_extracts_same_files_as_tar(tiny_download, tmp_path):
    archives, _ = tiny_download
    manifest = extract_archive(archives, tmp_path / "raw")
    reference = tmp_path / "tar"
    reference.mkdir()
    cat = subprocess.Popen(["cat", *sorted(map(str, archives.iterdir()))], stdout=subprocess.PIPE)
    subprocess.run(["tar", "xz", "-C", str(reference)], stdin=cat.stdout, check=True)
    cat.wait()
    ours = sorted(p.relative_to(tmp_path / "raw") for p in (tmp_path / "raw").rglob("*.jpg"))
    theirs = sorted(p.relative_to(reference) for p in reference.rglob("*.jpg"))
    assert ours == theirs and len(ours) == manifest["frames"]
    for rel in ours[:50]:
        assert (tmp_path / "raw" / rel).read_bytes() == (reference / rel).read_bytes()
    assert manifest["videos"] == 24
    assert manifest["frame_bytes"] == sum((reference / rel).stat().st_size for rel in theirs)
    # raw frames are read-only to the pipeline
    assert not os.stat(tmp_path / "raw" / ours[0]).st_mode & 0o222
    assert not (tmp_path / "raw.partial").exists()


def test_rerun_is_a_noop(tiny_download, tmp_path):
    archives, _ = tiny_download
    first = extract_archive(archives, tmp_path / "raw")
    frame = next((tmp_path / "raw").rglob("*.jpg"))
    before = frame.stat().st_mtime_ns
    assert extract_archive(archives, tmp_path / "raw") == first
    assert frame.stat().st_mtime_ns == before


def test_no_concatenated_copy_is_written(tiny_download, tmp_path):
    archives, _ = tiny_download
    total = sum(p.stat().st_size for p in archives.iterdir())
    extract_archive(archives, tmp_path / "raw")
    big = [p for p in tmp_path.rglob("*") if p.is_file() and p.stat().st_size >= total]
    assert big == []


def test_truncated_part_is_named(tiny_download, tmp_path):
    archives, _ = tiny_download
    copy = tmp_path / "parts"
    shutil.copytree(archives, copy)
    last = sorted(copy.iterdir())[-1]
    last.write_bytes(last.read_bytes()[: last.stat().st_size // 2])
    with pytest.raises(ArchiveError, match=f"{last.name}.*(ends early|corrupt)"):
        extract_archive(copy, tmp_path / "raw")
    assert not (tmp_path / "raw").exists() and not (tmp_path / "raw.partial").exists()


def test_non_gzip_part_is_named(tiny_download, tmp_path):
    copy = tmp_path / "parts"
    shutil.copytree(tiny_download[0], copy)
    first = copy / f"{STEM}-00"
    first.write_bytes(b"<html>403 Forbidden</html>" + first.read_bytes()[26:])
    with pytest.raises(ArchiveError, match=f"{STEM}-00: not a gzip file"):
        extract_archive(copy, tmp_path / "raw")


def test_corrupt_middle_part_is_named(tiny_download, tmp_path):
    copy = tmp_path / "parts"
    shutil.copytree(tiny_download[0], copy)
    parts = sorted(copy.iterdir())
    middle = parts[1]
    middle.write_bytes(os.urandom(middle.stat().st_size))
    # deflate may decode some garbage before it fails: the damage is named in this part or
    # the one after it, and the message says so
    with pytest.raises(ArchiveError, match=rf"({middle.name}|{parts[2].name}): corrupt") as error:
        extract_archive(copy, tmp_path / "raw")
    assert "corrupt archive data" in str(error.value)
    assert not (tmp_path / "raw").exists() and not (tmp_path / "raw.partial").exists()


def test_short_middle_part_is_named(tiny_download, tmp_path):
    copy = tmp_path / "parts"
    shutil.copytree(tiny_download[0], copy)
    middle = sorted(copy.iterdir())[2]
    middle.write_bytes(middle.read_bytes()[:-700])
    with pytest.raises(
        ArchiveError, match=rf"{middle.name}: part is \d+ bytes where .*-00 is \d+: truncated"
    ):
        extract_archive(copy, tmp_path / "raw")


def test_gap_in_numbering_names_missing_part(tiny_download, tmp_path):
    copy = tmp_path / "parts"
    shutil.copytree(tiny_download[0], copy)
    (copy / f"{STEM}-01").unlink()
    with pytest.raises(ArchiveError, match=f"{STEM}-01: archive part is missing"):
        find_parts(copy)


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("../../evil", "escapes the output folder"),
        (f"{STEM}/../../evil", "escapes the output folder"),
        ("/etc/evil", "absolute path"),
    ],
)
def test_unsafe_member_paths_refused(tmp_path, name, message):
    parts = _write_parts(tmp_path / "parts", _tar_gz([*_good_members(), _file(name)]), 4096)
    with pytest.raises(ArchiveError, match=message) as error:
        extract_archive(tmp_path / "parts", tmp_path / "out" / "raw")
    assert repr(name) in str(error.value) and parts[0].parent.name in str(error.value)
    assert not (tmp_path / "evil").exists() and not (tmp_path / "out" / "raw").exists()


@pytest.mark.parametrize(
    ("kind", "target", "word"),
    [
        (tarfile.SYMTYPE, "../../../../etc/passwd", "symlink"),
        (tarfile.SYMTYPE, "00001.jpg", "symlink"),  # even one that stays inside
        (tarfile.LNKTYPE, f"{STEM}/1/00001.jpg", "hard link"),
    ],
)
def test_every_link_member_is_refused_naming_part_and_member(tmp_path, kind, target, word):
    link = tarfile.TarInfo(f"{STEM}/1/00004.jpg")
    link.type, link.linkname = kind, target
    parts = _write_parts(tmp_path / "parts", _tar_gz([*_good_members(), (link, None)]), 1 << 20)
    with pytest.raises(ArchiveError, match=f"is a {word}") as error:
        extract_archive(tmp_path / "parts", tmp_path / "raw")
    assert str(parts[0]) in str(error.value) and f"{STEM}/1/00004.jpg" in str(error.value)
    assert not (tmp_path / "raw").exists()


def test_member_over_the_size_cap_is_refused(tmp_path):
    parts = _write_parts(tmp_path / "parts", _tar_gz([*_good_members(), _file(f"{STEM}/3/00001.jpg", bytes(5000))]), 1 << 20)
    with pytest.raises(ArchiveError, match=r"5000 bytes, more than extract.max_member_bytes \(4096\)") as error:
        extract_archive(tmp_path / "parts", tmp_path / "raw", max_member_bytes=4096)
    assert str(parts[0]) in str(error.value) and f"{STEM}/3/00001.jpg" in str(error.value)
    assert not (tmp_path / "raw").exists()


def _zeros_archive(path: Path, size: int) -> None:
    """A one-part tar.gz holding one member of ``size`` zero bytes (about size/1000 on disk)."""
    class Zeros(io.RawIOBase):
        def __init__(self, n):
            self.left = n

        def readable(self):
            return True

        def readinto(self, buffer):
            n = min(len(buffer), self.left)
            buffer[:n] = bytes(n)
            self.left -= n
            return n

    path.parent.mkdir(parents=True, exist_ok=True)
    info = tarfile.TarInfo(f"{STEM}/1/00001.jpg")
    info.size = size
    with open(path, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0, compresslevel=1) as gz:
        with tarfile.open(fileobj=gz, mode="w|") as tar:
            tar.addfile(info, io.BufferedReader(Zeros(size), 1 << 20))


@pytest.mark.slow
def test_a_huge_member_is_streamed_to_disk_in_bounded_memory(tmp_path):
    """A 1 GiB member of zeros (about 1 MB compressed) is written piece by piece: the
    extracting process's peak memory stays far below the member's size."""
    size = 1 << 30
    _zeros_archive(tmp_path / "parts" / f"{STEM}-00", size)
    assert (tmp_path / "parts" / f"{STEM}-00").stat().st_size < 8 << 20
    # VmHWM, not getrusage's ru_maxrss: the latter survives exec, so a child forked from a
    # large pytest process would report the parent's size
    code = (
        "import re, sys\n"
        "from pathlib import Path\n"
        "from regiongraph.dataset.archive import extract_archive\n"
        "extract_archive(sys.argv[1], sys.argv[2], max_member_bytes=2 << 30)\n"
        "print(re.search(r'VmHWM:\\s+(\\d+) kB', Path('/proc/self/status').read_text())[1])\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "parts"), str(tmp_path / "raw")],
        capture_output=True, text=True, check=True, cwd=REPO,
    )
    peak_mib = int(proc.stdout.split()[-1]) / 1024
    assert (tmp_path / "raw" / STEM / "1" / "00001.jpg").stat().st_size == size
    assert peak_mib < 256, f"peak memory {peak_mib:.0f} MiB for a {size >> 20} MiB member"


def test_manifest_records_each_parts_sha256(tiny_download, tmp_path):
    archives, _ = tiny_download
    manifest = extract_archive(archives, tmp_path / "raw")
    for part in manifest["parts"]:
        assert part["sha256"] == hashlib.sha256((archives / part["name"]).read_bytes()).hexdigest()
    assert [p["name"] for p in manifest["parts"]] == sorted(p.name for p in archives.iterdir())


def test_device_member_refused(tmp_path):
    device = tarfile.TarInfo(f"{STEM}/1/null")
    device.type = tarfile.CHRTYPE
    _write_parts(tmp_path / "parts", _tar_gz([*_good_members(), (device, None)]), 1 << 20)
    with pytest.raises(ArchiveError, match="device or FIFO"):
        extract_archive(tmp_path / "parts", tmp_path / "raw")


def test_failed_reextract_keeps_previous_frames(tmp_path):
    _write_parts(tmp_path / "parts", _tar_gz(_good_members()), 4096)
    extract_archive(tmp_path / "parts", tmp_path / "raw")
    frames = sorted((tmp_path / "raw").rglob("*.jpg"))
    for part in (tmp_path / "parts").iterdir():
        part.unlink()
    _write_parts(tmp_path / "parts", _tar_gz([*_good_members(), _file("../evil")]), 4096)
    with pytest.raises(ArchiveError):
        extract_archive(tmp_path / "parts", tmp_path / "raw")
    assert sorted((tmp_path / "raw").rglob("*.jpg")) == frames


def test_atomic_path_removes_a_killed_jobs_temporary_file(tmp_path):
    from regiongraph.io import atomic_path

    stale = tmp_path / ".out.h5.tmp-99999999"
    stale.write_bytes(b"half written")
    with atomic_path(tmp_path / "out.h5") as tmp:
        tmp.write_bytes(b"whole")
    assert (tmp_path / "out.h5").read_bytes() == b"whole"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.h5"]
