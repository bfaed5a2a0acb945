"""GPU check of JPEG decoding on the device (nvJPEG) against the host path (OpenCV).

    PYTHONPATH=. python bench/gpu_jpeg_check.py

Writes SSv1-sized synthetic frames (100 px high, quality 90, baseline and progressive), then
compares, frame by frame and clip by clip, what the host path gives (``cv2.imdecode``, then
``cv2.resize``) with what the device path gives (``torchvision.io.decode_jpeg`` on CUDA,
resize and crop there): the largest and mean difference in levels of 255. The tests run the
same comparison on the CPU (libjpeg) and require at most 2 levels; nvJPEG's IDCT and chroma
upsampling may differ a little more, which this script measures. Prints a markdown table.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader

from regiongraph.dataset.frames import decode_jpegs, read_frame
from regiongraph.features.clips import ClipDataset, ClipSettings, collate_clips, decode_clips


def main() -> None:
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    rng = np.random.default_rng(0)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for v in range(8):
            folder = root / f"{v:05d}"
            folder.mkdir()
            h, w, n = 100, int(rng.integers(120, 177)), int(rng.integers(30, 50))
            yy, xx = np.mgrid[0:h, 0:w]
            for f in range(n):
                image = np.stack([(xx * 1.3 + 5 * f) % 256, (yy * 2.1) % 256, (xx + yy + 3 * f) % 256], -1)
                image = (image + rng.normal(0, 6, image.shape)).clip(0, 255).astype(np.uint8)
                flags = [cv2.IMWRITE_JPEG_QUALITY, 90, cv2.IMWRITE_JPEG_PROGRESSIVE, v % 2]
                cv2.imwrite(str(folder / f"{f + 1:05d}.jpg"), image, flags)
            rows.append((f"{v:05d}", 0, n, str(folder), 0))
        paths = sorted(root.glob("*/*.jpg"))
        datas = [np.fromfile(p, np.uint8) for p in paths]
        decoded = decode_jpegs(datas, device)
        gray = decode_jpegs(datas, device, grayscale=True)
        diff = np.concatenate([
            np.abs(d.permute(1, 2, 0).cpu().numpy().astype(int) - read_frame(p)).ravel()
            for d, p in zip(decoded, paths, strict=True)
        ])
        gdiff = np.concatenate([
            np.abs(g[0].cpu().numpy().astype(int) - read_frame(p, grayscale=True)).ravel()
            for g, p in zip(gray, paths, strict=True)
        ])
        videos = pd.DataFrame(rows, columns=["video_id", "label_index", "n_frames", "frame_dir", "shard"])
        settings = ClipSettings(num_frames=32, resize_short=256, crop_size=224, crops=3)
        clips = []
        for on_device in (False, True):
            loader = DataLoader(ClipDataset(videos, settings, jpeg_on_device=on_device), batch_size=8,
                                collate_fn=collate_clips)
            clips.append(torch.cat([decode_clips(b, device)["clip"].cpu() for b in loader]))
        cdiff = (clips[0].int() - clips[1].int()).abs()
    name = torch.cuda.get_device_name() if device.type == "cuda" else "cpu (no CUDA: libjpeg)"
    print(f"\n{name}, torch {torch.__version__}, {len(paths)} frames, {len(rows)} videos x 3 crops\n")
    print("| what | max difference (levels) | mean difference | share of values that differ |")
    print("|---|---:|---:|---:|")
    for what, d in (("RGB frames, decode_jpeg vs cv2.imdecode", diff),
                    ("grayscale frames (flow)", gdiff),
                    ("32x224 clips, device path vs host path", cdiff.numpy().ravel())):
        print(f"| {what} | {d.max()} | {d.mean():.3f} | {(d > 0).mean():.1%} |")


if __name__ == "__main__":
    main()
