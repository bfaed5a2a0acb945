"""Convert the Caffe2 pickles of video-nonlocal-net to PyTorch state dicts, safely.

The Kinetics-pretrained I3D ResNet-50 weights (``i3d_baseline_32x2_IN_pretrain_400k.pkl``,
``i3d_nonlocal_32x2_IN_pretrain_400k.pkl``) are Python 2 pickles of
``{'blobs': {name: ndarray}}`` written by ``lib/utils/checkpoints.py:save_model_params``.
A pickle can run arbitrary code when loaded, so :func:`load_caffe2_pickle` reads it with
:func:`regiongraph.io.safe_pickle.load_array_pickle`, which constructs numpy arrays, dtypes,
scalars and plain containers and nothing else; any other global is refused with an error
naming the file and the global.

Blob names map to :class:`regiongraph.models.i3d.I3DResNet` keys by a plain rename (the same
table as the public converter Tushar-N/pytorch-resnet3d ``utils/convert_weights.py``, with
our module names):

=====================================  ==========================================
Caffe2 blob                            PyTorch key
=====================================  ==========================================
``conv1_w``                            ``stem.conv.weight``
``res_conv1_bn_{s,b,rm,riv}``          ``stem.bn.{weight,bias,running_mean,running_var}``
``res{L}_{B}_branch{1,2a,2b,2c}_w``    ``res{L}.blocks.{B}.branch{...}.weight``
``res{L}_{B}_branch{...}_bn_{s,...}``  ``res{L}.blocks.{B}.branch{...}_bn.{weight,...}``
``nonlocal_conv{L}_{B}_{p}_{w,b}``     ``res{L}.nonlocal_blocks.{B}.{p}.{weight,bias}``
``nonlocal_conv{L}_{B}_bn_{s,...}``    ``res{L}.nonlocal_blocks.{B}.bn.{weight,...}``
=====================================  ==========================================

``p`` is one of theta, phi, g, out. Caffe2 conv weights are ``(out, in, T, H, W)``, the
PyTorch layout, so arrays are copied as they are. The Kinetics classifier ``pred_{w,b}``
(400 classes) is dropped: the region-graph heads and the fine-tuning head are trained on the
target classes. ``*_momentum`` (SGD state), ``lr`` and ``model_iter`` are dropped too.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
from torch import nn

from regiongraph.io.safe_pickle import UnsafePickleError, load_array_pickle

log = logging.getLogger(__name__)

BN_SUFFIXES = {"s": "weight", "b": "bias", "rm": "running_mean", "riv": "running_var"}
CONV_SUFFIXES = {"w": "weight", "b": "bias"}
IGNORED_BLOBS = ("lr", "model_iter", "pred_w", "pred_b")

_STEM_BN = re.compile(r"^res_conv1_bn_(s|b|rm|riv)$")
_RES = re.compile(r"^res(\d)_(\d+)_(branch1|branch2[abc])(?:_(w)|_bn_(s|b|rm|riv))$")
_NONLOCAL = re.compile(r"^nonlocal_conv(\d)_(\d+)_(?:(theta|phi|g|out)_(w|b)|bn_(s|b|rm|riv))$")


def load_caffe2_pickle(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """The ``{name: ndarray}`` blobs of a Caffe2 pickle (``{'blobs': {...}}`` or flat)."""
    path = Path(path)
    try:
        data = load_array_pickle(path)
    except UnsafePickleError:
        raise
    except Exception as error:
        raise ValueError(f"{path}: not a readable Caffe2 weights pickle ({error})") from error
    if isinstance(data, Mapping) and "blobs" in data:
        data = data["blobs"]
    if not isinstance(data, Mapping):
        raise ValueError(f"{path}: expected a dict of blobs, found {type(data).__name__}")
    return {str(name): value for name, value in data.items()}


def caffe2_key(blob: str) -> str | None:
    """The PyTorch key of a Caffe2 blob name, or None when the name matches no rule."""
    if blob == "conv1_w":
        return "stem.conv.weight"
    if match := _STEM_BN.match(blob):
        return f"stem.bn.{BN_SUFFIXES[match.group(1)]}"
    if match := _RES.match(blob):
        stage, block, branch, conv, bn = match.groups()
        prefix = f"res{stage}.blocks.{block}.{branch}"
        return f"{prefix}.weight" if conv else f"{prefix}_bn.{BN_SUFFIXES[bn]}"
    if match := _NONLOCAL.match(blob):
        stage, block, part, conv, bn = match.groups()
        prefix = f"res{stage}.nonlocal_blocks.{block}"
        return (
            f"{prefix}.{part}.{CONV_SUFFIXES[conv]}" if part else f"{prefix}.bn.{BN_SUFFIXES[bn]}"
        )
    return None


def is_ignored_blob(blob: str) -> bool:
    return blob in IGNORED_BLOBS or "momentum" in blob


def convert_caffe2_blobs(
    blobs: Mapping[str, np.ndarray], model: nn.Module, source: str = "weights pickle"
) -> dict[str, torch.Tensor]:
    """Map ``blobs`` onto ``model``'s state dict; raise listing every problem at once.

    Every blob must be used (or be ignorable), every parameter and buffer of ``model`` must be
    filled (``num_batches_tracked`` counters excepted: they are set to 0), with the right
    shape. The returned state dict loads with ``model.load_state_dict(strict=True)``.
    """
    target = model.state_dict()
    state: dict[str, torch.Tensor] = {}
    unused, mismatched, ignored = [], [], []
    for blob, value in blobs.items():
        if is_ignored_blob(blob):
            ignored.append(blob)
            continue
        key = caffe2_key(blob)
        if key is None or key not in target:
            unused.append(blob if key is None else f"{blob} (-> {key}, not in the model)")
            continue
        array = np.asarray(value)
        if tuple(array.shape) != tuple(target[key].shape):
            mismatched.append(
                f"{blob} -> {key}: {tuple(array.shape)} vs {tuple(target[key].shape)}"
            )
            continue
        state[key] = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))
    for key, value in target.items():
        if key.endswith("num_batches_tracked"):
            state[key] = torch.zeros_like(value)
    missing = sorted(key for key in target if key not in state)
    problems = []
    if unused:
        problems.append(f"{len(unused)} unused blobs: " + ", ".join(sorted(unused)))
    if missing:
        problems.append(f"{len(missing)} parameters/buffers not filled: " + ", ".join(missing))
    if mismatched:
        problems.append(f"{len(mismatched)} shape mismatches: " + "; ".join(sorted(mismatched)))
    if problems:
        raise ValueError(f"{source}: does not match the model: " + " | ".join(problems))
    log.info(
        "%s: converted %d blobs, ignored %d (%s...)",
        source,
        len(blobs) - len(ignored),
        len(ignored),
        ", ".join(sorted(ignored)[:5]),
    )
    return state


def cross_modality_init(
    rgb_state: Mapping[str, torch.Tensor], channels: int = 2, key: str = "stem.conv.weight"
) -> dict:
    """Flow-stream weights from RGB ones (TSN, Wang et al. 2016, §3.2).

    The input conv's weights (``key``: I3D's conv1 by default; a backbone's spec names its
    own) are averaged over the three RGB input channels and the mean replicated to
    ``channels`` (2 for (dx, dy) flow); every other tensor is copied.
    """
    state = {name: value.clone() for name, value in rgb_state.items()}
    conv1 = state[key]
    if conv1.shape[1] != 3:
        raise ValueError(f"{key} has {conv1.shape[1]} input channels, expected 3 (RGB)")
    mean = conv1.mean(dim=1, keepdim=True)
    state[key] = mean.expand(-1, channels, *conv1.shape[2:]).contiguous()
    return state
