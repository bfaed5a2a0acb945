"""The ``finetune`` stage: fine-tune the backbone with a linear head on the train split.

The region-graph paper fine-tunes I3D on the target data before training the graph heads; a
frozen Kinetics backbone is a large part of the public reproductions' gap. Clips are sampled
as for the features (``sample_clip_frames``) with a random temporal offset and a random crop,
and never flipped: Something-Something labels depend on direction ("from left to right").

Checkpoints (``{checkpoint_dir}/epoch-{n}.pt``) hold everything to resume: model, optimiser,
scheduler, gradient scaler, RNG state, epoch and the resolved settings; a rerun resumes from
the newest one, and refuses one written under other settings. Clip randomness depends only on
(seed, epoch, video), so a resumed run gives the same weights as an uninterrupted one.

With ``epochs = 0`` the input weights are copied through, so the features stage always reads
``weights/finetuned/{stream}.pt``.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader
from tqdm import tqdm

from regiongraph.features.cache import BackboneSettings, load_backbone
from regiongraph.features.clips import ClipDataset, ClipSettings, resolve_device, to_network_input
from regiongraph.features.weights import load_weights, save_weights
from regiongraph.io import atomic_path, file_checksum
from regiongraph.models.i3d import I3DClassifier, freeze_batchnorm

log = logging.getLogger(__name__)

CHECKPOINT = re.compile(r"^epoch-(\d+)\.pt$")


@dataclass(frozen=True)
class FinetuneSettings:
    """Config ``backbone.finetune``."""

    epochs: int = 0
    lr: float = 0.005
    batch_size: int = 8
    freeze_bn: bool = True
    weight_decay: float = 1e-4
    momentum: float = 0.9
    dropout: float = 0.5
    workers: int = 2
    seed: int = 0


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
) -> dict[str, Any]:
    """Fine-tune, checkpointing every epoch; write the backbone weights to ``weights_out``."""
    state, meta = load_weights(weights_in, expect={"arch": backbone.arch, "stream": clip.stream})
    if settings.epochs == 0:
        log.info("backbone.finetune.epochs is 0: %s is used as it is", weights_in)
        save_weights(weights_out, state, {**meta, "finetune_epochs": 0})
        return {"epochs": 0}
    if not clip.training:
        raise ValueError("fine-tuning samples clips in training mode (training=True)")
    dev = resolve_device(device)
    videos = pd.read_parquet(index_path)
    num_classes = len(pd.read_csv(labels_path))
    torch.manual_seed(settings.seed)  # the head's init; a resumed run restores the RNG state
    model = I3DClassifier(
        load_backbone(weights_in, backbone, clip.stream), num_classes, settings.dropout
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
    amp = dev.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=amp)
    resolved = {
        "finetune": asdict(settings),
        "clip": asdict(clip),
        "backbone": asdict(backbone),
        "num_classes": num_classes,
        "weights_in": file_checksum(weights_in),
    }
    checkpoint_dir = Path(checkpoint_dir)
    start = resume(checkpoint_dir, resolved, model, optimizer, scheduler, scaler)
    dataset = ClipDataset(videos, clip, flow_paths=flow_paths)
    history = []
    for epoch in range(start, settings.epochs):
        dataset.set_epoch(epoch)
        order = torch.Generator().manual_seed(settings.seed * 1000 + epoch)
        loader = DataLoader(
            dataset,
            batch_size=settings.batch_size,
            shuffle=True,
            generator=order,
            num_workers=settings.workers,
            pin_memory=amp,
            drop_last=len(dataset) > settings.batch_size,
        )
        loss = train_one_epoch(model, loader, optimizer, scaler, clip, dev, amp, epoch)
        scheduler.step()
        history.append(loss)
        log.info("finetune epoch %d/%d: loss %.4f", epoch + 1, settings.epochs, loss)
        save_checkpoint(
            checkpoint_dir / f"epoch-{epoch + 1}.pt",
            model,
            optimizer,
            scheduler,
            scaler,
            epoch + 1,
            resolved,
        )
        if on_epoch_end is not None:
            on_epoch_end(epoch + 1)
    dataset.close()
    backbone_state = {k: v.detach().cpu() for k, v in model.backbone.state_dict().items()}
    save_weights(weights_out, backbone_state, {**meta, "finetune_epochs": settings.epochs})
    return {"epochs": settings.epochs, "losses": history}


def train_one_epoch(
    model, loader, optimizer, scaler, clip: ClipSettings, dev, amp: bool, epoch: int
):
    model.train()
    total, count = 0.0, 0
    for batch in tqdm(loader, desc=f"finetune epoch {epoch + 1}", unit="batch"):
        keep = torch.tensor([not e for e in batch["error"]])
        if not keep.any():
            continue
        x = to_network_input(batch["clip"][keep], clip.mean, clip.std, dev)
        labels = batch["label_index"][keep].to(dev)
        with torch.autocast("cuda", dtype=torch.float16, enabled=amp):
            loss = F.cross_entropy(model(x), labels)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        total += loss.item() * len(labels)
        count += len(labels)
    return total / max(count, 1)


def save_checkpoint(path, model, optimizer, scheduler, scaler, epoch: int, resolved: dict) -> None:
    state = {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "scaler": scaler.state_dict(),
        "epoch": epoch,
        "rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "settings": resolved,
    }
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def latest_checkpoint(checkpoint_dir: Path) -> Path | None:
    found = [
        (int(m.group(1)), p)
        for p in checkpoint_dir.glob("epoch-*.pt")
        if (m := CHECKPOINT.match(p.name))
    ]
    return max(found)[1] if found else None


def resume(checkpoint_dir: Path, resolved: dict, model, optimizer, scheduler, scaler) -> int:
    """Load the newest checkpoint in ``checkpoint_dir``; return the epoch to start from."""
    path = latest_checkpoint(checkpoint_dir)
    if path is None:
        return 0
    state = torch.load(path, map_location="cpu", weights_only=True)
    if state["settings"] != resolved:
        diffs = _diff(state["settings"], resolved)
        raise ValueError(
            f"{path}: checkpoint was written under other settings ({'; '.join(diffs)}); "
            f"delete {checkpoint_dir} to fine-tune from scratch"
        )
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    scaler.load_state_dict(state["scaler"])
    torch.set_rng_state(state["rng"])
    if state["cuda_rng"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda_rng"])
    log.info("resumed fine-tuning from %s (epoch %d)", path, state["epoch"])
    return int(state["epoch"])


def _diff(old: Any, new: Any, prefix: str = "") -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for key in sorted(set(old) | set(new)):
            out += _diff(old.get(key), new.get(key), f"{prefix}{key}.")
        return out
    return [] if old == new else [f"{prefix.rstrip('.')}: checkpoint {old!r}, now {new!r}"]
