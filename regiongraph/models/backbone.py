"""Every ``backbone.arch`` as a trunk that maps a clip to its spatio-temporal feature map.

:func:`build_backbone` builds the trunk that :data:`regiongraph.backbones.BACKBONES` declares
(its map's strides and channels are there, not here): I3D from :mod:`regiongraph.models.i3d`,
torchvision's video models from :mod:`regiongraph.models.video`, X3D and CSN from
:mod:`regiongraph.models.x3d` and :mod:`regiongraph.models.csn`. A flow trunk has a two-channel
input conv (:func:`set_input_channels`). :func:`published_state` turns a published state dict
(torchvision's ``.pth``, pytorchvideo's checkpoint) into the trunk's keys.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
from torch import nn

from regiongraph.backbones import I3D_KNOBS, backbone_spec
from regiongraph.models import csn, i3d, video, x3d
from regiongraph.models.pytorchvideo_keys import convert_pytorchvideo_state, is_pytorchvideo_state

# The RGB trunk of each non-I3D arch.
TRUNKS: dict[str, Callable[[], nn.Module]] = {
    "r3d_18": video.r3d_18,
    "mc3_18": video.mc3_18,
    "r2plus1d_18": video.r2plus1d_18,
    "s3d": video.s3d,
    "mvit_v1_b": video.mvit_v1_b,
    "mvit_v2_s": video.mvit_v2_s,
    "swin3d_t": video.swin3d_t,
    "swin3d_s": video.swin3d_s,
    "swin3d_b": video.swin3d_b,
    "x3d_s": x3d.x3d_s,
    "x3d_m": x3d.x3d_m,
    "csn_r101": csn.csn_r101,
}


def build_backbone(arch: str, stream: str = "rgb", **i3d_knobs: int) -> nn.Module:
    """The trunk of ``backbone.arch`` for ``stream``; ``i3d_knobs`` (conv1_temporal_stride,
    pool1_temporal, res5_stride, width_per_group) apply to I3D only."""
    spec = backbone_spec(arch)
    if spec.family == "i3d":
        return i3d.build_backbone(arch, stream, **i3d_knobs)
    changed = {k: v for k, v in i3d_knobs.items() if v != I3D_KNOBS[k]}
    if changed:
        raise ValueError(f"backbone.arch {arch}: {sorted(changed)} apply to the I3D archs only")
    if stream not in i3d.STREAM_CHANNELS:
        raise ValueError(f"unknown stream {stream!r}; expected one of {tuple(i3d.STREAM_CHANNELS)}")
    model = TRUNKS[arch]()
    if stream != "rgb":
        set_input_channels(model, spec.input_conv, i3d.STREAM_CHANNELS[stream])
    return model


def set_input_channels(model: nn.Module, path: str, channels: int) -> None:
    """Replace the conv at ``path`` by one with ``channels`` input channels, all else equal."""
    parent_path, _, name = path.rpartition(".")
    parent = model.get_submodule(parent_path) if parent_path else model
    old = getattr(parent, name)
    new = nn.Conv3d(
        channels, old.out_channels, old.kernel_size, old.stride, old.padding, old.dilation,
        old.groups, old.bias is not None,
    )
    setattr(parent, name, new)


def published_state(
    state: Mapping[str, torch.Tensor], arch: str, source: str
) -> dict[str, torch.Tensor]:
    """A published state dict in the trunk's keys: pytorchvideo's renamed, the classifier's
    keys (the spec's ``head_keys``) dropped; anything else is kept for a strict load."""
    spec = backbone_spec(arch)
    if spec.family == "pytorchvideo" and is_pytorchvideo_state(state):
        return convert_pytorchvideo_state(state, spec.head_keys, source)
    return {k: v for k, v in state.items() if not (spec.head_keys and k.startswith(spec.head_keys))}


class BackboneClassifier(nn.Module):
    """Trunk + global average pool + dropout + linear head (for fine-tuning any arch)."""

    def __init__(self, backbone: nn.Module, channels: int, num_classes: int, dropout: float = 0.5):
        super().__init__()
        self.backbone = backbone
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(channels, num_classes)
        nn.init.normal_(self.fc.weight, std=0.01)
        nn.init.zeros_(self.fc.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.dropout(i3d.global_average_pool(self.backbone(x))))
