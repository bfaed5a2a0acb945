"""Benchmark of the fine-tuning stage: its own loader and training loop against the bare step.

End to end is :func:`regiongraph.train.finetune.finetune_backbone` on a synthetic train shard
(the stage's ClipDataset, DataLoader workers, JPEG decoding on the host or the device, random
offsets and crops, the SGD step, the epoch checkpoint), timed over its second epoch (the
first one warms up the loader and the kernels). The bare training step is the same model and
optimiser on random clips already on the device: the ceiling. Prints a markdown table.

    python bench/finetune.py                         # CPU, demo-size clips (8x64, width 8)
    python bench/finetune.py --gpu                   # CUDA: 32x224, batch 8/16, workers 8/16
    python bench/finetune.py --gpu --record          # ... and the best end-to-end figure into
                                                     # bench/measured.csv (read by bench/scale.py)
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import pandas as pd
import torch
import torch.nn.functional as F
from features import clip_stage_arguments, make_shard, record_best  # bench/features.py

from regiongraph.features.cache import BackboneSettings
from regiongraph.features.clips import ClipSettings
from regiongraph.features.weights import prepare_weights
from regiongraph.models.i3d import I3DClassifier, freeze_batchnorm
from regiongraph.train.finetune import FinetuneSettings, finetune_backbone

CLASSES = 10  # make_shard labels videos i % 10


def bare_step(backbone: BackboneSettings, clip: ClipSettings, batch: int, steps: int,
              device: torch.device) -> float:
    """Clips/s of forward + backward + SGD step on random clips already on ``device``."""
    cuda = device.type == "cuda"
    model = I3DClassifier(backbone.build("rgb"), CLASSES).to(device)
    freeze_batchnorm(model)
    if cuda:
        model = model.to(memory_format=torch.channels_last_3d)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9, nesterov=True)
    x = torch.randn(batch, 3, clip.num_frames, clip.crop_size, clip.crop_size, device=device)
    if cuda:
        x = x.contiguous(memory_format=torch.channels_last_3d)
    labels = torch.randint(0, CLASSES, (batch,), device=device)

    def step() -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cuda):
            logits = model(x)
        loss = F.cross_entropy(logits.float(), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 40.0)
        optimizer.step()

    step()  # warm-up
    if cuda:
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    if cuda:
        torch.cuda.synchronize()
    return steps * batch / (time.perf_counter() - start)


def end_to_end(root: Path, clips: int, clip: ClipSettings, backbone: BackboneSettings, batch: int,
               workers: int, device: str, jpeg_decode: str) -> float:
    """Clips/s of the stage's second epoch (loader, decoding, step and checkpoint)."""
    marks: list[float] = []
    out = root / f"finetuned-{batch}-{workers}-{jpeg_decode}.pt"
    finetune_backbone(
        root / "index.parquet", root / "labels.csv", root / "rgb.pt", out,
        root / f"ckpt-{batch}-{workers}-{jpeg_decode}", clip, backbone,
        FinetuneSettings(epochs=2, batch_size=batch, workers=workers),
        device=device, on_epoch_end=lambda epoch: marks.append(time.perf_counter()),
        jpeg_decode=jpeg_decode,
    )
    steps = clips // batch if clips > batch else 1
    return steps * batch / (marks[1] - marks[0])


def main() -> None:
    args = clip_stage_arguments(__doc__, "train videos (one clip each per epoch)")
    if args.gpu:
        device = torch.device("cuda")
        clip = ClipSettings(num_frames=32, resize_short=256, crop_size=224, training=True)
        backbone = BackboneSettings()
        clips, batches, workers = args.clips or 256, args.batches or [8, 16], args.workers or [8, 16]
        name = torch.cuda.get_device_name()
    else:
        device = torch.device("cpu")
        clip = ClipSettings(num_frames=8, resize_short=72, crop_size=64, training=True)
        backbone = BackboneSettings(width_per_group=8)
        clips, batches, workers = args.clips or 16, args.batches or [4], args.workers or [1]
        name = f"CPU, {torch.get_num_threads()} torch threads"
    decoders = args.jpeg_decode or (["host", "device"] if device.type == "cuda" else ["host"])
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        make_shard(root, clips, clip)
        pd.DataFrame({"label_index": range(CLASSES), "label": [f"class {i}" for i in range(CLASSES)]}).to_csv(
            root / "labels.csv", index=False
        )
        prepare_weights(None, backbone.arch, {"rgb": root / "rgb.pt"}, root,
                        width_per_group=backbone.width_per_group)
        print(f"\n{name}; clip {clip.num_frames}x{clip.crop_size}, width {backbone.width_per_group}, "
              f"{clips} train videos, frozen BatchNorm, bf16 + channels_last_3d on CUDA\n")
        print("| batch | workers | JPEG decoded on | bare step clips/s | end-to-end clips/s | end-to-end / bare step |")
        print("|---:|---:|---|---:|---:|---:|")
        best = 0.0
        for batch in batches:
            bare = bare_step(backbone, clip, batch, max(2, clips // batch), device)
            for w in workers:
                for where in decoders:
                    e2e = end_to_end(root, clips, clip, backbone, batch, w, device.type, where)
                    best = max(best, e2e)
                    print(f"| {batch} | {w} | {where} | {bare:.2f} | {e2e:.2f} | {e2e / bare:.2f} |", flush=True)
    if args.record:
        record_best("finetune_clips_per_s", args.gpu, best, device)


if __name__ == "__main__":
    main()
