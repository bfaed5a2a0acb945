"""The GPU slot allocator with two fake device ids on the CPU: separate processes never share a
device, a third waits until one is freed, and a killed holder frees its device."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from regiongraph import gpus
from regiongraph.gpus import claim_gpu_slot, gpu_slot

DEVICES = "3,5"  # ids that exist on no machine: nothing here touches a real GPU

HOLDER = """
import json, os, sys, time
from pathlib import Path
from regiongraph.gpus import claim_gpu_slot
name, out = sys.argv[1], Path(sys.argv[2])
started = out / f"{name}.started.tmp"
started.write_text("{}")
os.replace(started, out / f"{name}.started")  # whole when it appears
got = claim_gpu_slot("auto", poll_seconds=0.02)
tmp = out / f"{name}.tmp"
tmp.write_text(json.dumps({"device": got, "env": os.environ["CUDA_VISIBLE_DEVICES"]}))
os.replace(tmp, out / f"{name}.got")
while not (out / f"{name}.release").exists():
    time.sleep(0.02)
"""

CYCLER = """
import json, random, sys, time
from pathlib import Path
from regiongraph.gpus import gpu_slot
name, out = sys.argv[1], Path(sys.argv[2])
random.seed(name)
spans = []
for _ in range(6):
    with gpu_slot("auto", poll_seconds=0.005) as device:
        start = time.monotonic()
        time.sleep(random.uniform(0.005, 0.03))
        spans.append((device, start, time.monotonic()))
(out / f"{name}.json").write_text(json.dumps(spans))
"""


@pytest.fixture
def slot_env(tmp_path):
    env = {
        **os.environ,
        "CUDA_VISIBLE_DEVICES": DEVICES,
        gpus.LOCK_DIR_ENV: str(tmp_path / "locks"),
        "PYTHONPATH": str(Path(__file__).parents[1]),
    }
    procs: list[subprocess.Popen] = []
    yield env, procs
    for proc in procs:  # only the processes this test started
        if proc.poll() is None:
            proc.kill()
        proc.wait()


def _wait_for(path: Path, seconds: float = 20.0) -> dict:
    deadline = time.monotonic() + seconds
    while not path.exists():
        if time.monotonic() > deadline:
            raise AssertionError(f"{path.name} did not appear within {seconds} s")
        time.sleep(0.02)
    return json.loads(path.read_text())


def _start(procs, env, script: str, name: str, out: Path) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", script, name, str(out)], env=env)
    procs.append(proc)
    return proc


def test_third_job_waits_and_a_killed_holder_frees_its_gpu(tmp_path, slot_env):
    env, procs = slot_env
    a = _start(procs, env, HOLDER, "a", tmp_path)
    _start(procs, env, HOLDER, "b", tmp_path)
    got_a, got_b = _wait_for(tmp_path / "a.got"), _wait_for(tmp_path / "b.got")
    assert {got_a["device"], got_b["device"]} == {"3", "5"}
    assert got_a["env"] == got_a["device"] and got_b["env"] == got_b["device"]

    _start(procs, env, HOLDER, "c", tmp_path)
    _wait_for(tmp_path / "c.started")
    time.sleep(0.5)  # c polls every 20 ms: it must still be waiting
    assert not (tmp_path / "c.got").exists()
    a.send_signal(signal.SIGKILL)  # no clean-up code runs: the kernel drops the flock
    a.wait()
    assert _wait_for(tmp_path / "c.got")["device"] == got_a["device"]

    _start(procs, env, HOLDER, "d", tmp_path)
    _wait_for(tmp_path / "d.started")
    time.sleep(0.5)
    assert not (tmp_path / "d.got").exists()
    (tmp_path / "b.release").touch()  # a normal exit frees the device too
    assert _wait_for(tmp_path / "d.got")["device"] == got_b["device"]
    for name in ("c", "d"):
        (tmp_path / f"{name}.release").touch()
    for proc in procs[1:]:
        assert proc.wait(timeout=20) == 0


def test_concurrent_jobs_never_share_a_device(tmp_path, slot_env):
    env, procs = slot_env
    for name in "pqrs":
        _start(procs, env, CYCLER, name, tmp_path)
    for proc in procs:
        assert proc.wait(timeout=60) == 0
    spans = [
        span for name in "pqrs" for span in json.loads((tmp_path / f"{name}.json").read_text())
    ]
    assert len(spans) == 24
    assert {device for device, _, _ in spans} == {"3", "5"}
    for device in ("3", "5"):
        mine = sorted((s, e) for d, s, e in spans if d == device)
        for (_, end), (start, _) in zip(mine, mine[1:], strict=False):
            assert start >= end, f"two jobs held GPU {device} at once"


def test_cpu_and_missing_gpus(monkeypatch, tmp_path):
    monkeypatch.setenv(gpus.LOCK_DIR_ENV, str(tmp_path))
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", DEVICES)
    with gpu_slot("cpu") as device:
        assert device is None and os.environ["CUDA_VISIBLE_DEVICES"] == DEVICES
    assert not list(tmp_path.iterdir())  # cpu claims nothing
    with gpu_slot("auto") as first:
        assert first == "3" and os.environ["CUDA_VISIBLE_DEVICES"] == "3"
        # a job that holds a GPU sees only that one; a second claimant over both ids:
        with gpu_slot("auto", devices=["3", "5"]) as second:
            assert second == "5"
            with pytest.raises(TimeoutError, match="no free GPU among"):
                with gpu_slot("auto", devices=["3", "5"], poll_seconds=0.01, timeout=0.1):
                    pass
    assert os.environ["CUDA_VISIBLE_DEVICES"] == DEVICES  # restored after the block
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    with gpu_slot("auto") as device:
        assert device is None
    with pytest.raises(RuntimeError, match="no GPU is visible"):
        with gpu_slot("cuda"):
            pass


def test_refuses_once_cuda_is_initialised(monkeypatch, tmp_path):
    torch = pytest.importorskip("torch")
    monkeypatch.setenv(gpus.LOCK_DIR_ENV, str(tmp_path))
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", DEVICES)
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
    with pytest.raises(RuntimeError, match="already initialised"):
        claim_gpu_slot("auto")


def test_slurm_jobs_keep_the_gpus_slurm_gave_them(monkeypatch, tmp_path):
    """Under SLURM two jobs on one node can both see device "0" (cgroups renumber): no locking."""
    monkeypatch.setenv(gpus.LOCK_DIR_ENV, str(tmp_path / "locks"))
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    with gpu_slot("auto", timeout=0.1) as first, gpu_slot("auto", timeout=0.1) as second:
        assert first == second == "0"
        assert os.environ["CUDA_VISIBLE_DEVICES"] == "0"
    assert not (tmp_path / "locks").exists()


def test_the_default_lock_folder_is_private_never_a_shared_tmp(monkeypatch, tmp_path):
    monkeypatch.delenv(gpus.LOCK_DIR_ENV, raising=False)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", DEVICES)
    runtime = tmp_path / "run-user"
    runtime.mkdir(mode=0o700)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(runtime))
    assert gpus.default_lock_dir() == runtime / "regiongraph-gpu-slots"
    monkeypatch.delenv("XDG_RUNTIME_DIR")
    monkeypatch.chdir(tmp_path)
    assert gpus.default_lock_dir() == tmp_path / ".snakemake" / "regiongraph-gpu-slots"
    with gpu_slot("auto") as device:
        assert device == "3"
    folder = tmp_path / ".snakemake" / "regiongraph-gpu-slots"
    assert os.stat(folder).st_mode & 0o777 == 0o700
    assert sorted(p.name for p in folder.iterdir()) == ["gpu-3.lock"]


def test_a_lock_folder_that_is_a_link_or_open_to_others_is_refused(monkeypatch, tmp_path):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", DEVICES)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir(mode=0o700)
    (tmp_path / "link").symlink_to(elsewhere)
    monkeypatch.setenv(gpus.LOCK_DIR_ENV, str(tmp_path / "link"))
    with pytest.raises(RuntimeError, match="link"):
        claim_gpu_slot("auto")
    assert not list(elsewhere.iterdir())
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, 0o777)
    monkeypatch.setenv(gpus.LOCK_DIR_ENV, str(shared))
    with pytest.raises(RuntimeError, match="open to others"):
        claim_gpu_slot("auto")
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    (private / "gpu-3.lock").symlink_to(tmp_path / "victim")
    monkeypatch.setenv(gpus.LOCK_DIR_ENV, str(private))
    with pytest.raises(RuntimeError, match="cannot open the GPU lock file"):
        claim_gpu_slot("auto")
    assert not (tmp_path / "victim").exists()
