"""The whole chain on a tiny synthetic set, then the Snakemake report built from its results."""

from __future__ import annotations

import json
import os
import subprocess

import h5py
import pandas as pd
import pytest
import yaml

from tests.conftest import REPO, snakemake_cmd, tiny_config

CONFIG = tiny_config(
    backbone={"streams": ["rgb", "flow"]},
    gcn={"models": ["baseline", "joint"], "streams": ["rgb", "flow"], "epochs": 2, "batch_size": 4},
    evaluate={"views": 2, "crops": 3},  # the multi-view test protocol, end to end
)


def _snakemake(workdir, *args):
    proc = subprocess.run(
        snakemake_cmd(
            "-s",
            str(REPO / "Snakefile"),
            "--directory",
            str(workdir),
            "--configfile",
            str(workdir / "tiny.yaml"),
            *args,
        ),
        capture_output=True,
        text=True,
        env={**os.environ, "NO_COLOR": "1"},
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


@pytest.mark.slow
def test_whole_chain_and_report(tmp_path):
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(CONFIG))
    _snakemake(tmp_path, "--cores", "2")
    results = tmp_path / "results"
    test_ids = set(pd.read_parquet(results / "index" / "test.parquet").video_id)
    labels = list(pd.read_csv(results / "index" / "labels.csv").label)
    for model in ("baseline", "joint"):
        metrics = json.loads((results / "gcn" / model / "metrics.json").read_text())
        assert metrics["stream"] == "rgb+flow" and set(metrics["streams"]) == {"rgb", "flow"}
        n_val = len(pd.read_parquet(results / "index" / "validation.parquet"))
        assert metrics["n_videos"] == n_val  # once each, though scored over 6 views
        assert metrics["paper"]["data"] == "demo data"
        for key in ("top1", "top5", "mean_class_accuracy"):
            assert 0.0 <= metrics[key] <= 1.0
        lines = (results / "gcn" / model / "test_predictions.csv").read_text().splitlines()
        rows = [line.split(";", 1) for line in lines]
        assert {video for video, _ in rows} == test_ids and all(
            label in labels for _, label in rows
        )
        for picture in ("confusion.png", "curves.png"):
            assert (results / "gcn" / model / picture).read_bytes()[:4] == b"\x89PNG"
    for stream in ("rgb", "flow"):  # validation and test videos: 2 views x 3 crops, train: 1
        for split, views in (("train", 1), ("validation", 6), ("test", 6)):
            with h5py.File(results / "features" / stream / split / "shard-000.h5", "r") as shard:
                ids = shard["video_id"].asstr()[()].tolist()
                assert sorted(shard["view"][()].tolist()) == sorted(list(range(views)) * (len(ids) // views))
                assert len(ids) == views * len(set(ids))
    _snakemake(tmp_path, "--report", str(tmp_path / "report.html"))
    html = (tmp_path / "report.html").read_text(errors="replace")
    assert "confusion.png" in html and "curves.png" in html and "metrics_table" in html
