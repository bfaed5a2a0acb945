"""A rerun redoes exactly what changed: one setting changed over a finished tiny run.

For each setting the rerun must rebuild exactly the outputs that depend on it (the job counts
Snakemake reports, and the untouched outputs keep their modification times), and every head
trained must carry a checkpoint fingerprint of the new inputs: its record's feature digests
are the new shards', its settings the new settings; the evaluation counts the new video sets.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml

from regiongraph.io import shard_digest
from tests.conftest import REPO, snakemake_cmd, tiny_config
from tests.test_workflow import job_counts

BASE = tiny_config(
    backbone={"streams": ["rgb", "flow"]},
    gcn={"models": ["joint"], "streams": ["rgb", "flow"], "epochs": 2, "batch_size": 4},
)
SHARDS = {"train": 1, "validation": 1, "test": 1}
N_SHARDS = sum(SHARDS.values())
# Jobs of one finished head and its evaluation, and of the gathering rules at the end.
TAIL = {"evaluate_model": 1, "gcn_metrics_table": 1, "all": 1}
FROM_FEATURES = {"features_shard": 2 * N_SHARDS, "train_model": 2, **TAIL, "dropped": 1}


def run(workdir: Path, config: dict, *args: str) -> str:
    (workdir / "config.yaml").write_text(yaml.safe_dump(config))
    proc = subprocess.run(
        snakemake_cmd("-s", str(REPO / "Snakefile"), "--configfile", "config.yaml", "--cores", "2", *args),
        cwd=workdir, capture_output=True, text=True, env={**os.environ, "NO_COLOR": "1"},
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout + proc.stderr


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    """A whole tiny run, finished once; each case reruns in a copy of it."""
    workdir = tmp_path_factory.mktemp("finished")
    run(workdir, BASE)
    return workdir


def _copy(finished: Path, target: Path) -> Path:
    # copy2 keeps modification times, and links stay relative: the copy is as finished as the
    # original, .snakemake's records (params, code) included
    shutil.copytree(finished, target, symlinks=True)
    return target


def _mtimes(results: Path) -> dict[str, int]:
    return {
        str(p.relative_to(results)): p.stat().st_mtime_ns
        for p in results.rglob("*")
        if p.is_file() and "logs" not in p.parts and "benchmarks" not in p.parts
    }


def _with(section: str, **values) -> dict:
    config = json.loads(json.dumps(BASE))
    config.setdefault(section, {}).update(values)
    return config


CASES = {
    "index.min_frames": (
        _with("index", min_frames=8),
        {"index": 1, "flow_shard": N_SHARDS, "boxes_shard": N_SHARDS, "finetune_stream": 2,
         **FROM_FEATURES},
    ),
    "flow.bound": (
        _with("flow", bound=15),
        {"flow_shard": N_SHARDS, "finetune_stream": 1, "features_shard": N_SHARDS,
         "train_model": 1, **TAIL, "dropped": 1},
    ),
    "boxes.per_frame": (
        _with("boxes", per_frame=5),
        {"boxes_shard": N_SHARDS, **FROM_FEATURES},
    ),
    "backbone.crop_size": (
        _with("backbone", crop_size=40),
        {"finetune_stream": 2, **FROM_FEATURES},
    ),
    "gcn.lr": (
        _with("gcn", lr=0.002),
        {"train_model": 2, **TAIL},
    ),
}
# which outputs a case must leave alone (path prefixes under results/)
UNTOUCHED = {
    "index.min_frames": ["raw/", "split/", "weights/rgb.pt", "weights/flow.pt"],
    "flow.bound": ["index/train", "boxes/", "features/rgb/", "gcn/joint/rgb/", "weights/finetuned/rgb"],
    "boxes.per_frame": ["index/train", "flow/", "weights/"],
    "backbone.crop_size": ["index/train", "flow/", "boxes/"],
    "gcn.lr": ["index/", "flow/", "boxes/", "weights/", "features/"],
}


@pytest.mark.slow
@pytest.mark.parametrize("case", list(CASES))
def test_a_changed_setting_reruns_exactly_what_depends_on_it(finished, tmp_path, case):
    config, expected = CASES[case]
    workdir = _copy(finished, tmp_path / "run")
    results = workdir / "results"
    before = _mtimes(results)
    old_fingerprints = {
        stream: torch.load(results / "gcn" / "joint" / stream / "model.pt", weights_only=True)["fingerprint"]
        for stream in ("rgb", "flow")
    }
    output = run(workdir, config)
    assert job_counts(output) == expected, output[-3000:]

    after = _mtimes(results)
    for prefix in UNTOUCHED[case]:
        kept = [name for name in before if name.startswith(prefix)]
        assert kept, prefix
        for name in kept:
            assert after[name] == before[name], f"{case}: {name} was rewritten"

    index = {split: pd.read_parquet(results / "index" / f"{split}.parquet") for split in SHARDS}
    for stream in ("rgb", "flow"):
        head = results / "gcn" / "joint" / stream
        model = torch.load(head / "model.pt", weights_only=True)
        record = model["record"]
        for split in ("train", "validation"):
            shard = results / "features" / stream / split / "shard-000.h5"
            assert record[split]["shards"] == [shard_digest(shard)], (stream, split)
            assert record[split]["videos"] == len(index[split])
        checkpoints = sorted((head / "checkpoints").glob("epoch-*.pt"))
        latest = torch.load(checkpoints[-1], weights_only=True)
        assert latest["fingerprint"] == model["fingerprint"]
        retrained = stream in {"rgb", "flow"} if expected.get("train_model") == 2 else stream == "flow"
        assert (model["fingerprint"] != old_fingerprints[stream]) == retrained, stream
        if retrained:  # the old run's checkpoints were moved aside, never resumed
            log = (results / "logs" / "gcn" / stream / "train.log").read_text()
            assert "belong to another run" in log and (head / "checkpoints.stale").is_dir()
    if case == "gcn.lr":
        assert record["settings"]["lr"] == 0.002
    listed = pd.read_parquet(results / "split" / "listed.parquet")
    metrics = json.loads((results / "gcn" / "joint" / "metrics.json").read_text())
    assert metrics["n_videos"] == int((listed["split"] == "validation").sum())
    if case == "index.min_frames":
        dropped = pd.read_csv(results / "index" / "dropped.csv")
        short = dropped[dropped["reason"].str.startswith("too short")]
        assert len(short) and set(short["split"]) == {"train"}
        assert len(index["train"]) == int((listed["split"] == "train").sum()) - len(short)
