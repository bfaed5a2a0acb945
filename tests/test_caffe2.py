"""Caffe2 -> PyTorch conversion: real blob names, a forward checked by hand, a safe unpickler."""

from __future__ import annotations

import logging
import os
import pickle
import struct

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from regiongraph.features.weights import load_weights, prepare_weights
from regiongraph.models.caffe2 import (
    UnsafePickleError,
    convert_caffe2_blobs,
    cross_modality_init,
    load_caffe2_pickle,
)
from regiongraph.models.i3d import build_backbone

# The blobs video-nonlocal-net creates, written out from its source (facebookresearch/
# video-nonlocal-net at c253ed5), independently of our key map:
# - conv1 (weights conv1_w, no bias): lib/models/resnet_video.py:140-145, ConvNd(data, 'conv1',
#   3, 64, [1 + 2 * temp, 7, 7], strides [temp_stride, 2, 2]); Caffe2's ConvNd names its
#   weight <name>_w and its bias <name>_b.
# - res_conv1_bn: resnet_video.py:149-154, SpatialBN (blobs <name>_s, _b, _rm, _riv: scale,
#   bias, running mean, running inverse-variance as saved, used below as the variance).
# - res{L}_{i} blocks: resnet_helper.py:121 ("{}_{}".format(prefix, idx), prefix 'res2'..'res5'
#   from resnet_video.py:163-204); branch2a (1+2*temp x 1 x 1), branch2b (1 x 3 x 3), branch2c
#   (1 x 1 x 1): resnet_helper.py:30-51, each a Conv3dBN, which names its BN <name>_bn
#   (model_builder_video.py:230-241); the shortcut <block>_branch1: resnet_helper.py:88 and
#   _add_shortcut_3d (resnet_helper.py:58-71), only where the width or stride changes.
# - nonlocal_conv{L}_{i}: resnet_helper.py:128-131 (nonlocal_name + '_{idx}', names
#   'nonlocal_conv3' / 'nonlocal_conv4' from resnet_video.py:179, 200) after blocks i with
#   i % nonlocal_mod == nonlocal_mod - 1; its convs _theta (the query), _phi (the key, after
#   max-pooling), _g (the values), _out, and _bn: nonlocal_helper.py:25-129, the affinity
#   theta^T phi (BatchMatMul trans_a, line 83) softmaxed over the phi positions (line 91).
# - pred_w / pred_b: the Kinetics classifier, resnet_video.py:218-224 (dropped by the converter).
BLOCKS = {2: (3, 64, 256, [1, 1, 1]), 3: (4, 128, 512, [1, 0, 1, 0]),
          4: (6, 256, 1024, [1, 0, 1, 0, 1, 0]), 5: (3, 512, 2048, [0, 1, 0])}
NONLOCAL = {3: (1, 3), 4: (1, 3, 5)}


def bn_blobs(prefix, dim, rng):
    return {
        f"{prefix}_s": rng.standard_normal(dim).astype(np.float32),
        f"{prefix}_b": rng.standard_normal(dim).astype(np.float32),
        f"{prefix}_rm": rng.standard_normal(dim).astype(np.float32),
        f"{prefix}_riv": rng.uniform(0.5, 1.5, dim).astype(np.float32),
    }


def caffe2_blobs(nonlocal_net: bool, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)

    def w(*shape):
        return (rng.standard_normal(shape) * 0.05).astype(np.float32)

    blobs = {"conv1_w": w(64, 3, 5, 7, 7), **bn_blobs("res_conv1_bn", 64, rng)}
    dim_in = 64
    for stage, (n, inner, out, temporal) in BLOCKS.items():
        for i in range(n):
            p = f"res{stage}_{i}"
            kt = 1 + 2 * temporal[i]
            blobs[f"{p}_branch2a_w"] = w(inner, dim_in, kt, 1, 1)
            blobs[f"{p}_branch2b_w"] = w(inner, inner, 1, 3, 3)
            blobs[f"{p}_branch2c_w"] = w(out, inner, 1, 1, 1)
            for branch, dim in (("2a", inner), ("2b", inner), ("2c", out)):
                blobs.update(bn_blobs(f"{p}_branch{branch}_bn", dim, rng))
            if i == 0:
                blobs[f"{p}_branch1_w"] = w(out, dim_in, 1, 1, 1)
                blobs.update(bn_blobs(f"{p}_branch1_bn", out, rng))
            dim_in = out
            if nonlocal_net and i in NONLOCAL.get(stage, ()):
                q = f"nonlocal_conv{stage}_{i}"
                for part, (o, c) in {"theta": (out // 2, out), "phi": (out // 2, out),
                                     "g": (out // 2, out), "out": (out, out // 2)}.items():
                    blobs[f"{q}_{part}_w"] = w(o, c, 1, 1, 1)
                    blobs[f"{q}_{part}_b"] = w(o)
                blobs.update(bn_blobs(f"{q}_bn", out, rng))
    blobs["pred_w"], blobs["pred_b"] = w(400, 2048), w(400)
    blobs["conv1_w_momentum"] = w(64, 3, 5, 7, 7)
    blobs["res2_0_branch2a_bn_s_momentum"] = w(64)
    blobs["lr"] = np.array([0.0001], dtype=np.float32)
    blobs["model_iter"] = 400000
    return blobs


class Python2Pickler(pickle._Pickler):
    """Writes bytes as Python 2 ``str`` (BINSTRING), as the Caffe2 pickles have them."""

    dispatch = pickle._Pickler.dispatch.copy()

    def save_py2_str(self, obj):
        if len(obj) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(obj)]) + obj)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(obj)) + obj)
        self.memoize(obj)

    dispatch[bytes] = save_py2_str


@pytest.fixture(scope="module")
def nl_pickle(tmp_path_factory):
    blobs = caffe2_blobs(nonlocal_net=True)
    path = tmp_path_factory.mktemp("caffe2") / "i3d_nonlocal_32x2_IN_pretrain_400k.pkl"
    with open(path, "wb") as handle:
        Python2Pickler(handle, protocol=2).dump({"blobs": blobs})
    return path, blobs


def bn(x, blobs, prefix):
    shape = (1, -1, 1, 1, 1)
    s, b = (torch.from_numpy(blobs[f"{prefix}_{k}"]).view(shape) for k in ("s", "b"))
    rm, riv = (torch.from_numpy(blobs[f"{prefix}_{k}"]).view(shape) for k in ("rm", "riv"))
    return (x - rm) / torch.sqrt(riv + 1e-5) * s + b


def test_python2_pickle_converts_and_forward_matches_hand_computation(nl_pickle):
    path, blobs = nl_pickle
    loaded = load_caffe2_pickle(path)
    assert set(loaded) == set(blobs)
    np.testing.assert_array_equal(loaded["res4_3_branch2b_w"], blobs["res4_3_branch2b_w"])
    model = build_backbone("i3d_nl_r50")
    model.load_state_dict(convert_caffe2_blobs(loaded, model), strict=True)
    model.eval()
    captured = {}
    model.res2.blocks[0].register_forward_hook(lambda m, i, o: captured.update(res2_0=o))
    x = torch.randn(1, 3, 4, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        model(x)
        # conv1 + BN + ReLU + pool1 (1x3x3, stride (1, 2, 2), no padding) by hand
        t = lambda name: torch.from_numpy(blobs[name])  # noqa: E731
        stem = F.conv3d(x, t("conv1_w"), stride=(1, 2, 2), padding=(2, 3, 3))
        stem = F.max_pool3d(F.relu(bn(stem, blobs, "res_conv1_bn")), (1, 3, 3), (1, 2, 2))
        torch.testing.assert_close(model.stem(x), stem, rtol=1e-4, atol=1e-4)
        # bottleneck res2_0: 3x1x1 -> 1x3x3 -> 1x1x1, shortcut branch1
        a = F.relu(bn(F.conv3d(stem, t("res2_0_branch2a_w"), padding=(1, 0, 0)), blobs, "res2_0_branch2a_bn"))
        b = F.relu(bn(F.conv3d(a, t("res2_0_branch2b_w"), padding=(0, 1, 1)), blobs, "res2_0_branch2b_bn"))
        c = bn(F.conv3d(b, t("res2_0_branch2c_w")), blobs, "res2_0_branch2c_bn")
        shortcut = bn(F.conv3d(stem, t("res2_0_branch1_w")), blobs, "res2_0_branch1_bn")
        torch.testing.assert_close(captured["res2_0"], F.relu(c + shortcut), rtol=1e-4, atol=1e-4)
    nl = model.res4.nonlocal_blocks["3"]
    np.testing.assert_array_equal(nl.theta.bias.detach().numpy(), blobs["nonlocal_conv4_3_theta_b"])
    np.testing.assert_array_equal(nl.bn.running_var.numpy(), blobs["nonlocal_conv4_3_bn_riv"])


def test_flat_blob_dict_of_the_baseline_converts(tmp_path):
    blobs = caffe2_blobs(nonlocal_net=False, seed=2)
    path = tmp_path / "flat.pkl"
    path.write_bytes(pickle.dumps(blobs, protocol=4))  # no 'blobs' wrapper, numpy 2 names
    model = build_backbone("i3d_r50")
    state = convert_caffe2_blobs(load_caffe2_pickle(path), model)
    np.testing.assert_array_equal(state["res5.blocks.1.branch2a.weight"].numpy(), blobs["res5_1_branch2a_w"])
    np.testing.assert_array_equal(state["stem.bn.running_var"].numpy(), blobs["res_conv1_bn_riv"])


def test_unused_missing_and_mismatched_blobs_are_all_listed():
    blobs = caffe2_blobs(nonlocal_net=False, seed=3)
    del blobs["res3_2_branch2b_bn_rm"]
    blobs["res4_0_branch2a_w"] = blobs["res4_0_branch2a_w"][:, :, :1]  # 3x1x1 kernel cut to 1
    blobs["res6_0_branch2a_w"] = np.zeros(3, np.float32)
    with pytest.raises(ValueError) as error:
        convert_caffe2_blobs(blobs, build_backbone("i3d_r50"), source="w.pkl")
    message = str(error.value)
    assert "w.pkl" in message
    assert "res6_0_branch2a_w" in message  # unused
    assert "res3.blocks.2.branch2b_bn.running_mean" in message  # missing
    assert "res4_0_branch2a_w" in message and "(256, 512, 1, 1, 1) vs (256, 512, 3, 1, 1)" in message
    # non-local blobs given to the plain model are unused, not silently dropped
    nl = caffe2_blobs(nonlocal_net=True, seed=3)
    with pytest.raises(ValueError, match="nonlocal_conv3_1_theta_w"):
        convert_caffe2_blobs(nl, build_backbone("i3d_r50"))


class Exploit:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_pickle_that_runs_code_is_refused_and_nothing_runs(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps({"blobs": {"conv1_w": Exploit(marker)}}, protocol=2))
    with pytest.raises(UnsafePickleError) as error:
        load_caffe2_pickle(path)
    assert str(path) in str(error.value) and "system" in str(error.value)
    assert not marker.exists()
    # any other class is refused too, even a harmless-looking one
    path.write_bytes(pickle.dumps({"blobs": {"x": torch.nn.Identity()}}))
    with pytest.raises(UnsafePickleError, match="torch"):
        load_caffe2_pickle(path)


def test_cross_modality_init_averages_conv1_over_rgb():
    rgb = build_backbone("i3d_r50", width_per_group=4).state_dict()
    flow = cross_modality_init(rgb)
    mean = rgb["stem.conv.weight"].mean(dim=1)
    assert flow["stem.conv.weight"].shape == (64, 2, 5, 7, 7)
    for channel in range(2):
        torch.testing.assert_close(flow["stem.conv.weight"][:, channel], mean)
    assert all(torch.equal(flow[k], rgb[k]) for k in rgb if k != "stem.conv.weight")
    build_backbone("i3d_r50", "flow", width_per_group=4).load_state_dict(flow, strict=True)


def test_prepare_weights_from_pickle_and_random(nl_pickle, tmp_path, caplog):
    path, blobs = nl_pickle
    outputs = {"rgb": tmp_path / "rgb.pt", "flow": tmp_path / "flow.pt"}
    meta = prepare_weights(str(path), "i3d_nl_r50", outputs, tmp_path / "cache")
    assert meta["source_checksum"].startswith("sha256:") and not meta["random_init"]
    state, saved = load_weights(outputs["flow"], expect={"arch": "i3d_nl_r50", "stream": "flow"})
    assert saved["source_checksum"] == meta["source_checksum"]
    np.testing.assert_allclose(
        state["stem.conv.weight"][:, 1].numpy(), blobs["conv1_w"].mean(axis=1), rtol=1e-6
    )
    with pytest.raises(ValueError, match="stream"):
        load_weights(outputs["rgb"], expect={"stream": "flow"})

    with caplog.at_level(logging.WARNING):
        prepare_weights(None, "i3d_r50", {"rgb": tmp_path / "r.pt"}, tmp_path, width_per_group=4)
    assert "RANDOM weights" in caplog.text
    assert load_weights(tmp_path / "r.pt")[1]["random_init"] is True
    with pytest.raises(FileNotFoundError, match="backbone.weights"):
        prepare_weights(str(tmp_path / "nowhere.pkl"), "i3d_r50", outputs, tmp_path / "cache")
