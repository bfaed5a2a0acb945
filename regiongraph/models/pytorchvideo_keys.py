"""pytorchvideo checkpoint keys -> the keys of :mod:`regiongraph.models.x3d` and
:mod:`regiongraph.models.csn`: a plain rename.

pytorchvideo's published Kinetics checkpoints (``X3D_S.pyth``, ``X3D_M.pyth``,
``CSN_32x2_R101.pyth``; ``{"model_state": state_dict, ...}``) name a network
``blocks.{i}``: ``blocks.0`` the stem, ``blocks.1..4`` the stages with
``res_blocks.{j}.branch1_{conv,norm}`` (the shortcut) and ``branch2.{conv,norm}_{a,b,c}``,
``blocks.5`` the head. Two X3D facts: its stem names the 1x3x3 spatial conv ``conv_t`` and the
depthwise 5x1x1 temporal conv ``conv_xy`` (in that order of application), and its ``norm_b``
is a sequence of the BN (``.0``) and the squeeze-excitation (``.1.block.{0,2}``: its two 1x1x1
convs). The head's ``pool.pre_{conv,norm}`` is X3D's conv5; the rest of the head (``pool.post_conv``,
``proj``: the classifier) is dropped by :data:`regiongraph.backbones.BACKBONES`' ``head_keys``.

==================================================  ================================
pytorchvideo                                        here
==================================================  ================================
``blocks.0.conv.conv_t`` / ``.conv_xy`` (X3D)       ``stem.conv_xy`` / ``stem.conv_t``
``blocks.0.conv`` (CSN), ``blocks.0.norm``          ``stem.conv``, ``stem.bn``
``blocks.{s}.res_blocks.{j}.branch1_conv``          ``layer{s}.{j}.downsample.0``
``blocks.{s}.res_blocks.{j}.branch1_norm``          ``layer{s}.{j}.downsample.1``
``...branch2.conv_{a,b,c}``                         ``...conv{1,2,3}``
``...branch2.norm_{a,c}``, ``norm_b`` / ``norm_b.0``  ``...bn{1,3}``, ``...bn2``
``...branch2.norm_b.1.block.{0,2}`` (X3D)           ``...se.fc{1,2}``
``blocks.5.pool.pre_conv``, ``.pre_norm`` (X3D)     ``conv5``, ``bn5``
==================================================  ================================
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import torch

_RULES = [
    (re.compile(r"^blocks\.0\.conv\.conv_t\.(.+)$"), r"stem.conv_xy.\1"),
    (re.compile(r"^blocks\.0\.conv\.conv_xy\.(.+)$"), r"stem.conv_t.\1"),
    (re.compile(r"^blocks\.0\.conv\.(weight|bias)$"), r"stem.conv.\1"),
    (re.compile(r"^blocks\.0\.norm\.(.+)$"), r"stem.bn.\1"),
    (re.compile(r"^blocks\.([1-4])\.res_blocks\.(\d+)\.branch1_conv\.(.+)$"), r"layer\1.\2.downsample.0.\3"),
    (re.compile(r"^blocks\.([1-4])\.res_blocks\.(\d+)\.branch1_norm\.(.+)$"), r"layer\1.\2.downsample.1.\3"),
    (re.compile(r"^blocks\.([1-4])\.res_blocks\.(\d+)\.branch2\.conv_a\.(.+)$"), r"layer\1.\2.conv1.\3"),
    (re.compile(r"^blocks\.([1-4])\.res_blocks\.(\d+)\.branch2\.conv_b\.(.+)$"), r"layer\1.\2.conv2.\3"),
    (re.compile(r"^blocks\.([1-4])\.res_blocks\.(\d+)\.branch2\.conv_c\.(.+)$"), r"layer\1.\2.conv3.\3"),
    (re.compile(r"^blocks\.([1-4])\.res_blocks\.(\d+)\.branch2\.norm_a\.(.+)$"), r"layer\1.\2.bn1.\3"),
    (re.compile(r"^blocks\.([1-4])\.res_blocks\.(\d+)\.branch2\.norm_b\.0\.(.+)$"), r"layer\1.\2.bn2.\3"),
    (re.compile(r"^blocks\.([1-4])\.res_blocks\.(\d+)\.branch2\.norm_b\.1\.block\.0\.(.+)$"), r"layer\1.\2.se.fc1.\3"),
    (re.compile(r"^blocks\.([1-4])\.res_blocks\.(\d+)\.branch2\.norm_b\.1\.block\.2\.(.+)$"), r"layer\1.\2.se.fc2.\3"),
    (re.compile(r"^blocks\.([1-4])\.res_blocks\.(\d+)\.branch2\.norm_b\.([a-z_]+)$"), r"layer\1.\2.bn2.\3"),
    (re.compile(r"^blocks\.([1-4])\.res_blocks\.(\d+)\.branch2\.norm_c\.(.+)$"), r"layer\1.\2.bn3.\3"),
    (re.compile(r"^blocks\.5\.pool\.pre_conv\.(.+)$"), r"conv5.\1"),
    (re.compile(r"^blocks\.5\.pool\.pre_norm\.(.+)$"), r"bn5.\1"),
]


def pytorchvideo_key(key: str) -> str | None:
    """Our key for a pytorchvideo key, or None when no rule matches."""
    for pattern, replacement in _RULES:
        if pattern.match(key):
            return pattern.sub(replacement, key)
    return None


def is_pytorchvideo_state(state: Mapping[str, torch.Tensor]) -> bool:
    return any(key.startswith("blocks.0.") for key in state)


def convert_pytorchvideo_state(
    state: Mapping[str, torch.Tensor], head_keys: tuple[str, ...], source: str
) -> dict[str, torch.Tensor]:
    """Rename a pytorchvideo state dict (a checkpoint's ``model_state``); the head's keys
    (``head_keys`` prefixes) are dropped, and a key that no rule knows is an error naming it."""
    converted, unknown = {}, []
    for key, value in state.items():
        if key.startswith(head_keys):
            continue
        ours = pytorchvideo_key(key)
        if ours is None:
            unknown.append(key)
        else:
            converted[ours] = value
    if unknown:
        raise ValueError(f"{source}: pytorchvideo keys with no counterpart here: {unknown[:10]}")
    return converted
