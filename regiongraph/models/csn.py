"""ir-CSN ResNet-101 (Tran, Wang, Feiszli, Torresani, "Video Classification with
Channel-Separated Convolutional Networks", ICCV 2019), as pytorchvideo's ``csn_r101`` builds it.

- stem: 3x7x7 conv stride (1, 2, 2) to 64 channels, BN, ReLU, max-pool 1x3x3 stride (1, 2, 2);
- four stages of 3, 4, 23, 3 bottlenecks (256, 512, 1024, 2048 channels, inner width a
  quarter), each 1x1x1 -> depthwise 3x3x3 (the "interaction-reduced" channel separation) ->
  1x1x1, BN after each, ReLU after the first two and after the sum; the first block of stages
  2-4 strides (2, 2, 2) in its depthwise conv, and every first block has a strided 1x1x1 + BN
  projection shortcut.

A 32x224 clip gives a 4x7x7 map of 2048 channels (time /8, space /32). Module names follow
torchvision's video ResNet; :mod:`regiongraph.models.pytorchvideo_keys` maps pytorchvideo's
checkpoint keys onto them.
"""

from __future__ import annotations

import torch
from torch import nn

from regiongraph.models.i3d import BatchNorm3d

STAGE_DEPTHS = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3), 152: (3, 8, 36, 3)}
STAGE_WIDTHS = (256, 512, 1024, 2048)
STAGE_STRIDES = (1, 2, 2, 2)  # in time and space alike


class CSNStem(nn.Module):
    """3x7x7 conv stride (1, 2, 2), BN, ReLU, max-pool 1x3x3 stride (1, 2, 2)."""

    def __init__(self, in_channels: int):
        super().__init__()
        self.conv = nn.Conv3d(in_channels, 64, (3, 7, 7), (1, 2, 2), (1, 3, 3), bias=False)
        self.bn = BatchNorm3d(64)
        self.pool = nn.MaxPool3d((1, 3, 3), (1, 2, 2), (0, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(torch.relu(self.bn(self.conv(x))))


class CSNBottleneck(nn.Module):
    """1x1x1 -> depthwise 3x3x3 (strided) -> 1x1x1, projection shortcut when needed."""

    def __init__(self, dim_in: int, dim_out: int, stride: int):
        super().__init__()
        inner = dim_out // 4
        self.conv1 = nn.Conv3d(dim_in, inner, 1, bias=False)
        self.bn1 = BatchNorm3d(inner)
        self.conv2 = nn.Conv3d(inner, inner, 3, stride, 1, groups=inner, bias=False)
        self.bn2 = BatchNorm3d(inner)
        self.conv3 = nn.Conv3d(inner, dim_out, 1, bias=False)
        self.bn3 = BatchNorm3d(dim_out)
        self.downsample: nn.Sequential | None = None
        if dim_in != dim_out or stride != 1:
            self.downsample = nn.Sequential(
                nn.Conv3d(dim_in, dim_out, 1, stride, bias=False), BatchNorm3d(dim_out)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = torch.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        shortcut = x if self.downsample is None else self.downsample(x)
        return torch.relu(out + shortcut)


class CSN(nn.Module):
    """ir-CSN trunk: ``(B, C_in, T, H, W)`` -> ``(B, 2048, T/8, H/32, W/32)``."""

    def __init__(self, depth: int = 101, in_channels: int = 3):
        super().__init__()
        if depth not in STAGE_DEPTHS:
            raise ValueError(f"CSN depth must be one of {tuple(STAGE_DEPTHS)}, got {depth}")
        self.stem = CSNStem(in_channels)
        dim_in = 64
        for index, (width, blocks, stride) in enumerate(
            zip(STAGE_WIDTHS, STAGE_DEPTHS[depth], STAGE_STRIDES, strict=True)
        ):
            layer = [CSNBottleneck(dim_in if i == 0 else width, width, stride if i == 0 else 1) for i in range(blocks)]
            self.add_module(f"layer{index + 1}", nn.Sequential(*layer))
            dim_in = width

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = self.layer1(x)
        x = self.layer2(x)
        x = self.layer3(x)
        return self.layer4(x)


def csn_r101(in_channels: int = 3) -> CSN:
    """ir-CSN-101 (pytorchvideo ``csn_r101``, ``CSN_32x2_R101.pyth``)."""
    return CSN(101, in_channels)
