"""The ``weights`` stage: backbone weights for both streams, converted and checksummed.

``backbone.weights`` is a URL (downloaded once, resumably, by
:func:`regiongraph.io.download.fetch_weights`), a local path, or null. A Caffe2 pickle
(``.pkl``, I3D only) is converted by :mod:`regiongraph.models.caffe2`; a ``.pt``/``.pth``/
``.pyth`` file is read with ``weights_only=True`` as a state dict of the arch's trunk (one this
stage or the finetune stage wrote), torchvision's published ``.pth`` (its classifier dropped)
or pytorchvideo's checkpoint (``model_state``, renamed by
:mod:`regiongraph.models.pytorchvideo_keys`). Null gives random weights, with a loud warning:
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

from regiongraph.backbones import I3D_KNOBS, backbone_spec
from regiongraph.io import atomic_path, code_version, file_checksum
from regiongraph.io.download import fetch_weights
from regiongraph.models.backbone import build_backbone, published_state
from regiongraph.models.caffe2 import convert_caffe2_blobs, cross_modality_init, load_caffe2_pickle
from regiongraph.sources import is_url

log = logging.getLogger(__name__)

RANDOM_WEIGHTS_WARNING = (
    "\n" + "!" * 78 + "\n"
    "!!! backbone.weights is null: the backbone gets RANDOM weights.\n"
    "!!! Its features only exercise the pipeline; they carry no Kinetics knowledge and the\n"
    "!!! region-graph results will be near chance. For real runs set backbone.weights to\n"
    "!!! the arch's Kinetics weights (README: the table of backbones), a path or a URL.\n"
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
    if isinstance(data, dict) and isinstance(data.get("model_state"), dict):
        return data["model_state"], {}  # a pytorchvideo (PySlowFast) checkpoint
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
    spec = backbone_spec(arch)
    torch.manual_seed(seed)  # random init is reproducible; loaded weights overwrite it
    knobs = {"width_per_group": width_per_group} if spec.family == "i3d" else {}
    model = build_backbone(arch, "rgb", **knobs)
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
        if width_per_group != I3D_KNOBS["width_per_group"]:
            raise ValueError(
                f"backbone.width_per_group is {width_per_group}: pretrained weights need 64"
            )
        path = resolve_source(source, cache_dir, sha256)
        meta["source_checksum"] = file_checksum(path)
        log.info("backbone weights: %s (%s)", path, meta["source_checksum"])
        if path.suffix in (".pt", ".pth", ".pyth"):
            loaded, _ = load_weights(path)
            state = _rgb_state(published_state(loaded, arch, str(path)), model, spec.input_conv, str(path))
        elif spec.family == "i3d":
            state = convert_caffe2_blobs(load_caffe2_pickle(path), model, source=str(path))
        else:
            raise ValueError(
                f"backbone.weights: {path} is not a .pt/.pth/.pyth state dict; {arch} takes "
                f"{spec.source} weights ({spec.weights_url})"
            )
    model.load_state_dict(state, strict=True)  # one more check before anything is written
    conv1 = f"{spec.input_conv}.weight"
    for stream, output in outputs.items():
        stream_state = state if stream == "rgb" else cross_modality_init(state, 2, conv1)
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


def _rgb_state(loaded: dict, model: torch.nn.Module, input_conv: str, source: str) -> dict:
    """An RGB state dict from a .pt: flow weights (2-channel input conv) are refused."""
    conv1 = loaded.get(f"{input_conv}.weight")
    if conv1 is not None and conv1.shape[1] != 3:
        raise ValueError(f"{source}: conv1 has {conv1.shape[1]} input channels; give RGB weights")
    missing, unexpected = model.load_state_dict(loaded, strict=False)
    if missing or unexpected:
        raise ValueError(
            f"{source}: does not match {type(model).__name__}: missing {missing}, unexpected {unexpected}"
        )
    return dict(loaded)
