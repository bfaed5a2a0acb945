"""SSv2's zipped parts: streamed in order from the zips into the tar reader, every bad zip named."""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import subprocess
import zipfile
from pathlib import Path

import pytest

from regiongraph.dataset.archive import ArchiveError, extract_archive, find_parts

STEM = "20bn-something-something-v2"


def _extract(parts: Path, out: Path) -> dict:
    return extract_archive(parts, out, stem=STEM)


def _unzip_all(zips: Path, out: Path) -> list[Path]:
    """The unzipped pieces, as `unzip` would leave them."""
    out.mkdir(parents=True, exist_ok=True)
    pieces = []
    for path in sorted(zips.glob("*.zip")):
        with zipfile.ZipFile(path) as archive:
            archive.extractall(out)
        pieces.append(out / path.name[: -len(".zip")])
    return pieces


def test_zipped_parts_extract_the_same_files_as_unzip_cat_tar(tiny_ssv2_download, tmp_path):
    zips, _, _ = tiny_ssv2_download
    manifest = _extract(zips, tmp_path / "raw")
    pieces = _unzip_all(zips, tmp_path / "pieces")
    reference = tmp_path / "tar"
    reference.mkdir()
    cat = subprocess.Popen(["cat", *map(str, pieces)], stdout=subprocess.PIPE)
    subprocess.run(["tar", "xz", "-C", str(reference)], stdin=cat.stdout, check=True)
    cat.wait()
    ours = sorted(p.relative_to(tmp_path / "raw") for p in (tmp_path / "raw").rglob("*.webm"))
    theirs = sorted(p.relative_to(reference) for p in reference.rglob("*.webm"))
    assert ours == theirs and len(ours) == manifest["videos"] == 24
    assert all(str(p).startswith(f"{STEM}/") for p in ours)
    for rel in ours:
        assert (tmp_path / "raw" / rel).read_bytes() == (reference / rel).read_bytes()
    assert manifest["video_bytes"] == sum((reference / rel).stat().st_size for rel in theirs)
    # the digests are the pieces', whether read from the zips or unzipped
    for part, piece in zip(manifest["parts"], pieces, strict=True):
        assert part["name"] == piece.name + ".zip"
        assert part["sha256"] == hashlib.sha256(piece.read_bytes()).hexdigest()


def test_no_unzipped_or_concatenated_copy_is_written(tiny_ssv2_download, tmp_path):
    zips, _, _ = tiny_ssv2_download
    copy = tmp_path / "zips"
    shutil.copytree(zips, copy)
    _extract(copy, tmp_path / "raw")
    assert sorted(p.name for p in copy.iterdir()) == sorted(p.name for p in zips.iterdir())
    piece = min(zipfile.ZipFile(p).infolist()[0].file_size for p in copy.iterdir())
    written = [p for p in (tmp_path / "raw").rglob("*") if p.is_file() and p.stat().st_size >= piece]
    assert written == [], "a file the size of a piece was written"


def test_unzipped_parts_are_read_too_and_give_the_same_manifest(tiny_ssv2_download, tmp_path):
    zips, _, _ = tiny_ssv2_download
    _unzip_all(zips, tmp_path / "pieces")
    from_pieces = _extract(tmp_path / "pieces", tmp_path / "a")
    from_zips = _extract(zips, tmp_path / "b")
    assert [p["sha256"] for p in from_pieces["parts"]] == [p["sha256"] for p in from_zips["parts"]]
    assert from_pieces["videos"] == from_zips["videos"] == 24
    # both in one folder (unzipped in place): the zips are read
    for path in zips.iterdir():
        shutil.copy(path, tmp_path / "pieces")
    assert all(part.zipped for part in find_parts(tmp_path / "pieces", STEM))


def _copy(zips: Path, tmp_path: Path) -> tuple[Path, list[Path]]:
    copy = tmp_path / "zips"
    shutil.copytree(zips, copy)
    return copy, sorted(copy.iterdir())


def test_a_missing_zip_is_named(tiny_ssv2_download, tmp_path):
    copy, paths = _copy(tiny_ssv2_download[0], tmp_path)
    paths[1].unlink()
    with pytest.raises(ArchiveError, match=f"{STEM}-01: archive part is missing"):
        _extract(copy, tmp_path / "raw")
    assert not (tmp_path / "raw").exists()


def test_a_missing_last_zip_ends_the_archive_early(tiny_ssv2_download, tmp_path):
    copy, paths = _copy(tiny_ssv2_download[0], tmp_path)
    paths[-1].unlink()
    with pytest.raises(ArchiveError, match=f"{paths[-2].name}: archive ends early"):
        _extract(copy, tmp_path / "raw")
    assert not (tmp_path / "raw").exists() and not (tmp_path / "raw.partial").exists()


@pytest.mark.parametrize("keep", [0.5, 0.99])
def test_a_truncated_zip_is_named_before_anything_is_extracted(tiny_ssv2_download, tmp_path, keep):
    copy, paths = _copy(tiny_ssv2_download[0], tmp_path)
    data = paths[2].read_bytes()
    paths[2].write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(ArchiveError, match=f"{paths[2]}: not a readable zip .*truncated"):
        _extract(copy, tmp_path / "raw")
    assert not (tmp_path / "raw").exists() and not (tmp_path / "raw.partial").exists()


def test_a_file_that_is_not_a_zip_is_named(tiny_ssv2_download, tmp_path):
    copy, paths = _copy(tiny_ssv2_download[0], tmp_path)
    paths[0].write_bytes(b"<html>403 Forbidden</html>")
    with pytest.raises(ArchiveError, match=f"{paths[0]}: not a readable zip"):
        _extract(copy, tmp_path / "raw")


def _rezip(path: Path, members: dict[str, bytes], method=zipfile.ZIP_DEFLATED) -> None:
    path.unlink()
    with zipfile.ZipFile(path, "w", method) as archive:
        for name, data in members.items():
            archive.writestr(name, data)


def _piece(path: Path) -> tuple[str, bytes]:
    with zipfile.ZipFile(path) as archive:
        info = archive.infolist()[0]
        return info.filename, archive.read(info)


@pytest.mark.parametrize(
    "members",
    [
        {"20bn-something-something-v2-07": b"x"},  # another part's piece
        {"readme.txt": b"x"},
        {"20bn-something-something-v2-01": b"x", "extra.txt": b"y"},  # two files
        {},
    ],
)
def test_a_zip_holding_the_wrong_member_is_named_with_what_it_holds(tiny_ssv2_download, tmp_path, members):
    copy, paths = _copy(tiny_ssv2_download[0], tmp_path)
    _rezip(paths[1], members)
    with pytest.raises(ArchiveError, match=f"{paths[1]}: holds .*expected the one file {STEM}-01") as error:
        _extract(copy, tmp_path / "raw")
    for name in members:
        assert name in str(error.value)
    assert not (tmp_path / "raw").exists()


def test_a_zip_crc_error_is_named_by_its_zip(tiny_ssv2_download, tmp_path):
    copy, paths = _copy(tiny_ssv2_download[0], tmp_path)
    name, data = _piece(paths[1])
    _rezip(paths[1], {name: data}, zipfile.ZIP_STORED)
    raw = bytearray(paths[1].read_bytes())
    offset = raw.index(data[1000:1032]) + 16  # a byte of the stored piece itself
    raw[offset] ^= 0xFF
    paths[1].write_bytes(bytes(raw))
    with pytest.raises(ArchiveError, match=f"{paths[1]}: damaged zip .*CRC"):
        _extract(copy, tmp_path / "raw")
    assert not (tmp_path / "raw").exists() and not (tmp_path / "raw.partial").exists()


def test_a_first_piece_that_is_not_gzip_is_named(tiny_ssv2_download, tmp_path):
    copy, paths = _copy(tiny_ssv2_download[0], tmp_path)
    name, data = _piece(paths[0])
    _rezip(paths[0], {name: b"PK not gzip" + data[11:]})
    with pytest.raises(ArchiveError, match=f"{paths[0]} \\(its {name}\\): not a gzip file"):
        _extract(copy, tmp_path / "raw")


def test_links_in_the_video_tar_are_refused_naming_the_zip(tmp_path):
    """The safety rules hold for zipped parts: a symlink member is refused, naming the zip."""
    import gzip
    import tarfile

    buffer = io.BytesIO()
    with gzip.GzipFile(fileobj=buffer, mode="wb", mtime=0) as gz, tarfile.open(fileobj=gz, mode="w|") as tar:
        info = tarfile.TarInfo(f"{STEM}/1.webm")
        info.size = 4
        tar.addfile(info, io.BytesIO(b"webm"))
        link = tarfile.TarInfo(f"{STEM}/2.webm")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tar.addfile(link)
    parts = tmp_path / "zips"
    parts.mkdir()
    _rezip_path = parts / f"{STEM}-00.zip"
    with zipfile.ZipFile(_rezip_path, "w") as archive:
        archive.writestr(f"{STEM}-00", buffer.getvalue())
    with pytest.raises(ArchiveError, match=f"{_rezip_path}: tar member '{STEM}/2.webm' is a symlink"):
        _extract(parts, tmp_path / "raw")
    assert not (tmp_path / "raw").exists()


def test_rerun_on_the_same_zips_is_a_noop(tiny_ssv2_download, tmp_path):
    zips, _, _ = tiny_ssv2_download
    first = _extract(zips, tmp_path / "raw")
    video = next((tmp_path / "raw").rglob("*.webm"))
    before = video.stat().st_mtime_ns
    assert _extract(zips, tmp_path / "raw") == first
    assert video.stat().st_mtime_ns == before
    assert os.stat(video).st_mode & 0o222 == 0  # read only
