"""The boxes rule in the workflow: the target on the synthetic set, and its checks up front."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from regiongraph.dataset.sampling import sample_clip_frames
from regiongraph.io import open_shard
from tests.test_workflow import TINY, run_snakemake

BACKBONE = {"num_frames": 8, "frame_stride": 2}


@pytest.mark.slow
def test_boxes_target_writes_every_shard(tmp_path):
    config = {**TINY, "backbone": BACKBONE, "shards": {"train": 2, "validation": 1, "test": 1}}
    run_snakemake(tmp_path, config, "--cores", "2", "boxes")
    results = tmp_path / "results"
    expect = {"backend": "annotations", "num_frames": 8, "frame_stride": 2, "sampling": "uniform"}
    for split, shards in (("train", 2), ("validation", 1), ("test", 1)):
        index = pd.read_parquet(results / "index" / f"{split}.parquet")
        seen = []
        for k in range(shards):
            with open_shard(
                results / "boxes" / split / f"shard-{k:03d}.h5", "boxes", expect
            ) as shard:
                for video_id in shard:
                    row = index[index.video_id == video_id].iloc[0]
                    assert row.shard == k
                    frames = np.unique(sample_clip_frames(int(row.n_frames), 8, 2).box_frames)
                    assert shard[video_id]["frame_indices"][:].tolist() == frames.tolist()
                    assert shard[video_id]["mask"].shape == (len(frames), 10)
                    assert shard[video_id]["mask"][:].any()  # the toy set's objects
                    seen.append(video_id)
        assert sorted(seen) == sorted(index.video_id)
        assert (results / "logs" / "boxes" / split / "shard-000.log").read_text().strip()


def test_annotations_backend_without_a_file_fails_before_any_job(tmp_path):
    config = {"dataset": {"source": "archives", "archives": "a", "annotations": "b"}}
    proc = run_snakemake(tmp_path, config, "--cores", "1", "-n", "boxes", check=False)
    assert proc.returncode != 0
    assert "dataset.box_annotations" in proc.stdout + proc.stderr


def test_detector_rule_asks_for_a_gpu_and_depends_on_local_weights(tmp_path):
    weights = tmp_path / "detector.pth"
    torch.save({}, weights)
    config = {**TINY, "boxes": {"backend": "torchvision", "weights": str(weights)}}
    proc = run_snakemake(tmp_path, config, "--cores", "1", "-n", "boxes")
    jobs = proc.stdout.split("rule boxes_shard:")[1:]
    assert len(jobs) == 4  # train 2 shards, validation 1, test 1 (the default shards)
    for job in jobs:
        assert str(weights) in job.split("output:")[0]
        assert "gpu=1" in job
    cpu = run_snakemake(tmp_path, {**config, "device": "cpu"}, "--cores", "1", "-n", "boxes")
    assert "gpu=0" in cpu.stdout.split("rule boxes_shard:")[1]
    assert not (tmp_path / "results" / "boxes").exists()  # a dry run writes nothing
