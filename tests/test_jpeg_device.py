"""JPEG decoding on the device (config ``backbone.jpeg_decode`` / ``flow.jpeg_decode``).

On a GPU, batches of frames are decoded with nvJPEG (``torchvision.io.decode_jpeg``) and
resized and cropped there. The same code runs here on the CPU (``device="cpu"``, libjpeg),
so these tests compare it with the host path (OpenCV) frame for frame: the clips must agree
within a JPEG decoder's tolerance and the crops, boxes and drops exactly.
"""

from __future__ import annotations

import cv2
import numpy as np
import pandas as pd
import pytest
import torch
from torch.utils.data import DataLoader

from regiongraph.dataset.frames import (
    CorruptFrameError,
    decode_jpegs,
    jpeg_on_device,
    jpeg_size,
    read_frame,
)
from regiongraph.features.clips import ClipDataset, ClipSettings, collate_clips, decode_clips

# Host and device clips may differ by one level from OpenCV's fixed-point bilinear weights
# and, with nvJPEG, by a level or two from its IDCT; more means a different pixel was read.
MAX_LEVELS, MEAN_LEVELS = 2, 0.25


def textured(h: int, w: int, t: int = 0) -> np.ndarray:
    """Smooth RGB texture with a bright square moving right with ``t``."""
    yy, xx = np.mgrid[0:h, 0:w]
    image = np.stack([(xx * 1.7 + t * 9) % 256, (yy * 2.3) % 256, ((xx + yy) * 0.8) % 256], -1)
    image = image.astype(np.uint8)
    cv2.rectangle(image, (5 + 4 * t, h // 3), (20 + 4 * t, h // 3 + 15), (255, 255, 255), -1)
    return image


def write_frames(folder, frames, progressive=False):
    folder.mkdir(parents=True)
    flags = [cv2.IMWRITE_JPEG_QUALITY, 92, cv2.IMWRITE_JPEG_PROGRESSIVE, int(progressive)]
    for i, frame in enumerate(frames):
        cv2.imwrite(str(folder / f"{i + 1:05d}.jpg"), cv2.cvtColor(frame, cv2.COLOR_RGB2BGR), flags)


@pytest.mark.parametrize("progressive", [False, True])
def test_jpeg_size_reads_the_frame_header_without_decoding(progressive):
    image = textured(100, 176)
    flags = [cv2.IMWRITE_JPEG_PROGRESSIVE, int(progressive)]
    data = cv2.imencode(".jpg", image, flags)[1]
    assert jpeg_size(data) == (100, 176) == cv2.imdecode(data, cv2.IMREAD_COLOR).shape[:2]
    assert jpeg_size(cv2.imencode(".jpg", image[:, :61])[1].tobytes()) == (100, 61)
    header_end = data.tobytes().index(b"\xff\xc2" if progressive else b"\xff\xc0")
    with pytest.raises(ValueError, match="truncated"):
        jpeg_size(data[:header_end])
    with pytest.raises(ValueError, match="not a JPEG"):
        jpeg_size(b"GIF89a")


def test_device_decoding_equals_opencv_within_decoder_tolerance(tmp_path):
    write_frames(tmp_path / "v", [textured(100, 176, t) for t in range(3)])
    paths = sorted((tmp_path / "v").glob("*.jpg"))
    datas = [np.fromfile(p, np.uint8) for p in paths]
    rgb = decode_jpegs(datas, "cpu")
    gray = decode_jpegs(datas, "cpu", grayscale=True)
    for path, colour, grey in zip(paths, rgb, gray, strict=True):
        host = read_frame(path).astype(int)
        assert tuple(colour.shape) == (3, 100, 176) and tuple(grey.shape) == (1, 100, 176)
        assert np.abs(colour.permute(1, 2, 0).numpy() - host).max() <= MAX_LEVELS
        assert np.abs(grey[0].numpy() - read_frame(path, grayscale=True).astype(int)).max() <= MAX_LEVELS


def test_jpeg_decode_setting_chooses_the_device_on_cuda_only():
    assert jpeg_on_device("auto", torch.device("cuda")) and not jpeg_on_device("auto", torch.device("cpu"))
    assert jpeg_on_device("device", torch.device("cpu")) and not jpeg_on_device("host", torch.device("cuda"))
    with pytest.raises(ValueError, match="jpeg_decode"):
        jpeg_on_device("gpu", torch.device("cpu"))


@pytest.fixture
def videos(tmp_path):
    """Three videos: wide, tall (another crop axis) and one whose frames change size."""
    rows = []
    specs = {"w1": (9, 100, 176), "t2": (7, 120, 90), "m3": (8, 100, 150)}
    for vid, (n, h, w) in specs.items():
        frames = [textured(h, w, t) for t in range(n)]
        if vid == "m3":
            frames[5] = cv2.resize(frames[5], (w + 20, h + 10))
        write_frames(tmp_path / vid, frames, progressive=vid == "t2")
        rows.append((vid, 2, n, str(tmp_path / vid)))
    frame = pd.DataFrame(rows, columns=["video_id", "label_index", "n_frames", "frame_dir"])
    frame["shard"] = 0
    return frame


def batches(videos, settings, on_device):
    dataset = ClipDataset(videos, settings, jpeg_on_device=on_device)
    dataset.set_epoch(3)
    loader = DataLoader(dataset, batch_size=4, collate_fn=collate_clips, num_workers=0)
    return [decode_clips(batch, "cpu") for batch in loader]


@pytest.mark.parametrize(
    "settings",
    [
        ClipSettings(num_frames=8, resize_short=64, crop_size=56, crops=3, views=2),
        ClipSettings(num_frames=8, resize_short=64, crop_size=56, training=True, seed=5),
    ],
    ids=["three-crops-two-views", "training"],
)
def test_clips_decoded_on_the_device_equal_the_host_clips(videos, settings):
    host, device = batches(videos, settings, False), batches(videos, settings, True)
    assert len(host) == len(device)
    for a, b in zip(host, device, strict=True):
        assert a["video_id"] == b["video_id"] and a["error"] == b["error"] == [""] * len(a["error"])
        assert a["clip"].shape == b["clip"].shape and b["clip"].dtype == torch.uint8
        diff = (a["clip"].int() - b["clip"].int()).abs()
        assert diff.max() <= MAX_LEVELS and diff.float().mean() <= MEAN_LEVELS
        assert torch.equal(a["boxes"], b["boxes"]) and torch.equal(a["mask"], b["mask"])
    # the crops differ between views and crops: a wrong geometry would show as a big diff
    first = host[0]["clip"]
    assert (first[0].int() - first[1].int()).abs().float().mean() > 5 or settings.training


def test_a_frame_that_does_not_decode_drops_its_clip_only(videos):
    bad = videos.iloc[1]["frame_dir"] + "/00005.jpg"  # one of t2's 4 uniform samples 0, 2, 4, 6
    with open(bad, "wb") as handle:  # passes the cheap marker check, fails to decode
        handle.write(b"\xff\xd8\xff\xc0\x00\x11\x08\x00\x78\x00\x5a\x03" + b"\x00" * 64 + b"\xff\xd9")
    settings = ClipSettings(num_frames=4, resize_short=64, crop_size=56)
    (batch,) = batches(videos, settings, True)
    assert batch["error"][0] == batch["error"][2] == ""
    assert "00005.jpg" in batch["error"][1]
    assert batch["clip"][1].max() == 0 and batch["clip"][0].max() > 0
    with pytest.raises(CorruptFrameError, match="00005.jpg"):
        decode_jpegs([np.fromfile(bad, np.uint8)], "cpu", paths=[bad])
