"""The ``finetune`` stage: fine-tune the backbone with a linear head on the train split.

The region-graph paper fine-tunes I3D on the target data before training the graph heads; a
frozen Kinetics backbone is a large part of the public reproductions' gap. Clips are sampled
as for the features (``sample_clip_frames``) with a random temporal offset and a random crop,
and never flipped: Something-Something labels depend on direction ("from left to right").

Checkpoints (``{checkpoint_dir}/epoch-{n}.pt``, :mod:`regiongraph.train.checkpoints`) hold
everything to resume: model, optimiser, scheduler, RNG states, epoch, and the
run's fingerprint: the input weights' SHA-256, the train videos (ids, labels, frame counts),
the raw frames' source (the extracted archive parts' SHA-256), the flow shards' content
digests and every setting that changes the result. A rerun resumes the newest checkpoint of
the same run; another run's checkpoints are moved aside and fine-tuning starts afresh, saying
so. Clip randomness depends only on (seed, epoch, video), so a resumed run gives the same
weights as an uninterrupted one.

With ``epochs = 0`` the input weights are copied through, so the features stage always reads
``weights/finetuned/{stream}.pt``.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader
from tqdm import tqdm

from regiongraph.dataset.frames import jpeg_on_device
from regiongraph.dataset.index import read_index
from regiongraph.features.cache import BackboneSettings, load_backbone
from regiongraph.features.clips import (
    ClipDataset,
    ClipSettings,
    collate_clips,
    decode_clips,
    to_network_input,
)
from regiongraph.features.weights import load_weights, save_weights
from regiongraph.gpus import resolve_device
from regiongraph.io import file_checksum, shard_digest
from regiongraph.models.backbone import BackboneClassifier
from regiongraph.models.i3d import freeze_batchnorm
from regiongraph.train.checkpoints import (
    epoch_checkpoint,
    ids_digest,
    resume_run,
    rng_states,
    run_state,
    save_checkpoint,
    set_rng_states,
)

log = logging.getLogger(__name__)

# Settings that change how a run goes, not what it computes.
OPERATIONAL_SETTINGS = ("workers",)


@dataclass(frozen=True)
class FinetuneSettings:
    """Config ``backbone.finetune``."""

    epochs: int = 0
    lr: float = 0.005
    batch_size: int = 8
    freeze_bn: bool = True
    weight_decay: float = 1e-4
    clip_grad_norm: float | None = 40.0
    momentum: float = 0.9
    dropout: float = 0.5
    workers: int = 8
    seed: int = 0


def finetune_record(
    videos: pd.DataFrame,
    num_classes: int,
    weights_in: str | os.PathLike,
    clip: ClipSettings,
    backbone: BackboneSettings,
    settings: FinetuneSettings,
    flow_paths: Mapping[int, str | os.PathLike] | None = None,
    manifest_path: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """What a fine-tuning run is started from (its fingerprint's content)."""
    rows = videos.sort_values("video_id", kind="stable")
    frames = json.loads(Path(manifest_path).read_text()).get("parts") if manifest_path else None
    return {
        "finetune": {
            k: v for k, v in asdict(settings).items() if k not in OPERATIONAL_SETTINGS
        },
        "clip": asdict(clip),
        "backbone": asdict(backbone),
        "num_classes": num_classes,
        "weights_in": file_checksum(weights_in),
        "videos": {
            "count": len(rows),
            "digest": ids_digest(
                rows[["video_id", "label_index", "n_frames", "height", "width"]]
                .astype(str)
                .agg(",".join, axis=1)
            ),
        },
        "frames": frames,
        "flow": {int(k): shard_digest(v) for k, v in sorted((flow_paths or {}).items())},
    }


def finetune_backbone(
    index_path: str | os.PathLike,
    labels_path: str | os.PathLike,
    weights_in: str | os.PathLike,
    weights_out: str | os.PathLike,
    checkpoint_dir: str | os.PathLike,
    clip: ClipSettings,
    backbone: BackboneSettings,
    settings: FinetuneSettings,
    flow_paths: Mapping[int, str | os.PathLike] | None = None,
    device: str = "auto",
    on_epoch_end: Callable[[int], None] | None = None,
    manifest_path: str | os.PathLike | None = None,
    jpeg_decode: str = "auto",
) -> dict[str, Any]:
    """Fine-tune, checkpointing every epoch; write the backbone weights to ``weights_out``.

    ``manifest_path`` (``raw/manifest.json``) identifies the raw frames the clips are read
    from, so that a re-extracted archive starts a new run. ``jpeg_decode`` (config
    ``backbone.jpeg_decode``) says where RGB frames are decoded.
    """
    state, meta = load_weights(weights_in, expect={"arch": backbone.arch, "stream": clip.stream})
    if settings.epochs == 0:
        log.info("backbone.finetune.epochs is 0: %s is used as it is", weights_in)
        save_weights(weights_out, state, {**meta, "finetune_epochs": 0})
        return {"epochs": 0}
    if not clip.training:
        raise ValueError("fine-tuning samples clips in training mode (training=True)")
    dev = resolve_device(device)
    videos = read_index(index_path)
    num_classes = len(pd.read_csv(labels_path))
    run = run_state(
        finetune_record(
            videos, num_classes, weights_in, clip, backbone, settings, flow_paths, manifest_path
        )
    )
    torch.manual_seed(settings.seed)  # the head's init; a resumed run restores the RNG state
    model = BackboneClassifier(
        load_backbone(weights_in, backbone, clip.stream),
        backbone.channels,
        num_classes,
        settings.dropout,
    )
    model.to(dev)
    if settings.freeze_bn:
        freeze_batchnorm(model)
    optimizer = torch.optim.SGD(
        model.parameters(),
        lr=settings.lr,
        momentum=settings.momentum,
        weight_decay=settings.weight_decay,
        nesterov=True,
    )
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=settings.epochs)
    amp = dev.type == "cuda"  # bf16 autocast and channels_last_3d on CUDA: no loss scaling
    if amp:
        model = model.to(memory_format=torch.channels_last_3d)
    checkpoint_dir = Path(checkpoint_dir)
    start = 0
    resumed = resume_run(checkpoint_dir, run["record"], what=f"fine-tuning {clip.stream}")
    if resumed is not None:
        model.load_state_dict(resumed["model"])
        optimizer.load_state_dict(resumed["optimizer"])
        scheduler.load_state_dict(resumed["scheduler"])
        set_rng_states(resumed["rng"])
        start = int(resumed["epoch"])
    dataset = ClipDataset(
        videos, clip, flow_paths=flow_paths, jpeg_on_device=jpeg_on_device(jpeg_decode, dev)
    )
    history = []
    for epoch in range(start, settings.epochs):
        dataset.set_epoch(epoch)
        order = torch.Generator().manual_seed(settings.seed * 1000 + epoch)
        loader = DataLoader(
            dataset,
            batch_size=settings.batch_size,
            shuffle=True,
            generator=order,
            collate_fn=collate_clips,
            num_workers=settings.workers,
            pin_memory=amp,
            drop_last=len(dataset) > settings.batch_size,
        )
        loss = train_one_epoch(model, loader, optimizer, clip, dev, epoch, settings)
        scheduler.step()
        history.append(loss)
        log.info("finetune epoch %d/%d: loss %.4f", epoch + 1, settings.epochs, loss)
        save_checkpoint(
            epoch_checkpoint(checkpoint_dir, epoch + 1),
            {
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "epoch": epoch + 1,
                "rng": rng_states(),
                **run,
            },
        )
        if on_epoch_end is not None:
            on_epoch_end(epoch + 1)
    dataset.close()
    backbone_state = {k: v.detach().cpu() for k, v in model.backbone.state_dict().items()}
    save_weights(
        weights_out,
        backbone_state,
        {**meta, "finetune_epochs": settings.epochs, "finetune_fingerprint": run["fingerprint"]},
    )
    return {"epochs": settings.epochs, "losses": history}


def train_one_epoch(
    model, loader, optimizer, clip: ClipSettings, dev, epoch: int, settings: FinetuneSettings
):
    """One epoch of SGD over ``loader``; the mean loss. A loss that is not finite stops the
    run (a diverged backbone must never reach the features)."""
    model.train()
    total, count = 0.0, 0
    for step, batch in enumerate(tqdm(loader, desc=f"finetune epoch {epoch + 1}", unit="batch")):
        batch = decode_clips(batch, dev)
        keep = torch.tensor([not e for e in batch["error"]])
        if not keep.any():
            continue
        loss, labels = training_step_loss(model, batch, keep, clip, dev)
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"fine-tuning {clip.stream} diverged: the loss is {loss.detach().item()} at epoch "
                f"{epoch + 1}, step {step + 1}; lower backbone.finetune.lr ({settings.lr}) or "
                f"backbone.finetune.clip_grad_norm ({settings.clip_grad_norm})"
            )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if settings.clip_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(model.parameters(), settings.clip_grad_norm)
        optimizer.step()
        total += loss.item() * len(labels)
        count += len(labels)
    return total / max(count, 1)


def training_step_loss(model, batch: dict, keep: torch.Tensor, clip: ClipSettings, dev):
    """The loss of the kept clips of a batch, and their labels: on CUDA in bf16 autocast with
    channels_last_3d inputs (bf16 keeps fp32's range, so no loss scaling is needed)."""
    cuda = dev.type == "cuda"
    x = to_network_input(batch["clip"][keep.to(batch["clip"].device)], clip.mean, clip.std, dev)
    if cuda:
        x = x.contiguous(memory_format=torch.channels_last_3d)
    labels = batch["label_index"][keep].to(dev)
    with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=cuda):
        logits = model(x)
    return F.cross_entropy(logits.float(), labels), labels
