"""The workflow itself: config validation, stage targets, forced reruns, DAG size at SSv1 scale."""

from __future__ import annotations

import os
import re
import subprocess
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from tests.conftest import REPO, snakemake_cmd, tiny_config

# the tiny toy set only: every stage keeps its demo settings and shard counts
TINY = {key: tiny_config()[key] for key in ("dataset", "index")}


def run_snakemake(workdir: Path, config: dict, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    configfile = workdir / "config.yaml"
    configfile.write_text(yaml.safe_dump(config))
    cmd = snakemake_cmd(
        "-s", str(REPO / "Snakefile"), "--directory", str(workdir), "--configfile", str(configfile), *args
    )
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "NO_COLOR": "1"})
    if check and proc.returncode:
        raise AssertionError(f"snakemake failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


def job_counts(output: str) -> dict[str, int]:
    """The 'Job stats' table Snakemake prints, as {rule: count}."""
    block = output.split("Job stats:")[-1]
    counts = {}
    for line in block.splitlines()[3:]:
        match = re.match(r"^(\S+)\s+(\d+)$", line.strip())
        if not match:
            break
        counts[match[1]] = int(match[2])
    counts.pop("total", None)
    return counts


@pytest.mark.parametrize(
    ("config", "names"),
    [
        ({"index": {"min_frame": 3}}, ["min_frame"]),
        ({"index": {"min_frames": "many"}}, ["min_frames", "many"]),
        ({"shard": {"train": 2}}, ["shard"]),
        ({"flow": {"backend": "cuda-magic"}}, ["backend", "cuda-magic"]),
    ],
)
def test_bad_config_fails_before_any_job(tmp_path, config, names):
    proc = run_snakemake(tmp_path, config, "--cores", "1", "index", check=False)
    assert proc.returncode != 0
    message = proc.stdout + proc.stderr
    for name in names:
        assert name in message
    assert not (tmp_path / "results").exists() and not (tmp_path / "resources").exists()


@pytest.mark.slow
def test_index_target_then_forcerun_split_index(tmp_path):
    proc = run_snakemake(tmp_path, TINY, "--cores", "2", "index")
    assert job_counts(proc.stderr + proc.stdout) == {"toy_dataset": 1, "extract": 1, "split": 1, "index": 1}
    results = tmp_path / "results"
    for split in ("train", "validation", "test"):
        assert len(pd.read_parquet(results / "index" / f"{split}.parquet")) > 0
    manifest = results / "raw" / "manifest.json"
    before = manifest.stat().st_mtime_ns
    proc = run_snakemake(tmp_path, TINY, "--cores", "2", "--forcerun", "split", "index", "--", "index")
    assert job_counts(proc.stderr + proc.stdout) == {"split": 1, "index": 1}
    assert manifest.stat().st_mtime_ns == before
    proc = run_snakemake(tmp_path, TINY, "--cores", "2", "-n", "index")
    assert "Nothing to be done" in proc.stdout + proc.stderr


def _touch(path: Path, mtime: float, content: bytes = b"") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        path.write_bytes(content)
    os.utime(path, (mtime, mtime))


def test_dry_run_at_ssv1_scale_is_fast(tmp_path):
    """108,499 videos, 174 labels, 256/32/32 shards: the DAG is built without touching a frame."""
    sizes = {"train": 86017, "validation": 11522, "test": 10960}
    shards = {"train": 256, "validation": 32, "test": 32}
    rng = np.random.default_rng(0)
    t0 = time.time() - 1000
    archives, annotations = tmp_path / "download" / "archives", tmp_path / "download" / "annotations"
    _touch(archives / "20bn-something-something-v1-00", t0)
    for name in ("labels", "train", "validation", "test"):
        _touch(annotations / f"something-something-v1-{name}.csv", t0)
    os.utime(archives, (t0, t0))  # a folder input: its own mtime counts
    results = tmp_path / "results"
    _touch(results / "raw" / "manifest.json", t0 + 10, b"{}")
    for name in ("split/videos.parquet", "split/dropped.csv", "split/labels.csv"):
        _touch(results / name, t0 + 20)
    (results / "frames").mkdir()
    os.utime(results / "frames", (t0 + 20, t0 + 20))
    start = 1
    for split, n in sizes.items():
        ids = np.arange(start, start + n).astype(str)
        start += n
        table = pd.DataFrame({
            "video_id": ids, "split": split, "label": "", "label_index": rng.integers(0, 174, n),
            "n_frames": rng.integers(32, 70, n), "height": 100, "width": 176,
            "frame_dir": [f"results/frames/{split}/0/{i}" for i in ids], "shard": rng.integers(0, shards[split], n),
        })
        (results / "index").mkdir(exist_ok=True)
        table.to_parquet(results / "index" / f"{split}.parquet")
        os.utime(results / "index" / f"{split}.parquet", (t0 + 30, t0 + 30))
    for name in ("dropped.csv", "labels.csv"):
        _touch(results / "index" / name, t0 + 30)
    detector = tmp_path / "download" / "fasterrcnn.pth"
    _touch(detector, t0)
    config = {
        "dataset": {"source": "archives", "archives": str(archives), "annotations": str(annotations)},
        "shards": shards,
        "boxes": {"backend": "torchvision", "weights": str(detector)},
    }
    began = time.time()
    proc = run_snakemake(tmp_path, config, "-n", "--cores", "8", "--rerun-triggers", "mtime")
    elapsed = time.time() - began
    counts = job_counts(proc.stdout + proc.stderr)
    assert "extract" not in counts and "index" not in counts  # up to date: nothing upstream reruns
    n_shards = sum(shards.values())
    assert counts["flow_shard"] == n_shards and counts["boxes_shard"] == n_shards
    assert counts["features_shard"] == 2 * n_shards  # rgb and flow streams
    assert elapsed < 20, f"dry run took {elapsed:.1f} s"
