"""Decoding SSv2's webm videos: every frame at the native rate from 00001.jpg, optional resize,
bad videos dropped with their reason while the others decode."""

from __future__ import annotations

import logging
import os
import shutil

import cv2
import numpy as np
import pytest

from regiongraph.dataset.toy import encode_webm
from regiongraph.dataset.video import (
    DecodeSettings,
    decode_videos,
    output_size,
)

NATIVE = DecodeSettings(short_side=None, jpeg_quality=95)


def _frames(n: int, height: int = 40, width: int = 64) -> list[np.ndarray]:
    """Frames whose brightness encodes their number (a decoded frame tells which one it is)."""
    return [np.full((height, width, 3), _level(i), np.uint8) for i in range(n)]


def _level(i: int) -> int:
    return 10 + (6 * i) % 234


@pytest.fixture
def videos(tmp_path):
    folder = tmp_path / "videos"
    folder.mkdir()
    for video_id, n in (("1", 30), ("2", 13), ("3", 25)):
        (folder / f"{video_id}.webm").write_bytes(encode_webm(_frames(n)))
    return folder


def test_every_frame_is_kept_in_order_from_00001(videos, tmp_path):
    result = decode_videos(videos, tmp_path / "frames", NATIVE, workers=2)
    assert (result.videos, result.decoded, result.dropped) == (3, 3, [])
    for video_id, n in (("1", 30), ("2", 13), ("3", 25)):
        names = sorted(os.listdir(tmp_path / "frames" / video_id))
        assert names == [f"{i:05d}.jpg" for i in range(1, n + 1)]
        for i in (0, n // 2, n - 1):
            image = cv2.imread(str(tmp_path / "frames" / video_id / f"{i + 1:05d}.jpg"))
            assert image.shape == (40, 64, 3)
            assert abs(float(image.mean()) - _level(i)) < 3, f"frame {i + 1} of {video_id}"
    assert result.frames == 30 + 13 + 25


def test_short_side_resizes_keeping_the_aspect(videos, tmp_path):
    decode_videos(videos, tmp_path / "frames", DecodeSettings(short_side=20, jpeg_quality=90))
    image = cv2.imread(str(tmp_path / "frames" / "1" / "00001.jpg"))
    assert image.shape == (20, 32, 3)
    assert output_size(427, 240, 256) == (456, 256) and output_size(427, 240, None) == (427, 240)


def test_bad_videos_are_dropped_with_their_reason_and_the_rest_decode(videos, tmp_path, caplog):
    good = (videos / "1.webm").read_bytes()
    (videos / "10.webm").write_bytes(b"")  # zero bytes
    (videos / "11.webm").write_bytes(os.urandom(4000))  # not a video
    (videos / "12.webm").write_bytes(good[: len(good) // 2])  # truncated
    (videos / "13.webm").write_bytes(good[:300] + os.urandom(len(good) - 300))  # corrupt
    with caplog.at_level(logging.WARNING):
        result = decode_videos(videos, tmp_path / "frames", NATIVE, workers=2)
    reasons = dict(result.dropped)
    assert sorted(reasons) == ["10", "11", "12", "13"]
    assert reasons["10"].startswith("zero-byte video file") and "10.webm" in reasons["10"]
    assert "undecodable video" in reasons["11"] and "11.webm" in reasons["11"]
    assert reasons["12"].startswith("truncated video") and "12.webm" in reasons["12"]
    assert "13.webm" in reasons["13"] and ("undecodable" in reasons["13"] or "truncated" in reasons["13"])
    assert result.videos == 3 and result.decoded == 3
    folders = sorted(os.listdir(tmp_path / "frames"))
    assert [f for f in folders if not f.startswith(".")] == ["1", "2", "3"]  # no partial folder
    assert any("dropped video 12" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("keep", [0.7, 0.9])
def test_a_video_cut_between_clusters_is_caught_as_truncated(tmp_path, keep):
    """A cut that FFmpeg's demuxer does not notice: the frames stop before the container's
    duration."""
    folder = tmp_path / "videos"
    folder.mkdir()
    data = encode_webm(_frames(48))
    (folder / "5.webm").write_bytes(data[: int(len(data) * keep)])
    result = decode_videos(folder, tmp_path / "frames", NATIVE)
    assert result.dropped and result.dropped[0][0] == "5"
    assert "truncated video" in result.dropped[0][1]


def test_a_rerun_decodes_only_what_is_missing_and_new_settings_start_afresh(videos, tmp_path):
    decode_videos(videos, tmp_path / "frames", NATIVE)
    first = tmp_path / "frames" / "1" / "00001.jpg"
    before = first.stat().st_mtime_ns
    shutil.rmtree(tmp_path / "frames" / "2")
    (tmp_path / "frames" / "3.partial").mkdir()  # what a killed job leaves
    again = decode_videos(videos, tmp_path / "frames", NATIVE)
    assert again.decoded == 1 and again.videos == 3  # only "2"
    assert first.stat().st_mtime_ns == before
    assert not (tmp_path / "frames" / "3.partial").exists()
    resized = decode_videos(videos, tmp_path / "frames", DecodeSettings(short_side=20, jpeg_quality=95))
    assert resized.decoded == 3
    assert cv2.imread(str(first)).shape[0] == 20
    assert decode_videos(videos, tmp_path / "frames", resized_settings := DecodeSettings(20, 95)).decoded == 0
    # other videos (another extraction) under the same settings: decoded again
    assert decode_videos(videos, tmp_path / "frames", resized_settings, source=["sha256:x"]).decoded == 3
