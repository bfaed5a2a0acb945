"""fetch_weights: local paths, downloads with resume, hash check, recorded checksum."""

import hashlib
import http.server
import threading

import pytest

from regiongraph.io.download import fetch_weights

PAYLOAD = bytes(range(256)) * 400  # 100 kB


class RangeHandler(http.server.BaseHTTPRequestHandler):
    """Serves ``payload`` with an ETag, and answers ``Range`` + ``If-Range`` as RFC 9110 says:
    the rest of the file when the validator matches, the whole file otherwise."""

    honour_range = True
    payload = PAYLOAD
    etag = '"v1"'
    cut_after: int | None = None  # send only this many bytes of the body, then hang up
    requests: list = []

    def do_GET(self):  # noqa: N802 (http.server's name)
        cls = type(self)
        cls.requests.append((self.headers.get("Range"), self.headers.get("If-Range")))
        name = self.path.rsplit("/", 1)[-1]
        if name.startswith("missing"):
            self.send_error(404)
            return
        start = 0
        header = self.headers.get("Range")
        if_range = self.headers.get("If-Range")
        if header and cls.honour_range and if_range in (None, cls.etag):
            start = int(header.removeprefix("bytes=").split("-")[0])
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(cls.payload) - 1}/{len(cls.payload)}")
        else:
            self.send_response(200)
        body = cls.payload[start:]
        self.send_header("Content-Length", str(len(body)))
        self.send_header("ETag", cls.etag)
        self.end_headers()
        if cls.cut_after is not None:
            body, cls.cut_after = body[: cls.cut_after], None
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    RangeHandler.requests = []
    RangeHandler.honour_range = True
    RangeHandler.payload, RangeHandler.etag, RangeHandler.cut_after = PAYLOAD, '"v1"', None
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), RangeHandler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_local_path_is_returned_and_a_missing_one_is_an_error(tmp_path):
    path = tmp_path / "w.pth"
    path.write_bytes(b"x")
    assert fetch_weights(path, tmp_path / "cache") == path
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        fetch_weights(tmp_path / "nope.pth", tmp_path / "cache")


def test_download_records_the_checksum_and_is_cached(server, tmp_path):
    path = fetch_weights(f"{server}/models/w.pth", tmp_path)
    assert path == tmp_path / "w.pth" and path.read_bytes() == PAYLOAD
    digest = hashlib.sha256(PAYLOAD).hexdigest()
    assert (tmp_path / "w.pth.sha256").read_text().split()[0] == digest
    assert fetch_weights(f"{server}/models/w.pth", tmp_path) == path
    assert len(RangeHandler.requests) == 1  # the second call did not download


def _interrupted(server, tmp_path, after=30000):
    RangeHandler.cut_after = after
    with pytest.raises(OSError, match="download incomplete.*rerun to resume"):
        fetch_weights(f"{server}/w.pth", tmp_path)
    assert (tmp_path / "w.pth.part").stat().st_size == after and not (tmp_path / "w.pth").exists()


def test_interrupted_download_resumes_with_range_and_if_range(server, tmp_path):
    _interrupted(server, tmp_path)
    path = fetch_weights(f"{server}/w.pth", tmp_path)
    assert RangeHandler.requests[-1] == ("bytes=30000-", '"v1"')
    assert path.read_bytes() == PAYLOAD and not (tmp_path / "w.pth.part").exists()
    assert not (tmp_path / "w.pth.part.json").exists()


def test_a_file_changed_on_the_server_is_downloaded_whole_not_spliced(server, tmp_path):
    _interrupted(server, tmp_path)
    RangeHandler.payload, RangeHandler.etag = PAYLOAD[::-1], '"v2"'  # a new release meanwhile
    path = fetch_weights(f"{server}/w.pth", tmp_path)
    assert RangeHandler.requests[-1] == ("bytes=30000-", '"v1"')
    assert path.read_bytes() == PAYLOAD[::-1]


def test_a_part_without_its_validator_is_downloaded_afresh(server, tmp_path):
    (tmp_path / "w.pth.part").write_bytes(b"stale bytes of unknown origin")
    assert fetch_weights(f"{server}/w.pth", tmp_path).read_bytes() == PAYLOAD
    assert RangeHandler.requests == [(None, None)]


def test_server_ignoring_range_restarts_the_file(server, tmp_path):
    _interrupted(server, tmp_path)
    RangeHandler.honour_range = False
    assert fetch_weights(f"{server}/w.pth", tmp_path).read_bytes() == PAYLOAD


def test_cached_file_is_checked_against_its_recorded_sha256_on_every_use(server, tmp_path):
    path = fetch_weights(f"{server}/w.pth", tmp_path)
    path.write_bytes(PAYLOAD[:-1] + b"x")  # damaged or replaced on disk
    with pytest.raises(ValueError, match=r"w.pth: SHA-256 is .* but the SHA-256 recorded in .*w.pth.sha256"):
        fetch_weights(f"{server}/w.pth", tmp_path)
    assert len(RangeHandler.requests) == 1


def test_a_pinned_sha256_is_checked_for_downloads_and_local_files(server, tmp_path):
    good = hashlib.sha256(PAYLOAD).hexdigest()
    assert fetch_weights(f"{server}/w.pth", tmp_path / "a", sha256=good.upper()).read_bytes() == PAYLOAD
    with pytest.raises(ValueError, match="is not the pinned " + "0" * 64):
        fetch_weights(f"{server}/w.pth", tmp_path / "b", sha256="0" * 64)
    assert not list((tmp_path / "b").glob("w.pth*[!k]"))  # nothing but the lock file is left
    with pytest.raises(ValueError, match="the pinned sha256 is " + "0" * 64):
        fetch_weights(f"{server}/w.pth", tmp_path / "a", sha256="0" * 64)  # cached, pin changed
    local = tmp_path / "local.pth"
    local.write_bytes(PAYLOAD)
    assert fetch_weights(local, tmp_path / "c", sha256=good) == local
    with pytest.raises(ValueError, match="local.pth: SHA-256 is"):
        fetch_weights(local, tmp_path / "c", sha256="1" * 64)


def test_hash_in_the_name_is_checked(server, tmp_path):
    good = hashlib.sha256(PAYLOAD).hexdigest()[:8]
    assert fetch_weights(f"{server}/w-{good}.pth", tmp_path).read_bytes() == PAYLOAD
    with pytest.raises(ValueError, match="does not start with deadbeef"):
        fetch_weights(f"{server}/w-deadbeef.pth", tmp_path)
    assert not (tmp_path / "w-deadbeef.pth").exists()
    assert not (tmp_path / "w-deadbeef.pth.part").exists()


def test_http_error_names_the_url(server, tmp_path):
    with pytest.raises(OSError, match="missing.pth.*404"):
        fetch_weights(f"{server}/missing.pth", tmp_path)
