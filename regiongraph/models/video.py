"""torchvision's video models as trunks: a clip in, the last spatio-temporal map out.

Each trunk takes the modules of the model that torchvision's own constructor builds
(``torchvision.models.video.r3d_18()`` and the rest, random init) and drops the classifier, so
that its state-dict keys are torchvision's less the head's (``fc.``, ``classifier.``,
``head.``): the published Kinetics-400 ``.pth`` files load with ``strict=True`` once those
are dropped (:func:`regiongraph.models.backbone.published_state`).

The map each returns, for a ``T x S x S`` clip (:mod:`regiongraph.backbones` declares them):

- ``VideoResNetTrunk`` (r3d_18, mc3_18, r2plus1d_18): ``layer4``, 512 channels; space /16;
  time /8, except MC3, whose 2D layers 2-4 keep time (/1);
- ``S3DTrunk``: the last inception block, 1024 channels; time /8, space /32;
- ``SwinTrunk`` (swin3d_t/s/b): the normalised last stage, which torchvision keeps as a
  ``(B, T, H, W, C)`` grid before its average pool; time /2 (the 2x4x4 patches), space /32;
- ``MViTTrunk`` (mvit_v1_b, mvit_v2_s): the normalised tokens after the class token,
  reshaped to the final ``(T, H, W)`` grid they come from (MViT pools its token grid stage by
  stage and keeps it row-major, ``t`` slowest); the class token, which torchvision's head
  reads, is dropped; time /2, space /32. torchvision builds MViT for 16x224 clips only (its
  positional embeddings and pooling are sized for that input).

BatchNorm layers become :class:`regiongraph.models.i3d.BatchNorm3d` (same keys and
arithmetic) so that fine-tuning can freeze their statistics as it does I3D's.
"""

from __future__ import annotations

import torch
from torch import nn
from torchvision.models import video

from regiongraph.models.i3d import BatchNorm3d


class VideoResNetTrunk(nn.Module):
    """``stem`` and ``layer1..4`` of torchvision's ``VideoResNet``."""

    def __init__(self, model: video.VideoResNet):
        super().__init__()
        self.stem = model.stem
        self.layer1, self.layer2 = model.layer1, model.layer2
        self.layer3, self.layer4 = model.layer3, model.layer4

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = self.layer1(x)
        x = self.layer2(x)
        x = self.layer3(x)
        return self.layer4(x)


class S3DTrunk(nn.Module):
    """``features`` of torchvision's ``S3D`` (its average pool and 1x1x1 classifier dropped)."""

    def __init__(self, model: video.S3D):
        super().__init__()
        self.features = model.features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)


class SwinTrunk(nn.Module):
    """Patch embedding, stages and final norm of torchvision's ``SwinTransformer3d``."""

    def __init__(self, model: video.swin_transformer.SwinTransformer3d):
        super().__init__()
        self.patch_embed = model.patch_embed
        self.pos_drop = model.pos_drop
        self.features = model.features
        self.norm = model.norm

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pos_drop(self.patch_embed(x))  # (B, T', H', W', C)
        x = self.norm(self.features(x))
        return x.permute(0, 4, 1, 2, 3)


class MViTTrunk(nn.Module):
    """Patch embedding, positional encoding, blocks and final norm of torchvision's ``MViT``."""

    def __init__(self, model: video.MViT):
        super().__init__()
        self.conv_proj = model.conv_proj
        self.pos_encoding = model.pos_encoding
        self.blocks = model.blocks
        self.norm = model.norm

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv_proj(x)
        thw = tuple(x.shape[2:])
        x = self.pos_encoding(x.flatten(2).transpose(1, 2))  # the class token goes first
        for block in self.blocks:
            x, thw = block(x, thw)
        tokens = self.norm(x)[:, 1:]
        return tokens.transpose(1, 2).reshape(x.shape[0], -1, *thw)


def freezable_batchnorm(module: nn.Module) -> nn.Module:
    """Replace every ``nn.BatchNorm3d`` below ``module`` by a :class:`BatchNorm3d` with the
    same size, eps and momentum (same state-dict keys); return ``module``."""
    for name, child in module.named_children():
        if isinstance(child, nn.BatchNorm3d) and not isinstance(child, BatchNorm3d):
            replacement = BatchNorm3d(child.num_features, eps=child.eps, momentum=child.momentum)
            setattr(module, name, replacement)
        else:
            freezable_batchnorm(child)
    return module


def r3d_18() -> VideoResNetTrunk:
    return VideoResNetTrunk(freezable_batchnorm(video.r3d_18()))


def mc3_18() -> VideoResNetTrunk:
    return VideoResNetTrunk(freezable_batchnorm(video.mc3_18()))


def r2plus1d_18() -> VideoResNetTrunk:
    return VideoResNetTrunk(freezable_batchnorm(video.r2plus1d_18()))


def s3d() -> S3DTrunk:
    return S3DTrunk(freezable_batchnorm(video.s3d()))


def swin3d_t() -> SwinTrunk:
    return SwinTrunk(video.swin3d_t())


def swin3d_s() -> SwinTrunk:
    return SwinTrunk(video.swin3d_s())


def swin3d_b() -> SwinTrunk:
    return SwinTrunk(video.swin3d_b())


def mvit_v1_b() -> MViTTrunk:
    return MViTTrunk(video.mvit_v1_b())


def mvit_v2_s() -> MViTTrunk:
    return MViTTrunk(video.mvit_v2_s())
