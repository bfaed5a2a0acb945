"""Train one GCN head on cached features, with a checkpoint every epoch and automatic resume.

The workflow runs it per model and stream (``rules/gcn.smk``)::

    snakemake --cores 2 train                     # every model of gcn.models, every stream
    snakemake --cores 2 results/gcn/joint/rgb/model.pt
    snakemake --cores 2 train --configfile config/config.yaml resume.yaml
        # resume.yaml holding "gcn: {resume_from: 4}" restarts from epoch 4's checkpoint

and from Python::

    from regiongraph.train.loop import TrainSettings, train_model
    train_model(TrainSettings(model="joint", epochs=10), train_shards, val_shards,
                num_classes=174, out_dir="results/gcn/joint/rgb")

``out_dir/checkpoints/epoch-{n}.pt`` holds everything to resume after epoch ``n`` (model,
optimiser, scheduler, the python/numpy/torch RNG states, the log so far, the best validation
top-1, the resolved settings) and the run's fingerprint: the content digests of its feature
shards, its video ids and every setting that changes the result
(:mod:`regiongraph.train.checkpoints`). A rerun resumes the latest checkpoint of the same run;
checkpoints of another run (new features, a changed setting) are moved aside and training
starts afresh, saying so. ``out_dir/train_log.csv`` has one row per epoch; ``out_dir/model.pt``
the final weights, the fingerprint, and what is needed to rebuild the head.
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from regiongraph.features.storage import SHARED_SETTINGS
from regiongraph.gpus import resolve_device
from regiongraph.io import write_csv
from regiongraph.models.gcn import MODEL_NAMES, build_head, set_input_statistics
from regiongraph.train.checkpoints import (
    epoch_checkpoint,
    ids_digest,
    keep_latest,
    resume_run,
    rng_states,
    run_state,
    save_checkpoint,
)
from regiongraph.train.data import (
    FeatureShardDataset,
    batch_to_device,
    feature_loader,
    feature_statistics,
)

log = logging.getLogger(__name__)

LOG_COLUMNS = [
    "epoch",
    "train_loss",
    "train_top1",
    "train_top5",
    "val_loss",
    "val_top1",
    "val_top5",
    "lr",
    "seconds",
]
# Settings that only change how a run goes, not what it computes: they may differ between the
# run that wrote a checkpoint and the one resuming it.
OPERATIONAL_SETTINGS = ("device", "num_workers", "resume_from", "keep_checkpoints", "cache_features")


@dataclass
class TrainSettings:
    """Defaults of a training run; the ``gcn:`` section of the config overrides them."""

    model: str = "joint"  # baseline | similarity | spatiotemporal | joint
    stream: str = "rgb"  # rgb | flow: which feature stream
    epochs: int = 10
    batch_size: int = 8
    optimizer: str = "adamw"  # adamw | sgd
    lr: float = 1e-3
    momentum: float = 0.9  # sgd only
    weight_decay: float = 0.05
    lr_schedule: str = "cosine"  # cosine | step | constant
    lr_steps: list[int] = field(default_factory=list)  # step: epochs after which lr *= lr_gamma
    lr_gamma: float = 0.1
    warmup_epochs: float = 1.0  # linear warm-up from 0, in (fractional) epochs
    dropout: float = 0.5
    hidden: int = 512  # node channels after the 2048 -> 512 reduction
    layers: int = 3  # graph convolution layers per branch
    box_geometry: bool = False  # add the Something-Else box coordinate embedding
    standardise: bool = True  # scale inputs by the training features' per-channel mean and std
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda
    num_workers: int = 0  # data loader worker processes
    cache_features: str = "auto"  # auto | always | never: keep the features in memory
    resume_from: int | None = None  # epoch whose checkpoint to restart from; None: the latest
    keep_checkpoints: int | None = 2  # keep the latest N epoch checkpoints; None: all

    def __post_init__(self) -> None:
        if self.model not in MODEL_NAMES:
            raise ValueError(f"gcn model {self.model!r} is not one of {MODEL_NAMES}")
        if self.optimizer not in ("sgd", "adamw"):
            raise ValueError(f"gcn optimizer {self.optimizer!r} is not sgd or adamw")
        if self.lr_schedule not in ("cosine", "step", "constant"):
            raise ValueError(
                f"gcn lr_schedule {self.lr_schedule!r} is not cosine, step or constant"
            )
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError(
                f"gcn epochs ({self.epochs}) and batch_size ({self.batch_size}) must be positive"
            )
        self.lr_steps = [int(step) for step in self.lr_steps]


@dataclass
class EpochStats:
    loss: float
    top1: float
    top5: float
    n_videos: int


@dataclass
class Predictions:
    """Outputs of :func:`evaluate` in dataset order."""

    stats: EpochStats
    video_ids: list[str]
    labels: np.ndarray  # (n,) int64, -1 where unknown
    logits: np.ndarray  # (n, classes) float32


class LearningRateSchedule:
    """Multiplier of the base learning rate at optimiser step ``step`` (for ``LambdaLR``).

    Linear warm-up over ``warmup_epochs``, then cosine decay to 0 at the end of training,
    steps of ``gamma`` after each epoch in ``steps``, or constant.
    """

    def __init__(self, settings: TrainSettings, steps_per_epoch: int) -> None:
        self.kind = settings.lr_schedule
        self.steps_per_epoch = steps_per_epoch
        self.epochs = settings.epochs
        self.warmup = settings.warmup_epochs
        self.milestones = list(settings.lr_steps)
        self.gamma = settings.lr_gamma

    def __call__(self, step: int) -> float:
        epoch = step / self.steps_per_epoch
        if self.warmup > 0 and epoch < self.warmup:
            return (epoch + 1 / self.steps_per_epoch) / self.warmup
        if self.kind == "cosine":
            span = max(self.epochs - self.warmup, 1e-8)
            return 0.5 * (1 + math.cos(math.pi * min((epoch - self.warmup) / span, 1.0)))
        if self.kind == "step":
            return self.gamma ** sum(epoch >= milestone for milestone in self.milestones)
        return 1.0


def topk_correct(logits: torch.Tensor, labels: torch.Tensor, k: int) -> torch.Tensor:
    """How many rows have their label among the ``k`` highest logits (a 0-d tensor, so that
    a GPU loop need not wait for it)."""
    k = min(k, logits.shape[-1])
    top = logits.topk(k, dim=-1).indices
    return (top == labels[:, None]).any(dim=-1).sum()


def _forward(model: nn.Module, batch: dict[str, Any]) -> torch.Tensor:
    return model(batch["global"], batch.get("roi"), batch.get("boxes"), batch.get("mask"))


@torch.no_grad()
def average_views(
    video_ids: Sequence[str], labels: torch.Tensor, logits: torch.Tensor
) -> tuple[list[str], torch.Tensor, torch.Tensor]:
    """One row per video: the mean of its views' softmax (the multi-view test protocol), as
    log-probabilities, in order of each video's first view. One view per video gives its
    log-softmax, which ranks and scores like the logits."""
    log_probs = F.log_softmax(logits.float(), dim=-1)
    first: dict[str, int] = {}  # video -> its first row
    for row, video in enumerate(video_ids):
        first.setdefault(video, row)
    if len(first) == len(video_ids):
        return list(video_ids), labels, log_probs
    slot = {video: i for i, video in enumerate(first)}
    group = torch.tensor([slot[video] for video in video_ids], dtype=torch.long)
    sums = torch.zeros(len(first), logits.shape[-1], dtype=torch.float64)
    sums.index_add_(0, group, log_probs.double().exp())
    counts = torch.bincount(group, minlength=len(first))[:, None]
    averaged = (sums / counts).clamp_min(torch.finfo(torch.float64).tiny).log().float()
    return list(first), labels[torch.tensor(list(first.values()))], averaged


@torch.no_grad()
def evaluate_heads(
    models: Sequence[nn.Module],
    loader: torch.utils.data.DataLoader,
    device: torch.device,
    description: str = "validation",
) -> list[Predictions]:
    """Scores of every model for every video of ``loader`` (one pass: each batch read once),
    a video's views averaged, in order of appearance; loss/top-1/top-5 where labelled.
    ``logits`` are log-probabilities."""
    for model in models:
        model.eval()
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")
    video_ids: list[str] = []
    labels: list[torch.Tensor] = []
    logits: list[list[torch.Tensor]] = [[] for _ in models]
    for batch in tqdm(loader, desc=description, leave=False, mininterval=5.0):
        batch = batch_to_device(batch, device)
        with autocast:
            for rows, model in zip(logits, models, strict=True):
                rows.append(_forward(model, batch).float().cpu())
        labels.append(batch["label"].cpu())
        video_ids.extend(batch["video_id"])
    all_labels = torch.cat(labels) if labels else torch.zeros(0, dtype=torch.long)
    return [_predictions(video_ids, all_labels, rows) for rows in logits]


def _predictions(video_ids, labels: torch.Tensor, rows: list[torch.Tensor]) -> Predictions:
    all_logits = torch.cat(rows) if rows else torch.zeros(0, 0)
    ids, labels, all_logits = average_views(video_ids, labels, all_logits)
    labelled = labels >= 0
    n = int(labelled.sum())
    if n:
        scored, truth = all_logits[labelled], labels[labelled]
        stats = EpochStats(
            float(F.nll_loss(scored, truth)),
            int(topk_correct(scored, truth, 1)) / n,
            int(topk_correct(scored, truth, 5)) / n,
            n,
        )
    else:
        stats = EpochStats(float("nan"), float("nan"), float("nan"), 0)
    return Predictions(stats, ids, labels.numpy(), all_logits.numpy())


def evaluate(
    model: nn.Module,
    loader: torch.utils.data.DataLoader,
    device: torch.device,
    description: str = "evaluate",
) -> Predictions:
    """:func:`evaluate_heads` of one model."""
    return evaluate_heads([model], loader, device, description)[0]


def _architecture(
    settings: TrainSettings, dataset: FeatureShardDataset, num_classes: int
) -> dict[str, Any]:
    return {
        "model": settings.model,
        "stream": settings.stream,
        "num_classes": num_classes,
        "in_channels": dataset.channels,
        "hidden": settings.hidden,
        "layers": settings.layers,
        "box_geometry": settings.box_geometry,
        "image_size": float(dataset.settings.get("crop_size") or 224),
        "num_frames": dataset.num_frames,
        "boxes_per_frame": dataset.boxes_per_frame,
    }


def build_model(architecture: dict[str, Any], dropout: float = 0.5) -> nn.Module:
    """The head described by a checkpoint's ``architecture`` record."""
    return build_head(
        architecture["model"],
        architecture["in_channels"],
        architecture["num_classes"],
        hidden=architecture["hidden"],
        layers=architecture["layers"],
        dropout=dropout,
        box_geometry=architecture["box_geometry"],
        image_size=architecture["image_size"],
    )


def _optimizer(model: nn.Module, settings: TrainSettings) -> torch.optim.Optimizer:
    if settings.optimizer == "sgd":
        return torch.optim.SGD(
            model.parameters(),
            lr=settings.lr,
            momentum=settings.momentum,
            weight_decay=settings.weight_decay,
        )
    return torch.optim.AdamW(model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def load_datasets(
    train_paths: Sequence[str | Path],
    val_paths: Sequence[str | Path],
    num_classes: int,
    expect: dict[str, Any] | None = None,
    regions: bool = True,
) -> tuple[FeatureShardDataset, FeatureShardDataset]:
    """Open the train and validation shards and check them before any training starts."""
    train_set = FeatureShardDataset(train_paths, expect=expect, regions=regions)
    val_set = FeatureShardDataset(val_paths, expect=expect, regions=regions)
    if len(train_set) == 0:
        raise ValueError(f"the train split has no videos in {[str(p) for p in train_paths]}")
    if len(val_set) == 0:
        raise ValueError(
            f"the validation split has no videos in {[str(p) for p in val_paths]}: training "
            "needs validation videos to report on; check index/validation.parquet and index/dropped.csv"
        )
    mismatch = [
        f"{key}: {train_set.settings.get(key)!r} (train) vs {val_set.settings.get(key)!r} (validation)"
        for key in SHARED_SETTINGS
        if train_set.settings.get(key) != val_set.settings.get(key)
    ]
    if mismatch or train_set.shapes != val_set.shapes:
        raise ValueError(
            "train and validation features were produced differently: "
            + ("; ".join(mismatch) or f"shapes {train_set.shapes} vs {val_set.shapes}")
        )
    for name, dataset in (("train", train_set), ("validation", val_set)):
        if len(dataset) and dataset.labels.max() >= num_classes:
            video = dataset.video_ids[int(np.argmax(dataset.labels))]
            raise ValueError(
                f"{name} video {video!r} has label_index {int(dataset.labels.max())} but labels.csv "
                f"lists {num_classes} classes"
            )
    return train_set, val_set


def run_record(
    settings: TrainSettings,
    train_set: FeatureShardDataset,
    val_set: FeatureShardDataset,
    architecture: dict[str, Any],
) -> dict[str, Any]:
    """What a training run is started from (:mod:`regiongraph.train.checkpoints`): the
    settings that change its result, the head, and per split the feature shards' content
    digests and the video ids."""
    return {
        "settings": {
            key: value
            for key, value in asdict(settings).items()
            if key not in OPERATIONAL_SETTINGS
        },
        "architecture": architecture,
        **{
            name: {
                "shards": dataset.digests,
                "videos": len(dataset),
                "video_ids": ids_digest(dataset.video_ids),
            }
            for name, dataset in (("train", train_set), ("validation", val_set))
        },
    }


@contextmanager
def own_rng(states: dict[str, Any]):
    """Run the block on the torch (and CUDA) RNG ``states`` of one head, and keep where it
    leaves them: heads trained side by side draw the same dropout masks as each alone."""
    saved = torch.get_rng_state()
    saved_cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])
    try:
        yield
    finally:
        states["torch"] = torch.get_rng_state()
        if saved_cuda is not None:
            states["cuda"] = torch.cuda.get_rng_state_all()
            torch.cuda.set_rng_state_all(saved_cuda)
        torch.set_rng_state(saved)


@dataclass
class TrainingRun:
    """The state of one head's run as it goes: what a checkpoint saves and restores."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    rng: dict[str, Any]  # this run's own RNG states (see own_rng)
    rows: list[dict[str, Any]] = field(default_factory=list)
    epoch: int = 0
    best_top1: float = -1.0
    best_epoch: int = 0

    def restore(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.rng = dict(state["rng"])
        self.epoch = int(state["epoch"])
        self.rows = [row for row in state["log"] if row["epoch"] <= self.epoch]
        self.best_top1, self.best_epoch = state["best_top1"], state["best_epoch"]

    def checkpoint(self, run: dict[str, Any], architecture, features, settings) -> dict[str, Any]:
        return {
            "epoch": self.epoch,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "rng": self.rng,
            "best_top1": self.best_top1,
            "best_epoch": self.best_epoch,
            "architecture": architecture,
            "features": features,
            "settings": asdict(settings),
            "log": self.rows,
            **run,
        }


def _new_run(
    settings: TrainSettings, architecture: dict[str, Any], train_set: FeatureShardDataset, device
) -> TrainingRun:
    _seed_everything(settings.seed)
    model = build_model(architecture, settings.dropout)
    if settings.standardise:
        set_input_statistics(model, feature_statistics(train_set))
    model = model.to(device)
    optimizer = _optimizer(model, settings)
    steps_per_epoch = math.ceil(len(train_set) / settings.batch_size)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, LearningRateSchedule(settings, steps_per_epoch)
    )
    return TrainingRun(model, optimizer, scheduler, rng_states())


def _epoch_row(epoch, train_stats: EpochStats, val_stats: EpochStats, lr, seconds) -> dict:
    return {
        "epoch": epoch,
        "train_loss": train_stats.loss,
        "train_top1": train_stats.top1,
        "train_top5": train_stats.top5,
        "val_loss": val_stats.loss,
        "val_top1": val_stats.top1,
        "val_top5": val_stats.top5,
        "lr": lr,
        "seconds": round(seconds, 3),
    }


@dataclass
class Head:
    """One head of a training job: its settings, its files, its run record and its state."""

    settings: TrainSettings
    out_dir: Path
    architecture: dict[str, Any]
    features: dict[str, Any]
    run: dict[str, Any]  # record and fingerprint (regiongraph.train.checkpoints)
    state: TrainingRun
    failed: str | None = None  # why it stopped (a diverged loss), if it did
    seconds: float = 0.0  # its compute time in the current epoch
    totals: torch.Tensor | None = None  # loss, top-1, top-5 sums of the current epoch
    seen: int = 0

    @property
    def name(self) -> str:
        return f"{self.settings.model}/{self.settings.stream}"

    @property
    def checkpoint_dir(self) -> Path:
        return self.out_dir / "checkpoints"

    def step(self, batch: dict[str, Any], device: torch.device) -> None:
        """One optimiser step of this head on ``batch`` (already on ``device``)."""
        started = time.perf_counter()
        model, labels = self.state.model, batch["label"]
        autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")
        with own_rng(self.state.rng), autocast:
            logits = _forward(model, batch)
        loss = F.cross_entropy(logits.float(), labels)
        self.state.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.state.optimizer.step()
        self.state.scheduler.step()
        count = labels.shape[0]
        with torch.no_grad():  # sums stay on the device: one synchronisation per epoch
            self.totals += torch.stack(
                [loss.detach() * count, topk_correct(logits, labels, 1), topk_correct(logits, labels, 5)]
            ).double()
        self.seen += count
        self.seconds += time.perf_counter() - started


def train_heads_one_epoch(
    heads: Sequence[Head], loader: torch.utils.data.DataLoader, device: torch.device, epoch: int
) -> dict[str, EpochStats]:
    """One pass over ``loader``: each batch is read once and steps every head."""
    for head in heads:
        head.state.model.train()
        head.totals = torch.zeros(3, dtype=torch.float64, device=device)
        head.seen, head.seconds = 0, 0.0
    for batch in tqdm(loader, desc=f"epoch {epoch}", leave=False, mininterval=5.0):
        batch = batch_to_device(batch, device)
        for head in heads:
            head.step(batch, device)
    stats = {}
    for head in heads:
        loss, top1, top5 = (head.totals / max(head.seen, 1)).tolist()
        stats[head.name] = EpochStats(loss, top1, top5, head.seen)
    return stats


def _open_head(
    settings: TrainSettings,
    out_dir: Path,
    train_set: FeatureShardDataset,
    val_set: FeatureShardDataset,
    num_classes: int,
    device,
) -> Head:
    """A head resumed from its own run's latest checkpoint, or new."""
    architecture = _architecture(settings, train_set, num_classes)
    features = {key: train_set.settings.get(key) for key in SHARED_SETTINGS}
    run = run_state(run_record(settings, train_set, val_set, architecture))
    state = _new_run(settings, architecture, train_set, device)
    head = Head(settings, Path(out_dir), architecture, features, run, state)
    resumed = resume_run(head.checkpoint_dir, run["record"], settings.resume_from, head.name)
    if resumed is not None:
        state.restore(resumed)
    return head


def _finish_epoch(head: Head, epoch: int, train_stats: EpochStats, val_stats: EpochStats, lr) -> None:
    """Record an epoch of ``head``: its log row, its checkpoint, its train_log.csv."""
    state = head.state
    if val_stats.top1 > state.best_top1:
        state.best_top1, state.best_epoch = val_stats.top1, epoch
    state.epoch = epoch
    state.rows.append(_epoch_row(epoch, train_stats, val_stats, lr, head.seconds))
    log.info(
        "%s epoch %d: %s",
        head.name,
        epoch,
        {k: round(v, 4) if isinstance(v, float) else v for k, v in state.rows[-1].items()},
    )
    save_checkpoint(
        epoch_checkpoint(head.checkpoint_dir, epoch),
        state.checkpoint(head.run, head.architecture, head.features, head.settings),
    )
    write_csv(head.out_dir / "train_log.csv", pd.DataFrame(state.rows, columns=LOG_COLUMNS))
    keep_latest(head.checkpoint_dir, head.settings.keep_checkpoints)


def _save_model(head: Head) -> Path:
    state = head.state
    write_csv(head.out_dir / "train_log.csv", pd.DataFrame(state.rows, columns=LOG_COLUMNS))
    model_path = head.out_dir / "model.pt"
    save_checkpoint(
        model_path,
        {
            "model": state.model.state_dict(),
            "architecture": head.architecture,
            "features": head.features,
            "settings": asdict(head.settings),
            "epoch": head.settings.epochs,
            "best_top1": state.best_top1,
            "best_epoch": state.best_epoch,
            **head.run,
        },
    )
    return model_path


def train_heads(
    heads_settings: Sequence[TrainSettings],
    train_paths: Sequence[str | Path],
    val_paths: Sequence[str | Path],
    num_classes: int,
    out_dirs: Sequence[str | Path],
    expect: dict[str, Any] | None = None,
) -> list[Path]:
    """Train (or resume) several heads on one stream's features in one pass.

    Each batch is read once and steps every head; each head keeps its own optimiser, RNG
    stream, checkpoints, log and ``model.pt`` in its ``out_dirs`` entry, exactly as if it
    were trained alone. A head that diverges stops (its checkpoints stay) while the others
    go on; the job then fails naming it. Returns the ``model.pt`` paths.
    """
    if len(heads_settings) != len(out_dirs) or not heads_settings:
        raise ValueError("one output folder per head, and at least one head")
    first = heads_settings[0]
    if any((s.epochs, s.batch_size, s.seed, s.stream) != (first.epochs, first.batch_size, first.seed, first.stream) for s in heads_settings):
        raise ValueError("heads trained in one pass share epochs, batch_size, seed and stream")
    regions = any(s.model != "baseline" for s in heads_settings)  # the baseline reads only global
    train_set, val_set = load_datasets(train_paths, val_paths, num_classes, expect, regions)
    for dataset, what in ((train_set, "train"), (val_set, "validation")):
        dataset.cache_in_memory(first.cache_features, what)
    device = resolve_device(first.device)
    heads = [
        _open_head(settings, Path(out_dir), train_set, val_set, num_classes, device)
        for settings, out_dir in zip(heads_settings, out_dirs, strict=True)
    ]
    log.info(
        "training %s on %s features: %d train / %d validation rows, %d classes, %s nodes, "
        "device %s, %d epochs",
        ", ".join(f"{h.settings.model} (from epoch {h.state.epoch + 1})" for h in heads),
        first.stream,
        len(train_set),
        len(val_set),
        num_classes,
        f"{train_set.num_frames}x{train_set.boxes_per_frame}",
        device,
        first.epochs,
    )
    pin = device.type == "cuda"
    val_loader = feature_loader(val_set, first.batch_size, num_workers=first.num_workers, pin_memory=pin)
    train_loader = feature_loader(
        train_set, first.batch_size, shuffle=True, seed=first.seed, num_workers=first.num_workers,
        pin_memory=pin,
    )
    start = min(head.state.epoch for head in heads) + 1
    for epoch in tqdm(range(start, first.epochs + 1), desc=first.stream, mininterval=5.0):
        active = [h for h in heads if h.failed is None and h.state.epoch < epoch]
        if not active:
            break
        rates = {h.name: h.state.optimizer.param_groups[0]["lr"] for h in active}
        train_loader.sampler.set_epoch(epoch)
        stats = train_heads_one_epoch(active, train_loader, device, epoch)
        for head in active:
            if not math.isfinite(stats[head.name].loss):
                head.failed = (
                    f"training {head.name} diverged: the mean train loss of epoch {epoch} is "
                    f"{stats[head.name].loss}; lower gcn.lr ({head.settings.lr})"
                )
                log.error("%s; the other heads go on", head.failed)
        active = [h for h in active if h.failed is None]
        validation = evaluate_heads([h.state.model for h in active], val_loader, device)
        for head, predictions in zip(active, validation, strict=True):
            _finish_epoch(head, epoch, stats[head.name], predictions.stats, rates[head.name])
    paths = [_save_model(head) for head in heads if head.failed is None]
    train_set.close()
    val_set.close()
    failed = [head.failed for head in heads if head.failed is not None]
    if failed:
        raise FloatingPointError("; ".join(failed))
    return paths


def train_model(
    settings: TrainSettings,
    train_paths: Sequence[str | Path],
    val_paths: Sequence[str | Path],
    num_classes: int,
    out_dir: str | Path,
    expect: dict[str, Any] | None = None,
) -> Path:
    """Train (or resume) one head; write checkpoints, ``train_log.csv`` and ``model.pt``."""
    (path,) = train_heads([settings], train_paths, val_paths, num_classes, [out_dir], expect)
    return path


def load_model(
    path: str | Path, device: torch.device | str = "cpu"
) -> tuple[nn.Module, dict[str, Any]]:
    """The trained head of ``model.pt`` in eval mode, and its record (architecture, features...)."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    model = build_model(state["architecture"], state["settings"]["dropout"])
    model.load_state_dict(state["model"])
    return model.to(device).eval(), state
