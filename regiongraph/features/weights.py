"""The ``weights`` stage: backbone weights for both streams, converted and checksummed.

``backbone.weights`` is a URL (downloaded once, resumably, by
:func:`regiongraph.io.download.fetch_weights`), a local path, or null. A Caffe2 pickle
(``.pkl``) is converted by :mod:`regiongraph.models.caffe2`; a ``.pt``/``.pth`` file is taken
as a state dict of :class:`~regiongraph.models.i3d.I3DResNet` already (one this stage or the
finetune stage wrote, or a plain state dict). Null gives random weights, with a loud warning:
features from them only exercise the pipeline.

Each output is ``{"state_dict": ..., "meta": {...}}`` saved with ``torch.save`` and read back
with ``torch.load(weights_only=True)`` (no pickled code). ``meta`` records the arch, stream,
width, the source and its SHA-256, and whether the weights are random or fine-tuned. The flow
stream's weights are the RGB ones with conv1 cross-modality initialised.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import torch

from regiongraph.io import atomic_path, code_version, file_checksum
from regiongraph.io.download import fetch_weights
from regiongraph.models.caffe2 import convert_caffe2_blobs, cross_modality_init, load_caffe2_pickle
from regiongraph.models.i3d import build_backbone
from regiongraph.sources import is_url

log = logging.getLogger(__name__)

RANDOM_WEIGHTS_WARNING = (
    "\n" + "!" * 78 + "\n"
    "!!! backbone.weights is null: the I3D backbone gets RANDOM weights.\n"
    "!!! Its features only exercise the pipeline; they carry no Kinetics knowledge and the\n"
    "!!! region-graph results will be near chance. For real runs set backbone.weights to\n"
    "!!! i3d_baseline_32x2_IN_pretrain_400k.pkl (or the non-local one), a path or a URL.\n"
    + "!"
    * 78
)


def save_weights(path: str | os.PathLike, state_dict: dict, meta: dict[str, Any]) -> None:
    """Write ``{"state_dict", "meta"}`` atomically."""
    with atomic_path(path) as tmp:
        torch.save({"state_dict": state_dict, "meta": meta}, tmp)


def load_weights(
    path: str | os.PathLike, expect: dict[str, Any] | None = None
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """State dict and meta of a weights file (``weights_only=True``); check ``expect``."""
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise ValueError(f"{path}: not a readable weights file ({error})") from error
    if not isinstance(data, dict) or "state_dict" not in data:
        return data, {}  # a plain state dict
    meta = data.get("meta", {})
    for key, value in (expect or {}).items():
        if key in meta and meta[key] != value:
            raise ValueError(
                f"{path}: weights have {key} = {meta[key]!r}, the config wants {value!r}"
            )
    return data["state_dict"], meta


def prepare_weights(
    source: str | None,
    arch: str,
    outputs: dict[str, str | os.PathLike],
    cache_dir: str | os.PathLike,
    width_per_group: int = 64,
    seed: int = 0,
    sha256: str | None = None,
) -> dict[str, Any]:
    """Write the backbone weights of each stream in ``outputs`` (``{"rgb": path, ...}``).

    Returns the meta dict common to the outputs.
    """
    torch.manual_seed(seed)  # random init is reproducible; loaded weights overwrite it
    model = build_backbone(arch, "rgb", width_per_group=width_per_group)
    meta: dict[str, Any] = {
        "arch": arch,
        "width_per_group": width_per_group,
        "source": source,
        "source_checksum": None,
        "random_init": source is None,
        "finetune_epochs": 0,
        "code_version": code_version(),
    }
    if source is None:
        log.warning(RANDOM_WEIGHTS_WARNING)
        state = model.state_dict()
    else:
        if width_per_group != 64:
            raise ValueError(
                f"backbone.width_per_group is {width_per_group}: pretrained weights need 64"
            )
        path = resolve_source(source, cache_dir, sha256)
        meta["source_checksum"] = file_checksum(path)
        log.info("backbone weights: %s (%s)", path, meta["source_checksum"])
        if path.suffix in (".pt", ".pth"):
            loaded, _ = load_weights(path)
            state = _rgb_state(loaded, model, str(path))
        else:
            state = convert_caffe2_blobs(load_caffe2_pickle(path), model, source=str(path))
    model.load_state_dict(state, strict=True)  # one more check before anything is written
    for stream, output in outputs.items():
        stream_state = state if stream == "rgb" else cross_modality_init(state, channels=2)
        save_weights(output, stream_state, {**meta, "stream": stream})
        log.info("wrote %s weights to %s", stream, output)
    return meta


def resolve_source(source: str, cache_dir: str | os.PathLike, sha256: str | None = None) -> Path:
    """The local file of ``backbone.weights`` (checked against ``backbone.sha256`` when set);
    a path that does not exist names the key."""
    try:
        return fetch_weights(source, cache_dir, sha256=sha256)
    except FileNotFoundError as error:
        raise FileNotFoundError(
            f"backbone.weights: {source} does not exist (give a path to the Caffe2 pickle, "
            "a URL, or null for random weights)"
        ) from error
    except OSError as error:
        if is_url(source):
            raise OSError(f"backbone.weights: download of {source} failed ({error})") from error
        raise


def _rgb_state(loaded: dict, model: torch.nn.Module, source: str) -> dict:
    """An RGB state dict from a .pt: flow weights (2-channel conv1) are refused."""
    conv1 = loaded.get("stem.conv.weight")
    if conv1 is not None and conv1.shape[1] != 3:
        raise ValueError(f"{source}: conv1 has {conv1.shape[1]} input channels; give RGB weights")
    missing, unexpected = model.load_state_dict(loaded, strict=False)
    if missing or unexpected:
        raise ValueError(
            f"{source}: does not match {type(model).__name__}: missing {missing}, unexpected {unexpected}"
        )
    return dict(loaded)
