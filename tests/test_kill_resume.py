"""Kill and resume, end to end: SIGKILL Snakemake and its jobs (the whole process group) while a
flow shard and then a features shard are being written, and in the middle of fine-tuning and of
GCN training; resume with ``--rerun-incomplete`` and get exactly the outputs of an uninterrupted
run. A write that runs out of space fails clearly and leaves no corrupt output.
"""

from __future__ import annotations

import os
import resource
import shutil
import signal
import subprocess
import time
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from regiongraph.io import open_shard
from tests.conftest import REPO, snakemake_cmd, tiny_config

CONFIG = tiny_config(flow={"backend": "opencv"}, backbone={"batch_size": 2})
TMP_GLOB = ".shard-*.h5.tmp-*"  # regiongraph.io.atomic_path's temporary twin of a shard


def snakemake(workdir: Path, *args: str, **popen) -> subprocess.Popen:
    return subprocess.Popen(
        snakemake_cmd("-s", str(REPO / "Snakefile"), "--configfile", "tiny.yaml", *args),
        cwd=workdir, env={**os.environ, "NO_COLOR": "1"}, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True, **popen,
    )


def finish(proc: subprocess.Popen, timeout: float = 300) -> str:
    out, _ = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, out[-4000:]
    return out


def shards(workdir: Path, stage: str) -> dict[str, Path]:
    root = workdir / "results" / stage
    return {str(p.relative_to(root)): p for p in sorted(root.rglob("shard-*.h5"))}


def datasets(path: Path) -> dict[str, np.ndarray]:
    out = {}
    with h5py.File(path, "r") as handle:
        handle.visititems(lambda name, obj: out.__setitem__(name, obj[()]) if isinstance(obj, h5py.Dataset) else None)
    return out


def assert_same_shard(path: Path, reference: Path) -> None:
    got, want = datasets(path), datasets(reference)
    assert sorted(got) == sorted(want), path
    for name, expected in want.items():
        value = got[name]
        assert value.dtype == expected.dtype and value.shape == expected.shape, (path, name)
        if expected.dtype == np.float16:
            # equal up to fp16 rounding: one unit in the last place at the value's magnitude
            ulp = np.spacing(np.maximum(np.abs(expected), np.abs(value)).astype(np.float16))
            diff = np.abs(value.astype(np.float32) - expected.astype(np.float32))
            assert np.all(diff <= ulp.astype(np.float32)), (path, name, float(diff.max()))
        else:
            np.testing.assert_array_equal(value, expected, err_msg=f"{path}:{name}")
    with h5py.File(path, "r") as a, h5py.File(reference, "r") as b:
        assert a.attrs["settings"] == b.attrs["settings"]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """A workflow run through the features stage, uninterrupted, and copies of its outputs."""
    workdir = tmp_path_factory.mktemp("kill_resume")
    (workdir / "tiny.yaml").write_text(yaml.safe_dump(CONFIG))
    finish(snakemake(workdir, "--cores", "2", "flow", "features"))
    saved = workdir.parent / f"{workdir.name}-reference"
    for stage in ("flow", "features"):
        for name, path in shards(workdir, stage).items():
            target = saved / stage / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, target)
    return workdir, saved


def kill_while_writing(proc: subprocess.Popen, folder: Path, timeout: float = 240) -> list[Path]:
    """SIGKILL the run's process group as soon as a shard under ``folder`` is half-written."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        partial = list(folder.rglob(TMP_GLOB)) if folder.exists() else []
        if partial:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            return partial
        if proc.poll() is not None:
            raise AssertionError(f"the run ended before any shard under {folder} was being written:\n"
                                 f"{proc.communicate()[0][-3000:]}")
        time.sleep(0.005)
    os.killpg(proc.pid, signal.SIGKILL)
    raise AssertionError(f"no shard under {folder} was written within {timeout} s")


@pytest.mark.slow
def test_kill_during_flow_and_features_then_resume(reference):
    workdir, saved = reference
    results = workdir / "results"
    stale = set()
    for stage in ("flow", "features"):
        # the killed run must have this stage's shards to write (the scheduler may finish the
        # other stage's jobs first)
        for path in shards(workdir, stage).values():
            path.unlink()
        run = snakemake(workdir, "--cores", "2", "--rerun-incomplete", "flow", "features",
                        start_new_session=True)
        partial = kill_while_writing(run, results / stage)
        for tmp in partial:
            # killed mid-write: the temporary twin is there, its shard was never renamed into place
            final = tmp.with_name(tmp.name[1:].split(".tmp-")[0])
            assert not final.exists(), final
        stale |= {p for p in results.rglob(TMP_GLOB)}
        finish(snakemake(workdir, "--unlock"))
    finish(snakemake(workdir, "--cores", "2", "--rerun-incomplete", "flow", "features"))
    for stage in ("flow", "features"):
        got, want = shards(workdir, stage), {
            str(p.relative_to(saved / stage)): p for p in sorted((saved / stage).rglob("shard-*.h5"))
        }
        assert sorted(got) == sorted(want)
        for name, path in got.items():
            with open_shard(path, stage=stage):  # refuses anything not marked complete
                pass
            assert_same_shard(path, want[name])
    # a killed job's temporary file is never read: every reader opens final names only
    assert stale
    proc = snakemake(workdir, "--cores", "2", "-n", "flow", "features")
    assert "Nothing to be done" in finish(proc)


def _limit_file_size(limit: int):
    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return apply


@pytest.mark.slow
def test_disk_full_fails_clearly_and_writes_nothing(reference):
    """RLIMIT_FSIZE stands in for a full disk: writes past it fail with EFBIG (Python ignores
    SIGXFSZ), as they would with ENOSPC on a full filesystem."""
    workdir, saved = reference
    flows = shards(workdir, "flow")
    victim = flows["train/shard-000.h5"]
    victim.unlink()
    others = {name: p.stat().st_mtime_ns for name, p in flows.items() if p != victim}
    limit = 24_000  # bytes: well under the shard, well over Snakemake's own small files
    assert (saved / "flow" / "train" / "shard-000.h5").stat().st_size > 2 * limit
    proc = snakemake(workdir, "--cores", "1", str(victim.relative_to(workdir)),
                     preexec_fn=_limit_file_size(limit))
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode != 0, out[-3000:]
    assert not victim.exists()
    assert not list(victim.parent.glob(TMP_GLOB))  # the half-written twin is removed
    log = (workdir / "results" / "logs" / "flow" / "train" / "shard-000.log").read_text()
    assert "File too large" in log and "shard-000.h5" in log, log[-3000:]
    assert {name: p.stat().st_mtime_ns for name, p in shards(workdir, "flow").items()} == others
    finish(snakemake(workdir, "--cores", "2", str(victim.relative_to(workdir))))
    assert_same_shard(victim, saved / "flow" / "train" / "shard-000.h5")


TRAIN_CONFIG = tiny_config(
    backbone={"streams": ["rgb"], "finetune": {"epochs": 4, "batch_size": 2, "workers": 0}},
    gcn={"models": ["joint"], "streams": ["rgb"], "epochs": 12, "batch_size": 1},
)
FINETUNE_CHECKPOINTS = Path("results/weights/finetune/rgb")
GCN_CHECKPOINTS = Path("results/gcn/joint/rgb/checkpoints")


def kill_after(proc: subprocess.Popen, path: Path, timeout: float = 240) -> None:
    """SIGKILL the run's process group as soon as ``path`` (a checkpoint) exists."""
    deadline = time.monotonic() + timeout
    while not path.exists():
        if proc.poll() is not None:
            raise AssertionError(f"the run ended before {path} was written:\n{proc.communicate()[0][-3000:]}")
        if time.monotonic() > deadline:
            os.killpg(proc.pid, signal.SIGKILL)
            raise AssertionError(f"{path} was not written within {timeout} s")
        time.sleep(0.005)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.communicate()


def _tensors(path: Path, key: str) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)[key]


@pytest.mark.slow
def test_kill_during_finetuning_and_training_then_resume(tmp_path):
    """kill -9 in the middle of fine-tuning, then in the middle of GCN training: each rerun
    resumes its own run's checkpoints, and the results equal an uninterrupted run's."""
    straight = tmp_path / "straight"
    straight.mkdir()
    (straight / "tiny.yaml").write_text(yaml.safe_dump(TRAIN_CONFIG))
    finish(snakemake(straight, "--cores", "2", "train"))
    killed = tmp_path / "killed"
    shutil.copytree(straight, killed, symlinks=True)
    for name in ("weights/finetuned", "weights/finetune", "features", "gcn", "logs/weights", "logs/gcn"):
        shutil.rmtree(killed / "results" / name)

    run = snakemake(killed, "--cores", "2", "--rerun-incomplete", "train", start_new_session=True)
    kill_after(run, killed / FINETUNE_CHECKPOINTS / "epoch-1.pt")
    assert not (killed / "results/weights/finetuned/rgb.pt").exists()
    finish(snakemake(killed, "--unlock"))
    run = snakemake(killed, "--cores", "2", "--rerun-incomplete", "train", start_new_session=True)
    kill_after(run, killed / GCN_CHECKPOINTS / "epoch-2.pt")
    assert not (killed / "results/gcn/joint/rgb/model.pt").exists()
    finish(snakemake(killed, "--unlock"))
    finish(snakemake(killed, "--cores", "2", "--rerun-incomplete", "train"))

    finetune_log = (killed / "results/logs/weights/finetune-rgb.log").read_text()
    train_log = (killed / "results/logs/gcn/rgb/train.log").read_text()
    assert "resuming fine-tuning rgb from" in finetune_log, finetune_log[-2000:]
    assert "resuming joint/rgb from" in train_log, train_log[-2000:]
    assert "another run" not in finetune_log + train_log
    for name, key in (("weights/finetuned/rgb.pt", "state_dict"), ("gcn/joint/rgb/model.pt", "model")):
        got, want = _tensors(killed / "results" / name, key), _tensors(straight / "results" / name, key)
        assert got.keys() == want.keys()
        for tensor in want:
            assert torch.equal(got[tensor], want[tensor]), (name, tensor)
    log_a = pd.read_csv(straight / "results/gcn/joint/rgb/train_log.csv").drop(columns="seconds")
    log_b = pd.read_csv(killed / "results/gcn/joint/rgb/train_log.csv").drop(columns="seconds")
    pd.testing.assert_frame_equal(log_b, log_a)
