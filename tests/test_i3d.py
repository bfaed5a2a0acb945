"""I3D ResNet-50: output geometry, the per-block temporal kernels, non-local blocks, frozen BN."""

from __future__ import annotations

import pytest
import torch

from regiongraph.models.i3d import (
    BatchNorm3d,
    I3DClassifier,
    NonLocalBlock,
    build_backbone,
    freeze_batchnorm,
    global_average_pool,
)

KINETICS = dict(conv1_temporal_stride=2, pool1_temporal=2, res5_stride=2)


@pytest.mark.parametrize("arch", ["i3d_r50", "i3d_nl_r50"])
def test_res5_map_is_16x14x14_for_32x224_and_4x7x7_with_kinetics_strides(arch):
    with torch.device("meta"):
        clip = torch.empty(2, 3, 32, 224, 224)
        assert build_backbone(arch)(clip).shape == (2, 2048, 16, 14, 14)
        assert build_backbone(arch, **KINETICS)(clip).shape == (2, 2048, 4, 7, 7)
        flow = build_backbone(arch, "flow")
        assert flow.stem.conv.weight.shape == (64, 2, 5, 7, 7)
        assert flow(torch.empty(1, 2, 32, 224, 224)).shape == (1, 2048, 16, 14, 14)


def test_same_weights_load_into_both_stride_settings():
    with torch.device("meta"):
        paper, kinetics = build_backbone("i3d_nl_r50"), build_backbone("i3d_nl_r50", **KINETICS)
    shapes = {k: v.shape for k, v in paper.state_dict().items()}
    assert shapes == {k: v.shape for k, v in kinetics.state_dict().items()}


def test_temporal_kernels_and_nonlocal_placement_follow_video_nonlocal_net():
    with torch.device("meta"):
        model = build_backbone("i3d_nl_r50")
    kernels = {
        stage: [block.branch2a.kernel_size[0] for block in getattr(model, stage).blocks]
        for stage in ("res2", "res3", "res4", "res5")
    }
    assert kernels == {
        "res2": [3, 3, 3], "res3": [3, 1, 3, 1], "res4": [3, 1, 3, 1, 3, 1], "res5": [1, 3, 1]
    }
    assert model.stem.conv.kernel_size == (5, 7, 7)
    assert sorted(model.res3.nonlocal_blocks) == ["1", "3"]
    assert sorted(model.res4.nonlocal_blocks) == ["1", "3", "5"]
    assert not model.res2.nonlocal_blocks and not model.res5.nonlocal_blocks
    assert model.res4.nonlocal_blocks["1"].theta.out_channels == 512  # C / 2


def test_nonlocal_block_is_identity_at_init_and_matches_the_formula():
    torch.manual_seed(0)
    block = NonLocalBlock(8).eval()
    x = torch.randn(2, 8, 3, 4, 6)
    assert torch.equal(block(x), x)  # BN gamma starts at zero
    with torch.no_grad():
        block.bn.weight.normal_()
        block.bn.running_var.uniform_(0.5, 1.5)
    # by hand: theta on every position, phi and g on the 1x2x2 max-pooled map
    pooled = torch.nn.functional.max_pool3d(x, (1, 2, 2))
    theta = torch.einsum("oc,bcthw->bothw", block.theta.weight[:, :, 0, 0, 0], x)
    theta = theta + block.theta.bias[None, :, None, None, None]
    phi = torch.einsum("oc,bcthw->bothw", block.phi.weight[:, :, 0, 0, 0], pooled)
    phi = phi + block.phi.bias[None, :, None, None, None]
    g = torch.einsum("oc,bcthw->bothw", block.g.weight[:, :, 0, 0, 0], pooled)
    g = g + block.g.bias[None, :, None, None, None]
    attention = torch.softmax(
        torch.einsum("bci,bcj->bij", theta.flatten(2), phi.flatten(2)) / 2.0, dim=-1
    )  # sqrt(d) = sqrt(4)
    y = torch.einsum("bij,bcj->bci", attention, g.flatten(2)).reshape(2, 4, 3, 4, 6)
    out = torch.nn.functional.conv3d(y, block.out.weight, block.out.bias)
    bn = block.bn
    out = (out - bn.running_mean[:, None, None, None]) / torch.sqrt(
        bn.running_var[:, None, None, None] + 1e-5
    ) * bn.weight[:, None, None, None] + bn.bias[:, None, None, None]
    with torch.no_grad():
        torch.testing.assert_close(block(x), x + out, rtol=1e-4, atol=1e-5)


def test_frozen_batchnorm_keeps_running_statistics_in_train_mode():
    torch.manual_seed(0)
    bn = BatchNorm3d(4)
    with torch.no_grad():
        bn.running_mean.uniform_(-1, 1)
        bn.running_var.uniform_(0.5, 2)
    before = bn.running_mean.clone()
    x = torch.randn(2, 4, 2, 3, 3) * 3 + 1
    model = torch.nn.Sequential(bn)
    assert freeze_batchnorm(model) == 1
    model.train()
    frozen_out = model(x)
    assert torch.equal(bn.running_mean, before)
    model.eval()
    torch.testing.assert_close(frozen_out, model(x))
    freeze_batchnorm(model, frozen=False)
    model.train()
    model(x)
    assert not torch.equal(bn.running_mean, before)
    assert bn.eps == 1e-5


def test_small_forward_on_cpu_and_classifier_head():
    torch.manual_seed(0)
    backbone = build_backbone("i3d_r50", width_per_group=4).eval()
    clip = torch.randn(2, 3, 8, 64, 64)
    with torch.no_grad():
        fmap = backbone(clip)
        assert fmap.shape == (2, 2048, 4, 4, 4)
        torch.testing.assert_close(global_average_pool(fmap), fmap.mean(dim=(2, 3, 4)))
        logits = I3DClassifier(backbone, num_classes=5).eval()(clip)
    assert logits.shape == (2, 5) and torch.isfinite(logits).all()
    with pytest.raises(ValueError, match="backbone.arch"):
        build_backbone("resnet18")
