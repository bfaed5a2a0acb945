"""Feature caching: box mapping through resize + crop + RoIAlign, flow input, the HDF5 shard,
dropped videos, and fine-tuning's resume."""

from __future__ import annotations

import cv2
import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from regiongraph.dataset.sampling import box_frames_of_views, sample_clip_frames
from regiongraph.detect.boxes import VideoBoxes
from regiongraph.detect.storage import write_video_boxes
from regiongraph.features.cache import (
    BackboneSettings,
    FeatureJob,
    cache_features_shard,
    roi_features,
)
from regiongraph.features.clips import ClipDataset, ClipSettings, to_network_input
from regiongraph.features.transforms import centre_crop_geometry, map_boxes, spatial_crop_geometry
from regiongraph.features.weights import load_weights, prepare_weights
from regiongraph.flow.quantize import quantize_flow
from regiongraph.flow.storage import write_video_flow
from regiongraph.io import open_shard, shard_drops, shard_writer
from regiongraph.models.i3d import build_backbone, global_average_pool
from regiongraph.train.finetune import FinetuneSettings, finetune_backbone


def write_video(folder, frames):
    folder.mkdir(parents=True)
    for i, frame in enumerate(frames):
        cv2.imwrite(str(folder / f"{i + 1:05d}.jpg"), cv2.cvtColor(frame, cv2.COLOR_RGB2BGR),
                    [cv2.IMWRITE_JPEG_QUALITY, 98])


def write_boxes_shard(path, videos, num_frames, stride, per_frame, sampling="uniform", views=1, box_every=2):
    """A boxes shard as docs/formats.md describes, the same boxes on every box frame of every
    view; ``videos``: id -> (n_frames, h, w, boxes)."""
    with shard_writer(path, "boxes", {"backend": "annotations", "per_frame": per_frame}) as handle:
        for video_id, (n_frames, h, w, boxes) in videos.items():
            frames = box_frames_of_views(n_frames, num_frames, stride, sampling, views, box_every)
            found = VideoBoxes.empty(len(frames), per_frame)
            for t in range(len(frames)):
                found.set_frame(t, boxes, np.ones(len(boxes)), np.zeros(len(boxes)))
            write_video_boxes(handle, video_id, found, frames, h, w)


def index_frame(rows):
    frame = pd.DataFrame(rows, columns=["video_id", "label_index", "n_frames", "height", "width", "frame_dir"])
    frame["split"], frame["label"], frame["shard"] = "validation", "x", 0
    return frame


# A wide frame (100x200): resize_short 256 -> 256x512, centre crop 224 at x0 = 144, y0 = 16.
# The bright square at x 90..110, y 40..60 lands at 86.4..137.6 in the crop. Box 0 lies
# outside the crop, but a mapping that forgot the crop offset would put it on the square;
# the others are beside, above and below the square.
SQUARE = [90, 40, 110, 60]
NO_OFFSET_DECOY = [33.75, 40, 53.75, 60]
DECOYS = [[60, 40, 80, 60], [115, 40, 135, 60], [90, 10, 110, 30], [90, 70, 110, 90]]


def test_box_through_resize_crop_and_roialign_hits_the_bright_square(tmp_path):
    frame = np.full((100, 200, 3), 20, np.uint8)
    frame[40:60, 90:110] = 250
    n = 8
    write_video(tmp_path / "frames" / "v1", [frame] * n)
    boxes = np.array([NO_OFFSET_DECOY, DECOYS[0], SQUARE, *DECOYS[1:]], np.float32)
    write_boxes_shard(tmp_path / "boxes.h5", {"v1": (n, 100, 200, boxes)}, 4, 2, per_frame=8)
    index = index_frame([("v1", 0, n, 100, 200, str(tmp_path / "frames" / "v1"))])
    settings = ClipSettings(num_frames=4, frame_stride=2, resize_short=256, crop_size=224, per_frame=8)
    item = ClipDataset(index, settings, boxes_paths={0: tmp_path / "boxes.h5"})[0]
    assert item["error"] == "" and item["clip"].shape == (3, 4, 224, 224)
    assert item["mask"][:, 1:6].all() and not item["mask"][:, 0].any() and not item["mask"][:, 6:].any()
    torch.testing.assert_close(item["boxes"][0, 2], torch.tensor([86.4, 86.4, 137.6, 137.6]))
    # a fixed filter with the backbone's stride 16: mean brightness of 16x16 cells
    x = to_network_input(item["clip"][None], 114.75, 57.375, "cpu")
    fmap = F.avg_pool2d(x.mean(1).reshape(-1, 1, 224, 224), 16).reshape(1, 4, 1, 14, 14)
    fmap = fmap.permute(0, 2, 1, 3, 4)[:, :, ::2]  # (1, 1, T=2, 14, 14): one per box frame
    response = roi_features(fmap, item["boxes"][None], item["mask"][None], 1 / 16)[0, :, :, 0]
    assert (response[:, :6].argmax(dim=1) == 2).all()
    assert (response[:, 2] > 0.5).all()  # the square is bright (normalised > 0)


def test_map_boxes_clips_to_the_crop_and_invalidates_boxes_outside():
    geometry = centre_crop_geometry(100, 200, 128, 112)  # 128x256, x0 = 72, y0 = 8
    boxes = np.array([[0, 0, 10, 10], [50, 10, 60, 90], [95, 50, 200, 100]], np.float32)
    mapped, valid = map_boxes(boxes, np.ones(3, bool), geometry)
    assert valid.tolist() == [False, True, True]
    # x: 50 * 1.28 - 72 = -8 (clipped to 0), 60 * 1.28 - 72 = 4.8; y: 10 * 1.28 - 8, 90 * 1.28 - 8
    np.testing.assert_allclose(mapped[1], [0, 4.8, 4.8, 107.2], atol=1e-4)
    np.testing.assert_allclose(mapped[2], [121.6 - 72, 64 - 8, 112, 112], atol=1e-4)
    assert (mapped[0] == 0).all()


def test_flow_clip_uses_the_flow_of_each_frame_scaled_by_the_resize(tmp_path):
    n, h, w = 6, 40, 60
    flow = np.zeros((n - 1, h, w, 2), np.float32)
    for i in range(n - 1):
        flow[i, ..., 0] = i  # dx = frame index, dy = -1
        flow[i, ..., 1] = -1
    with shard_writer(tmp_path / "flow.h5", "flow", {"backend": "opencv", "bound": 20}) as handle:
        write_video_flow(handle, "v1", quantize_flow(flow, 20))
    index = index_frame([("v1", 0, n, h, w, str(tmp_path / "none"))])
    settings = ClipSettings(
        stream="flow", num_frames=4, frame_stride=2, resize_short=80, crop_size=64, sampling="dense"
    )
    item = ClipDataset(index, settings, flow_paths={0: tmp_path / "flow.h5"})[0]
    # 6 frames, span 7: looped clip 0, 2, 4, 0; frame 4 uses flow[4]; scale 80 / 40 = 2
    assert sample_clip_frames(n, 4, 2, mode="dense").frames.tolist() == [0, 2, 4, 0]
    clip = item["clip"].numpy()
    assert clip.shape == (2, 4, 64, 64)
    unit = 2 * 127.5 / (20 * 57.375)
    quantum = 2 * 20 / 255 * unit  # one quantisation level
    np.testing.assert_allclose(clip[0, :, 5, 5], np.array([0, 2, 4, 0]) * unit, atol=quantum)
    np.testing.assert_allclose(clip[1], -unit, atol=quantum)
    # the last frame of a video has no successor: flow[n - 2]
    settings_last = ClipSettings(stream="flow", num_frames=2, frame_stride=5, resize_short=80, crop_size=64)
    last = ClipDataset(index, settings_last, flow_paths={0: tmp_path / "flow.h5"})[0]["clip"]
    np.testing.assert_allclose(last[0, 1].numpy(), 4 * unit, atol=quantum)


@pytest.fixture
def tiny_shard(tmp_path):
    """Three videos: v1 with boxes, v2 without boxes, v3 with a corrupt JPEG."""
    rng = np.random.default_rng(0)
    rows, boxes = [], {}
    for vid, n in (("v1", 9), ("v2", 7), ("v3", 8)):
        frames = [rng.integers(0, 255, (36, 48, 3), dtype=np.uint8) for _ in range(n)]
        write_video(tmp_path / "frames" / vid, frames)
        rows.append((vid, 1, n, 36, 48, str(tmp_path / "frames" / vid)))
        if vid != "v2":
            boxes[vid] = (n, 36, 48, np.array([[4, 4, 30, 30], [20, 10, 44, 34]], np.float32))
    # frame 3 (0-based) is one of the 4 uniform samples 1, 3, 5, 7 of its 8 frames
    (tmp_path / "frames" / "v3" / "00004.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    index_frame(rows).to_parquet(tmp_path / "index.parquet")
    write_boxes_shard(tmp_path / "boxes.h5", boxes, 4, 2, per_frame=3)
    prepare_weights(None, "i3d_r50", {"rgb": tmp_path / "rgb.pt"}, tmp_path, width_per_group=4)
    return tmp_path


def run_cache(root, output, workers, jpeg_decode="auto"):
    clip = ClipSettings(num_frames=4, frame_stride=2, resize_short=40, crop_size=32, per_frame=3)
    backbone = BackboneSettings(width_per_group=4)
    counts = cache_features_shard(
        root / "index.parquet", 0, output, root / "rgb.pt", clip, backbone, root / "boxes.h5",
        "annotations", FeatureJob(device="cpu", batch_size=2, workers=workers, jpeg_decode=jpeg_decode),
    )
    return counts, clip, backbone


def test_features_shard_round_trip_drops_corrupt_and_handles_missing_boxes(tiny_shard):
    root = tiny_shard
    counts, clip, backbone = run_cache(root, root / "features.h5", workers=1)
    assert counts == {"videos": 2, "dropped": 1}
    dropped = pd.DataFrame(shard_drops(root / "features.h5"))
    assert dropped[["video_id", "stage"]].values.tolist() == [["v3", "features"]]
    assert "00004.jpg" in dropped["reason"].iloc[0]
    with open_shard(root / "features.h5", stage="features", expect={"crop_size": 32, "stream": "rgb"}) as h:
        assert [v.decode() for v in h["video_id"][()]] == ["v1", "v2"]
        assert h["global"].dtype == np.float16 and h["global"].shape == (2, 2048)
        assert h["roi"].shape == (2, 2, 3, 2048) and h["roi"].chunks == (1, 2, 3, 2048)
        assert h["label_index"][()].tolist() == [1, 1]
        mask, roi, boxes, pooled = h["mask"][()], h["roi"][()], h["boxes"][()], h["global"][()]
    assert mask[0, :, :2].all() and not mask[0, :, 2].any()
    assert not mask[1].any() and not roi[1].any()  # v2: no boxes -> empty RoI block
    assert np.abs(roi[0, :, :2]).sum() > 0 and not roi[0, :, 2].any()
    # the same numbers from the model directly
    state, _ = load_weights(root / "rgb.pt")
    model = build_backbone("i3d_r50", width_per_group=4)
    model.load_state_dict(state)
    model.eval()
    item = ClipDataset(pd.read_parquet(root / "index.parquet"), clip, {0: root / "boxes.h5"})[0]
    with torch.no_grad():
        fmap = model(to_network_input(item["clip"][None], clip.mean, clip.std, "cpu"))
        expected_roi = roi_features(fmap, item["boxes"][None], item["mask"][None], 1 / 16)
    np.testing.assert_allclose(pooled[0], global_average_pool(fmap)[0].numpy(), rtol=2e-3, atol=2e-3)
    np.testing.assert_allclose(roi[0], expected_roi[0].numpy(), rtol=2e-3, atol=2e-3)
    np.testing.assert_allclose(boxes[0], item["boxes"].numpy())
    # rerunning gives the same features and the same record of what was dropped
    run_cache(root, root / "again.h5", workers=0)
    with open_shard(root / "again.h5") as h:
        assert np.array_equal(h["roi"][()], roi) and np.array_equal(h["global"][()], pooled)
    assert shard_drops(root / "again.h5") == shard_drops(root / "features.h5")
    with open_shard(root / "again.h5") as a, open_shard(root / "features.h5") as b:
        assert a.attrs["content_digest"] == b.attrs["content_digest"]


def test_features_from_frames_decoded_on_the_device_match_the_host_path(tiny_shard):
    """backbone.jpeg_decode: device (nvJPEG on a GPU) decodes, resizes and crops each batch
    with torchvision on the job's device; here on the CPU. Same videos, same drops, the same
    boxes, features within the rounding of a level of 255 in the resized clips."""
    root = tiny_shard
    run_cache(root, root / "host.h5", workers=0, jpeg_decode="host")
    counts, _, _ = run_cache(root, root / "device.h5", workers=1, jpeg_decode="device")
    assert counts == {"videos": 2, "dropped": 1}
    assert [d["video_id"] for d in shard_drops(root / "device.h5")] == ["v3"]
    with open_shard(root / "host.h5") as a, open_shard(root / "device.h5") as b:
        assert a["video_id"][()].tolist() == b["video_id"][()].tolist()
        np.testing.assert_array_equal(a["boxes"][()], b["boxes"][()])
        for key in ("global", "roi"):
            x, y = a[key][()].astype(np.float32), b[key][()].astype(np.float32)
            assert np.abs(x - y).max() <= 0.02 * np.abs(x).max() + 1e-3, key


def test_boxes_from_other_sampling_settings_are_refused(tiny_shard):
    index = pd.read_parquet(tiny_shard / "index.parquet")
    for other in ({"sampling": "dense"}, {"views": 2}):
        clip = ClipSettings(num_frames=4, frame_stride=1, resize_short=40, crop_size=32, per_frame=3, **other)
        dataset = ClipDataset(index, clip, {0: tiny_shard / "boxes.h5"})
        with pytest.raises(ValueError, match=r"needs frames \[.*sampling or evaluate.views"):
            dataset[dataset.views_per_video - 1]  # v1, its last view


def _finetune_inputs(root):
    index = pd.read_parquet(root / "index.parquet")
    index = index[index["video_id"] != "v3"].assign(label_index=[0, 1])
    index.to_parquet(root / "train.parquet")
    pd.DataFrame({"label_index": [0, 1], "label": ["a", "b"]}).to_csv(root / "labels.csv", index=False)


def test_finetune_that_diverges_stops_with_an_error_naming_the_knobs(tiny_shard, tmp_path):
    _finetune_inputs(tiny_shard)
    clip = ClipSettings(num_frames=4, frame_stride=2, resize_short=40, crop_size=32, training=True)
    # frozen BatchNorm statistics of a random init normalise nothing: without clipping, a large
    # step sends the activations to infinity within a few steps
    settings = FinetuneSettings(epochs=4, lr=1.0, batch_size=1, workers=0, clip_grad_norm=None)
    with pytest.raises(FloatingPointError, match=r"diverged: the loss is .* lower backbone.finetune.lr \(1.0\)"):
        finetune_backbone(
            tiny_shard / "train.parquet", tiny_shard / "labels.csv", tiny_shard / "rgb.pt",
            tmp_path / "out.pt", tmp_path / "ckpt", clip, BackboneSettings(width_per_group=4),
            settings, device="cpu",
        )
    assert not (tmp_path / "out.pt").exists()


def test_finetune_resumed_equals_uninterrupted(tiny_shard, tmp_path, caplog):
    root = tiny_shard
    _finetune_inputs(root)
    clip = ClipSettings(num_frames=4, frame_stride=2, resize_short=40, crop_size=32, training=True)
    backbone = BackboneSettings(width_per_group=4)
    settings = FinetuneSettings(epochs=2, lr=0.01, batch_size=1, workers=0, freeze_bn=False)

    def run(out, checkpoints, on_epoch_end=None):
        return finetune_backbone(
            root / "train.parquet", root / "labels.csv", root / "rgb.pt", out, checkpoints,
            clip, backbone, settings, device="cpu", on_epoch_end=on_epoch_end,
        )

    run(tmp_path / "full.pt", tmp_path / "ckpt_full")

    def interrupt(epoch):
        raise KeyboardInterrupt(f"killed after epoch {epoch}")

    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "resumed.pt", tmp_path / "ckpt", on_epoch_end=interrupt)
    assert not (tmp_path / "resumed.pt").exists()
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == ["epoch-1.pt"]
    run(tmp_path / "resumed.pt", tmp_path / "ckpt")
    full, meta = load_weights(tmp_path / "full.pt")
    resumed, _ = load_weights(tmp_path / "resumed.pt")
    initial, _ = load_weights(root / "rgb.pt")
    assert meta["finetune_epochs"] == 2
    assert not torch.equal(full["res5.blocks.2.branch2c.weight"], initial["res5.blocks.2.branch2c.weight"])
    for key in full:
        assert torch.equal(full[key], resumed[key]), key
    # checkpoints of another run (here: another learning rate) are set aside, never resumed
    settings = FinetuneSettings(epochs=2, lr=0.02, batch_size=1, workers=0, freeze_bn=False)
    with caplog.at_level("WARNING"):
        run(tmp_path / "other.pt", tmp_path / "ckpt")
    assert "belong to another run (finetune.lr: 0.01 -> 0.02)" in caplog.text
    assert sorted(p.name for p in (tmp_path / "ckpt.stale").iterdir()) == ["epoch-1.pt", "epoch-2.pt"]
    run(tmp_path / "other-fresh.pt", tmp_path / "ckpt-fresh")
    other, _ = load_weights(tmp_path / "other.pt")
    fresh, _ = load_weights(tmp_path / "other-fresh.pt")
    assert all(torch.equal(other[key], fresh[key]) for key in fresh)
    assert not torch.equal(other["res5.blocks.2.branch2c.weight"], full["res5.blocks.2.branch2c.weight"])


def test_finetune_on_frames_decoded_on_the_device_follows_the_host_run(tiny_shard, tmp_path):
    """backbone.jpeg_decode: device in fine-tuning: the same clips within a level of 255, so
    losses within a few percent (a random network is sensitive to one level; a zero or
    misplaced clip is further off)."""
    root = tiny_shard
    _finetune_inputs(root)
    clip = ClipSettings(num_frames=4, frame_stride=2, resize_short=40, crop_size=32, training=True)
    settings = FinetuneSettings(epochs=1, lr=0.01, batch_size=2, workers=0, freeze_bn=False)
    results = {}
    for where in ("host", "device"):
        results[where] = finetune_backbone(
            root / "train.parquet", root / "labels.csv", root / "rgb.pt", tmp_path / f"{where}.pt",
            tmp_path / f"ckpt-{where}", clip, BackboneSettings(width_per_group=4), settings,
            device="cpu", jpeg_decode=where,
        )
    assert results["device"]["losses"] == pytest.approx(results["host"]["losses"], rel=5e-2)
    host, _ = load_weights(tmp_path / "host.pt")
    device, _ = load_weights(tmp_path / "device.pt")
    assert not all(torch.equal(host[k], device[k]) for k in host)  # two runs, not one copied


def test_finetune_with_zero_epochs_passes_the_weights_through(tiny_shard, tmp_path):
    clip = ClipSettings(num_frames=4, frame_stride=2, resize_short=40, crop_size=32, training=True)
    finetune_backbone(
        tiny_shard / "index.parquet", tiny_shard / "none.csv", tiny_shard / "rgb.pt",
        tmp_path / "out.pt", tmp_path / "ckpt", clip, BackboneSettings(width_per_group=4),
        FinetuneSettings(epochs=0), device="cpu",
    )
    before, _ = load_weights(tiny_shard / "rgb.pt")
    after, meta = load_weights(tmp_path / "out.pt")
    assert meta["finetune_epochs"] == 0 and all(torch.equal(before[k], after[k]) for k in before)


@pytest.mark.parametrize(("t_feat", "t_box"), [(4, 4), (4, 2), (2, 2)])
def test_each_box_reads_the_feature_frame_of_its_box_frame(t_feat, t_box):
    """Box frame t of T_box reads feature frame t * T' // T_box (the same frame at the paper's
    strides): a map whose frames differ over time gives each box frame its own value."""
    fmap = torch.arange(1.0, t_feat + 1).view(1, 1, t_feat, 1, 1).expand(2, 3, t_feat, 14, 14)
    boxes = torch.tensor([10.0, 10.0, 120.0, 120.0]).expand(2, t_box, 2, 4).clone()
    mask = torch.ones(2, t_box, 2, dtype=torch.bool)
    mask[1, 0, 1] = False
    out = roi_features(fmap.contiguous(), boxes, mask, 1 / 16)
    for t in range(t_box):
        expected = t * t_feat // t_box + 1
        torch.testing.assert_close(out[0, t], torch.full((2, 3), float(expected)))
    assert (out[1, 0, 1] == 0).all()  # an invalid box gives zeros


def test_rgb_features_follow_a_square_moving_over_time(tmp_path):
    """End to end on the backbone's input: a bright square moves right frame by frame and the
    box follows it; the RoI response of every box frame comes from that frame."""
    n, frames = 8, []
    for t in range(n):  # one 16-px cell of the stride-16 map further right every two frames
        frame = np.full((64, 64, 3), 20, np.uint8)
        frame[16:32, 16 * (t // 2) : 16 * (t // 2) + 16] = 250
        frames.append(frame)
    write_video(tmp_path / "frames" / "v1", frames)
    clip_settings = ClipSettings(num_frames=8, resize_short=64, crop_size=64, per_frame=1)
    clip = sample_clip_frames(n, 8)
    assert clip.box_frames.tolist() == [0, 2, 4, 6]
    found = VideoBoxes.empty(4, 1)
    # the box of frame 0's square, on every box frame: it sees the square only where it is
    for t in range(4):
        found.set_frame(t, np.array([[0, 16, 16, 32]], np.float32), np.ones(1), np.zeros(1))
    with shard_writer(tmp_path / "boxes.h5", "boxes", {"per_frame": 1}) as handle:
        write_video_boxes(handle, "v1", found, clip.box_frames, 64, 64)
    index = index_frame([("v1", 0, n, 64, 64, str(tmp_path / "frames" / "v1"))])
    item = ClipDataset(index, clip_settings, boxes_paths={0: tmp_path / "boxes.h5"})[0]
    x = to_network_input(item["clip"][None], 114.75, 57.375, "cpu")
    fmap = F.avg_pool2d(x.mean(1).reshape(-1, 1, 64, 64), 16).reshape(1, 8, 1, 4, 4)
    fmap = fmap.permute(0, 2, 1, 3, 4)[:, :, ::2]  # one feature frame per box frame
    response = roi_features(fmap, item["boxes"][None], item["mask"][None], 1 / 16)[0, :, 0, 0]
    assert response[0] > 0.5  # frame 0: the square is inside the box
    assert (response[1:] < response[0] - 0.5).all()  # it has moved on in the later frames


def test_training_clips_are_never_mirrored(tmp_path):
    """Something-Something labels say "from left to right": a training transform may crop
    and shift, never flip. A frame that brightens left to right must stay so in every clip."""
    ramp = np.tile(np.linspace(10, 245, 96).astype(np.uint8)[None, :, None], (48, 1, 3))
    write_video(tmp_path / "frames" / "v1", [ramp] * 6)
    index = index_frame([("v1", 0, 6, 48, 96, str(tmp_path / "frames" / "v1"))])
    settings = ClipSettings(num_frames=4, resize_short=48, crop_size=40, training=True, seed=1)
    dataset = ClipDataset(index, settings)
    offsets = set()
    for epoch in range(40):
        dataset.set_epoch(epoch)
        clip = dataset[0]["clip"].float()  # (3, T, S, S)
        columns = clip.mean(dim=(0, 1, 2))
        assert (columns[1:] >= columns[:-1] - 1).all(), f"epoch {epoch}: a mirrored clip"
        offsets.add(round(float(columns[0])))
    assert len(offsets) > 3  # the crops did move: the test saw the random transform at work


def test_three_crops_cover_the_long_side_and_one_crop_is_the_centre():
    wide = [spatial_crop_geometry(100, 200, 128, 112, c, 3) for c in range(3)]  # 128 x 256
    assert [(g.y0, g.x0) for g in wide] == [(8, 0), (8, 72), (8, 144)]
    tall = [spatial_crop_geometry(200, 100, 128, 112, c, 3) for c in range(3)]  # 256 x 128
    assert [(g.y0, g.x0) for g in tall] == [(0, 8), (72, 8), (144, 8)]
    assert spatial_crop_geometry(100, 200, 128, 112, 0, 1) == centre_crop_geometry(100, 200, 128, 112)
    with pytest.raises(ValueError, match="crop 3 is not one of the 3 crops"):
        spatial_crop_geometry(100, 200, 128, 112, 3, 3)


def test_evaluation_items_are_every_view_and_crop_of_every_video(tmp_path):
    """views x crops items per video, in order; each temporal view reads its own frames and
    boxes, each crop its own window (the boxes mapped through it)."""
    n = 16
    frames = [np.full((40, 80, 3), 10 * t, np.uint8) for t in range(n)]  # brightness = frame
    write_video(tmp_path / "frames" / "v1", frames)
    box = np.array([[30, 10, 50, 30]], np.float32)
    write_boxes_shard(tmp_path / "boxes.h5", {"v1": (n, 40, 80, box)}, 4, 2, per_frame=1, views=2)
    index = index_frame([("v1", 0, n, 40, 80, str(tmp_path / "frames" / "v1"))])
    settings = ClipSettings(num_frames=4, resize_short=40, crop_size=40, per_frame=1, views=2, crops=3)
    dataset = ClipDataset(index, settings, boxes_paths={0: tmp_path / "boxes.h5"})
    assert len(dataset) == 6
    items = [dataset[i] for i in range(6)]
    assert [item["view"] for item in items] == list(range(6))
    # temporal views 0 and 1: segment offsets 1/4 and 3/4 of 4-frame segments
    for item, frames_used in ((items[0], [1, 5, 9, 13]), (items[3], [3, 7, 11, 15])):
        brightness = item["clip"].float().mean(dim=(0, 2, 3)).round().tolist()
        assert brightness == [10.0 * f for f in frames_used]
    # crops 0, 1, 2 of view 0: the 80-px width at x0 = 0, 20, 40; the box at x 30..50
    assert [items[c]["boxes"][0, 0, 0].item() for c in range(3)] == [30.0, 10.0, 0.0]
    assert [items[c]["boxes"][0, 0, 2].item() for c in range(3)] == [40.0, 30.0, 10.0]
    with pytest.raises(ValueError, match="training clips are one random view"):
        ClipSettings(views=2, training=True)
