"""fetch_weights: local paths, downloads with resume, hash check, recorded checksum."""

import hashlib
import http.server
import threading

import pytest

from regiongraph.io.download import fetch_weights

PAYLOAD = bytes(range(256)) * 400  # 100 kB


class RangeHandler(http.server.BaseHTTPRequestHandler):
    honour_range = True
    requests: list = []

    def do_GET(self):  # noqa: N802 (http.server's name)
        type(self).requests.append(self.headers.get("Range"))
        name = self.path.rsplit("/", 1)[-1]
        if name.startswith("missing"):
            self.send_error(404)
            return
        start = 0
        header = self.headers.get("Range")
        if header and self.honour_range:
            start = int(header.removeprefix("bytes=").split("-")[0])
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(PAYLOAD) - 1}/{len(PAYLOAD)}")
        else:
            self.send_response(200)
        body = PAYLOAD[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    RangeHandler.requests = []
    RangeHandler.honour_range = True
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


def test_partial_download_resumes_with_a_range_request(server, tmp_path):
    (tmp_path / "w.pth.part").write_bytes(PAYLOAD[:30000])
    path = fetch_weights(f"{server}/w.pth", tmp_path)
    assert RangeHandler.requests == ["bytes=30000-"]
    assert path.read_bytes() == PAYLOAD and not (tmp_path / "w.pth.part").exists()


def test_server_ignoring_range_restarts_the_file(server, tmp_path):
    RangeHandler.honour_range = False
    (tmp_path / "w.pth.part").write_bytes(b"stale bytes")
    assert fetch_weights(f"{server}/w.pth", tmp_path).read_bytes() == PAYLOAD


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
