"""I3D ResNet-50 and its non-local variant, as in facebookresearch/video-nonlocal-net.

The architecture follows ``lib/models/resnet_video_org.py`` and ``resnet_helper.py`` of
video-nonlocal-net (Wang, Girshick, Gupta, He, "Non-local Neural Networks", CVPR 2018), which
the Space-Time Region Graph paper (Wang & Gupta, ECCV 2018) uses as its backbone:

- stem: conv1 5x7x7, spatial stride 2, then max-pool 3x3 stride 2 (no padding, as Caffe2);
- res2..res5 of 3, 4, 6, 3 bottlenecks; the first conv (``branch2a``) of a block is 3x1x1
  where the block's flag below is 1 and 1x1x1 otherwise; the spatial stride sits on the 3x3
  conv (``branch2b``); the shortcut (``branch1``) is a strided 1x1x1 conv + BN;
- a temporal max-pool of stride 2 after res2 (``pool2``);
- non-local blocks (embedded Gaussian) after res3 blocks 1, 3 and res4 blocks 1, 3, 5.

The temporal strides of conv1 and pool1 and the spatial stride of res5 are arguments. The
Kinetics weights were trained with conv1 temporal stride 2, pool1 2x3x3 stride (2, 2, 2) and
res5 stride 2 (a 4x7x7 map for 32x224x224); the region-graph paper uses strides 1, 1 and 1
(a 16x14x14 map) so that every second clip frame keeps its own feature frame and boxes stay
resolvable. The kernels are the same, so the same weights load into either setting.

Module names follow the Caffe2 blob names so that the conversion table in
:mod:`regiongraph.models.caffe2` is a plain rename: blob ``res3_1_branch2a_bn_s`` is
``res3.blocks.1.branch2a_bn.weight``, ``nonlocal_conv4_3_theta_w`` is
``res4.nonlocal_blocks.3.theta.weight``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

# Temporal-kernel flags of the first conv of each block (video-nonlocal-net ``obtain_arc``,
# arc_type 2: "i3d, ResNet50").
TEMPORAL_KERNELS = {
    "res2": (1, 1, 1),
    "res3": (1, 0, 1, 0),
    "res4": (1, 0, 1, 0, 1, 0),
    "res5": (0, 1, 0),
}
# Blocks followed by a non-local block (NONLOCAL.LAYER_MOD = 2: every second block).
NONLOCAL_AFTER = {"res3": (1, 3), "res4": (1, 3, 5)}
BN_EPS = 1e-5  # MODEL.BN_EPSILON and NONLOCAL.BN_EPSILON of video-nonlocal-net
FEATURE_DIM = 2048
# The per-channel input normalisation the Kinetics weights were trained with (MODEL.MEAN,
# MODEL.STD): RGB in 0..255, (x - 114.75) / 57.375.
INPUT_MEAN = 114.75
INPUT_STD = 57.375


class BatchNorm3d(nn.BatchNorm3d):
    """``nn.BatchNorm3d`` (eps 1e-5, as Caffe2) that can be frozen.

    A frozen layer normalises with its running statistics and never updates them, in train
    mode too; its affine weight and bias stay trainable (the AffineNd layers that
    video-nonlocal-net swaps in when fine-tuning with small batches). The state-dict keys are
    those of ``nn.BatchNorm3d``.
    """

    def __init__(
        self, num_features: int, zero_init: bool = False, eps: float = BN_EPS, momentum: float = 0.1
    ):
        super().__init__(num_features, eps=eps, momentum=momentum)
        self.frozen = False
        if zero_init:
            nn.init.zeros_(self.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.frozen:
            return super().forward(x)
        return F.batch_norm(
            x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps
        )


def freeze_batchnorm(model: nn.Module, frozen: bool = True) -> int:
    """Freeze (or unfreeze) the statistics of every :class:`BatchNorm3d`; return how many."""
    count = 0
    for module in model.modules():
        if isinstance(module, BatchNorm3d):
            module.frozen = frozen
            count += 1
    return count


class Stem(nn.Module):
    """conv1 5x7x7 stride (t, 2, 2), BN, ReLU, max-pool (kt)x3x3 stride (kt, 2, 2)."""

    def __init__(self, in_channels: int, conv1_temporal_stride: int, pool1_temporal: int):
        super().__init__()
        self.conv = nn.Conv3d(
            in_channels,
            64,
            (5, 7, 7),
            stride=(conv1_temporal_stride, 2, 2),
            padding=(2, 3, 3),
            bias=False,
        )
        self.bn = BatchNorm3d(64)
        self.pool = nn.MaxPool3d((pool1_temporal, 3, 3), stride=(pool1_temporal, 2, 2), padding=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(F.relu(self.bn(self.conv(x)), inplace=True))


class Bottleneck(nn.Module):
    """``x + F(x)`` with F = (3|1)x1x1 -> 1x3x3 (spatial stride) -> 1x1x1, then ReLU."""

    def __init__(
        self, dim_in: int, dim_inner: int, dim_out: int, stride: int, temporal_kernel: int
    ):
        super().__init__()
        kt = 1 + 2 * temporal_kernel
        self.branch2a = nn.Conv3d(
            dim_in, dim_inner, (kt, 1, 1), padding=(temporal_kernel, 0, 0), bias=False
        )
        self.branch2a_bn = BatchNorm3d(dim_inner)
        self.branch2b = nn.Conv3d(
            dim_inner,
            dim_inner,
            (1, 3, 3),
            stride=(1, stride, stride),
            padding=(0, 1, 1),
            bias=False,
        )
        self.branch2b_bn = BatchNorm3d(dim_inner)
        self.branch2c = nn.Conv3d(dim_inner, dim_out, 1, bias=False)
        self.branch2c_bn = BatchNorm3d(dim_out)
        self.branch1: nn.Conv3d | None = None
        self.branch1_bn: BatchNorm3d | None = None
        if dim_in != dim_out or stride != 1:
            self.branch1 = nn.Conv3d(dim_in, dim_out, 1, stride=(1, stride, stride), bias=False)
            self.branch1_bn = BatchNorm3d(dim_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.branch2a_bn(self.branch2a(x)), inplace=True)
        out = F.relu(self.branch2b_bn(self.branch2b(out)), inplace=True)
        out = self.branch2c_bn(self.branch2c(out))
        shortcut = x if self.branch1 is None else self.branch1_bn(self.branch1(x))
        return F.relu(out + shortcut, inplace=True)


class NonLocalBlock(nn.Module):
    """Embedded-Gaussian non-local block (Wang et al. 2018, eq. 1-3; ``nonlocal_helper.py``).

    ``y_i = sum_j softmax_j(theta(x_i) . phi(x_j) / sqrt(d)) g(x_j)``, with theta, phi, g
    1x1x1 convs to ``d = C/2`` channels, phi and g computed on a 1x2x2 max-pooled map, then
    ``z = x + BN(W_out y)`` with the BN's gamma initialised to zero so that a new block
    starts as the identity.
    """

    def __init__(self, dim: int):
        super().__init__()
        inner = dim // 2
        self.theta = nn.Conv3d(dim, inner, 1)
        self.phi = nn.Conv3d(dim, inner, 1)
        self.g = nn.Conv3d(dim, inner, 1)
        self.out = nn.Conv3d(inner, dim, 1)
        self.bn = BatchNorm3d(dim, zero_init=True)
        self.pool = nn.MaxPool3d((1, 2, 2), stride=(1, 2, 2))
        self.scale = inner**-0.5
        for conv in (self.theta, self.phi, self.g, self.out):
            nn.init.normal_(conv.weight, std=0.01)  # NONLOCAL.CONV_INIT_STD
            nn.init.zeros_(conv.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, t, h, w = x.shape
        pooled = self.pool(x)
        theta = self.theta(x).flatten(2)  # (B, d, THW)
        phi = self.phi(pooled).flatten(2)  # (B, d, THW/4)
        g = self.g(pooled).flatten(2)
        affinity = torch.softmax(theta.transpose(1, 2) @ phi * self.scale, dim=-1)
        y = (g @ affinity.transpose(1, 2)).view(b, -1, t, h, w)
        return x + self.bn(self.out(y))


class ResStage(nn.Module):
    """One residual stage: ``blocks`` in order, a non-local block after the listed ones."""

    def __init__(self, blocks: Sequence[Bottleneck], nonlocal_after: Sequence[int], dim: int):
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.nonlocal_blocks = nn.ModuleDict({str(i): NonLocalBlock(dim) for i in nonlocal_after})

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for index, block in enumerate(self.blocks):
            x = block(x)
            if str(index) in self.nonlocal_blocks:
                x = self.nonlocal_blocks[str(index)](x)
        return x


def _make_stage(
    name: str, dim_in: int, dim_inner: int, dim_out: int, stride: int, use_nonlocal: bool
) -> ResStage:
    blocks = [
        Bottleneck(dim_in if i == 0 else dim_out, dim_inner, dim_out, stride if i == 0 else 1, k)
        for i, k in enumerate(TEMPORAL_KERNELS[name])
    ]
    nonlocal_after = NONLOCAL_AFTER.get(name, ()) if use_nonlocal else ()
    return ResStage(blocks, nonlocal_after, dim_out)


class I3DResNet(nn.Module):
    """I3D ResNet-50 trunk: ``(B, C_in, T, H, W)`` clip -> res5 map ``(B, 2048, T', H', W')``.

    With the defaults a 32x224x224 clip gives 16x14x14; with ``conv1_temporal_stride=2,
    pool1_temporal=2, res5_stride=2`` (the Kinetics training setting) it gives 4x7x7.
    The input is expected normalised (see :data:`INPUT_MEAN`, :data:`INPUT_STD`).

    ``width_per_group`` is RESNETS.WIDTH_PER_GROUP of video-nonlocal-net: the inner width of
    the bottlenecks of res2 (x2, x4, x8 for res3..res5); the stage outputs stay 256..2048, so
    the feature is 2048-d whatever the width. The Kinetics weights need 64; a smaller width
    is for the quick demo on a laptop with random weights only.
    """

    def __init__(
        self,
        in_channels: int = 3,
        use_nonlocal: bool = False,
        conv1_temporal_stride: int = 1,
        pool1_temporal: int = 1,
        res5_stride: int = 1,
        width_per_group: int = 64,
    ):
        super().__init__()
        if res5_stride not in (1, 2):
            raise ValueError(f"res5_stride must be 1 or 2, got {res5_stride}")
        if width_per_group < 1:
            raise ValueError(f"width_per_group must be positive, got {width_per_group}")
        inner = width_per_group
        self.stem = Stem(in_channels, conv1_temporal_stride, pool1_temporal)
        self.res2 = _make_stage("res2", 64, inner, 256, 1, use_nonlocal)
        self.pool2 = nn.MaxPool3d((2, 1, 1), stride=(2, 1, 1))
        self.res3 = _make_stage("res3", 256, inner * 2, 512, 2, use_nonlocal)
        self.res4 = _make_stage("res4", 512, inner * 4, 1024, 2, use_nonlocal)
        self.res5 = _make_stage("res5", 1024, inner * 8, FEATURE_DIM, res5_stride, use_nonlocal)
        for module in self.modules():
            if isinstance(module, nn.Conv3d) and module.bias is None:
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = self.res2(x)
        x = self.pool2(x)
        x = self.res3(x)
        x = self.res4(x)
        return self.res5(x)


def global_average_pool(features: torch.Tensor) -> torch.Tensor:
    """``(B, C, T, H, W)`` -> ``(B, C)``: the mean over space and time (``pool5``)."""
    return features.mean(dim=(2, 3, 4))


class I3DClassifier(nn.Module):
    """Backbone + global average pool + dropout + linear head (for fine-tuning)."""

    def __init__(self, backbone: I3DResNet, num_classes: int, dropout: float = 0.5):
        super().__init__()
        self.backbone = backbone
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(FEATURE_DIM, num_classes)
        nn.init.normal_(self.fc.weight, std=0.01)  # MODEL.FC_INIT_STD
        nn.init.zeros_(self.fc.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.dropout(global_average_pool(self.backbone(x))))


STREAM_CHANNELS = {"rgb": 3, "flow": 2}


def i3d_r50(stream: str = "rgb", **kwargs) -> I3DResNet:
    """I3D ResNet-50 (``i3d_baseline_32x2_IN_pretrain_400k``); ``stream`` rgb or flow."""
    return I3DResNet(in_channels=_channels(stream), use_nonlocal=False, **kwargs)


def i3d_nl_r50(stream: str = "rgb", **kwargs) -> I3DResNet:
    """Non-local I3D ResNet-50 (``i3d_nonlocal_32x2_IN_pretrain_400k``)."""
    return I3DResNet(in_channels=_channels(stream), use_nonlocal=True, **kwargs)


ARCHS = ("i3d_r50", "i3d_nl_r50")


def build_backbone(
    arch: str,
    stream: str = "rgb",
    conv1_temporal_stride: int = 1,
    pool1_temporal: int = 1,
    res5_stride: int = 1,
    width_per_group: int = 64,
) -> I3DResNet:
    """The backbone named by the config key ``backbone.arch``."""
    strides = dict(
        conv1_temporal_stride=conv1_temporal_stride,
        pool1_temporal=pool1_temporal,
        res5_stride=res5_stride,
        width_per_group=width_per_group,
    )
    if arch == "i3d_r50":
        return i3d_r50(stream, **strides)
    if arch == "i3d_nl_r50":
        return i3d_nl_r50(stream, **strides)
    raise ValueError(f"backbone.arch: unknown architecture {arch!r}; expected one of {ARCHS}")


def _channels(stream: str) -> int:
    if stream not in STREAM_CHANNELS:
        raise ValueError(f"unknown stream {stream!r}; expected one of {tuple(STREAM_CHANNELS)}")
    return STREAM_CHANNELS[stream]
