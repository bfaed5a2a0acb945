"""X3D-S and X3D-M (Feichtenhofer, "X3D: Expanding Architectures for Efficient Video
Recognition", CVPR 2020), as pytorchvideo builds them, as a trunk ending at ``conv5``.

The network of pytorchvideo's ``create_x3d`` with ``width_factor=2.0, depth_factor=2.2`` (the
same network for S and M; they differ in their input, 13x160 and 16x224):

- stem: a 1x3x3 conv stride (1, 2, 2) to 24 channels, then a depthwise 5x1x1 conv, BN, ReLU;
- four stages of 3, 5, 11, 7 blocks, 24, 48, 96, 192 channels, each block a bottleneck
  1x1x1 -> depthwise 3x3x3 (spatial stride 2 in a stage's first block) -> 1x1x1 with inner
  width 2.25x, squeeze-excitation after the depthwise conv's BN in every second block (the
  first, third, ...; reduced width 1/16 of the inner width, rounded as X3D rounds widths),
  Swish after it, ReLU after the sum; the first block of a stage has a 1x1x1 strided
  projection shortcut, with a BN when the width changes;
- ``conv5``: the head's 1x1x1 conv to 432 channels, BN, ReLU, before the head's pooling:
  the trunk's map (the X3D paper's Table 1 lists conv5 as the last spatio-temporal layer).

Time is never strided (the map has the clip's frames), space /32. Module names follow
torchvision's video ResNet; :mod:`regiongraph.models.pytorchvideo_keys` maps pytorchvideo's
checkpoint keys onto them.
"""

from __future__ import annotations

import torch
from torch import nn

from regiongraph.models.i3d import BatchNorm3d

STAGE_WIDTHS = (24, 48, 96, 192)
STAGE_DEPTHS = (3, 5, 11, 7)  # ceil(2.2 x (1, 2, 5, 3))
BOTTLENECK_FACTOR = 2.25
SE_RATIO = 1 / 16
CONV5_CHANNELS = 432  # 2.25 x 192


def round_width(width: float, divisor: int = 8) -> int:
    """X3D's channel rounding: the nearest multiple of ``divisor`` (at least ``divisor``),
    one step up when that falls under 90% of ``width``."""
    rounded = max(divisor, int(width + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * width else rounded


class Swish(nn.Module):
    """``x * sigmoid(x)``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(x)


class SqueezeExcitation(nn.Module):
    """Channel gates from the clip-wide mean (Hu et al. 2018): ``x * sigmoid(fc2(relu(fc1(mean))))``."""

    def __init__(self, channels: int, reduced: int):
        super().__init__()
        self.fc1 = nn.Conv3d(channels, reduced, 1)
        self.fc2 = nn.Conv3d(reduced, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate = self.fc2(torch.relu(self.fc1(x.mean(dim=(2, 3, 4), keepdim=True))))
        return x * torch.sigmoid(gate)


class X3DStem(nn.Module):
    """1x3x3 conv stride (1, 2, 2), depthwise 5x1x1 conv, BN, ReLU."""

    def __init__(self, in_channels: int, channels: int = STAGE_WIDTHS[0]):
        super().__init__()
        self.conv_xy = nn.Conv3d(in_channels, channels, (1, 3, 3), (1, 2, 2), (0, 1, 1), bias=False)
        self.conv_t = nn.Conv3d(channels, channels, (5, 1, 1), padding=(2, 0, 0), groups=channels, bias=False)
        self.bn = BatchNorm3d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.bn(self.conv_t(self.conv_xy(x))))


class X3DBlock(nn.Module):
    """Bottleneck with a depthwise 3x3x3 conv, optional squeeze-excitation, Swish."""

    def __init__(self, dim_in: int, dim_inner: int, dim_out: int, stride: int, use_se: bool):
        super().__init__()
        self.conv1 = nn.Conv3d(dim_in, dim_inner, 1, bias=False)
        self.bn1 = BatchNorm3d(dim_inner)
        self.conv2 = nn.Conv3d(
            dim_inner, dim_inner, 3, (1, stride, stride), 1, groups=dim_inner, bias=False
        )
        self.bn2 = BatchNorm3d(dim_inner)
        self.se = SqueezeExcitation(dim_inner, round_width(dim_inner * SE_RATIO)) if use_se else None
        self.swish = Swish()
        self.conv3 = nn.Conv3d(dim_inner, dim_out, 1, bias=False)
        self.bn3 = BatchNorm3d(dim_out)
        self.downsample: nn.Sequential | None = None
        if dim_in != dim_out or stride != 1:
            shortcut = [nn.Conv3d(dim_in, dim_out, 1, (1, stride, stride), bias=False)]
            if dim_in != dim_out:
                shortcut.append(BatchNorm3d(dim_out))
            self.downsample = nn.Sequential(*shortcut)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.se is not None:
            out = self.se(out)
        out = self.bn3(self.conv3(self.swish(out)))
        shortcut = x if self.downsample is None else self.downsample(x)
        return torch.relu(out + shortcut)


class X3D(nn.Module):
    """X3D trunk: ``(B, C_in, T, H, W)`` -> conv5 map ``(B, 432, T, H/32, W/32)``."""

    def __init__(self, in_channels: int = 3):
        super().__init__()
        self.stem = X3DStem(in_channels)
        dim_in = STAGE_WIDTHS[0]
        for index, (width, depth) in enumerate(zip(STAGE_WIDTHS, STAGE_DEPTHS, strict=True)):
            inner = int(BOTTLENECK_FACTOR * width)
            blocks = [
                X3DBlock(dim_in if i == 0 else width, inner, width, 2 if i == 0 else 1, i % 2 == 0)
                for i in range(depth)
            ]
            self.add_module(f"layer{index + 1}", nn.Sequential(*blocks))
            dim_in = width
        self.conv5 = nn.Conv3d(dim_in, CONV5_CHANNELS, 1, bias=False)
        self.bn5 = BatchNorm3d(CONV5_CHANNELS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = self.layer1(x)
        x = self.layer2(x)
        x = self.layer3(x)
        x = self.layer4(x)
        return torch.relu(self.bn5(self.conv5(x)))


def x3d_s(in_channels: int = 3) -> X3D:
    """X3D-S (13x160 clips; pytorchvideo ``x3d_s``)."""
    return X3D(in_channels)


def x3d_m(in_channels: int = 3) -> X3D:
    """X3D-M (16x224 clips; pytorchvideo ``x3d_m``): the same network as X3D-S."""
    return X3D(in_channels)
