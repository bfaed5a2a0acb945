"""``snakemake --profile profiles/slurm`` on a real SLURM cluster (``make test-slurm``).

``make test-slurm`` starts a single-node cluster (``.ci/slurm/setup.sh``: Debian's slurm-wlm,
partitions ``cpu`` and ``gpu``, two fake GPUs as GRES, no accounting) and runs these tests with
``REGIONGRAPH_SLURM_CLUSTER=1``; elsewhere they skip. What each job was given is read from
SLURM's own records (``scontrol show job``; the cluster keeps finished jobs for an hour), never
from what the plugin says it asked for.

The profile is used as a user of a small cluster would: its ``partitions.yaml`` rewritten to the
partitions ``sinfo`` reports, its per-rule sizes (made for SSv1 on big nodes) cut to this node:
CPUs to 1 and memory to half a node, so two jobs run at once on the 2-core machine.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import h5py
import pytest
import yaml

from regiongraph.slurm import parse_sinfo, request_of, slurm_minutes
from tests.conftest import REPO, snakemake_cmd, tiny_config
from tests.workflow_rules import load_rules

PROFILE = REPO / "profiles" / "slurm"
pytestmark = [
    pytest.mark.slurm_cluster,
    pytest.mark.skipif(
        os.environ.get("REGIONGRAPH_SLURM_CLUSTER") != "1",
        reason="needs a SLURM cluster: `make test-slurm` starts one on this machine",
    ),
]
# The smallest configuration that still runs every rule: a GCN head on both streams (so flow
# feeds the flow stream), one shard per split, two epochs.
CONFIG = tiny_config(
    backbone={"streams": ["rgb", "flow"]},
    gcn={"models": ["joint"], "epochs": 2},
    flow={"threads": 1},
)
STATUS_FLAGS = ["--slurm-init-seconds-before-status-checks", "2", "--seconds-between-status-checks", "2"]


def sinfo() -> dict:
    out = subprocess.run(["sinfo", "-h", "-o", "%P|%c|%m|%l|%G"], capture_output=True, text=True, check=True)
    return parse_sinfo(out.stdout)


def fitted_profile(root: Path) -> Path:
    """profiles/slurm with partitions.yaml from sinfo and every size cut to this node."""
    cluster = sinfo()
    node_cpus = min(p.cpus for p in cluster.values())
    node_mem = min(p.mem_mb for p in cluster.values())
    profile = yaml.safe_load((PROFILE / "config.v8+.yaml").read_text())
    cpus, mem = max(node_cpus // 2, 1), node_mem // 2
    for resources in [profile["default-resources"], *profile["set-resources"].values()]:
        if "cpus_per_task" in resources:
            resources["cpus_per_task"] = min(resources["cpus_per_task"], cpus)
        if "mem_mb" in resources:
            resources["mem_mb"] = min(resources["mem_mb"], mem)
    rules = load_rules(REPO, [])
    profile["set-threads"] = {name: 1 for name, rule in rules.items() if rule.script}
    partitions = {
        name: {"max_threads": p.cpus, "max_mem_mb": p.mem_mb, "max_gpu": p.gpus if name == "gpu" else 0}
        for name, p in cluster.items()
    }
    folder = root / "profile"
    folder.mkdir()
    (folder / "config.v8+.yaml").write_text(yaml.safe_dump(profile))
    (folder / profile["slurm-partition-config"]).write_text(yaml.safe_dump({"partitions": partitions}))
    return folder


def run_ids(output: str) -> set[str]:
    """The plugin's run ID, the job name of every job of that run."""
    return set(re.findall(r"SLURM run ID: (\S+)", output))


def slurm_jobs(workdir: Path, runs: set[str] | None = None) -> list[dict]:
    """Every job SLURM ran from ``workdir`` (for the runs named), as ``scontrol show job -o``
    lists it."""
    out = subprocess.run(["scontrol", "show", "job", "-o"], capture_output=True, text=True).stdout
    jobs = []
    for line in out.splitlines():
        fields = dict(re.findall(r"(\S+?)=(\S*)", line))
        if fields.get("WorkDir") == str(workdir) and (runs is None or fields.get("JobName") in runs):
            jobs.append(fields)
    return jobs


def mem_mb(text: str) -> int:
    value, unit = re.fullmatch(r"(\d+)([KMGT]?)", text).groups()
    return int(int(value) * {"K": 1 / 1024, "": 1, "M": 1, "G": 1024, "T": 1024**2}[unit])


def run(args: list[str], workdir: Path, timeout: int, env=None) -> subprocess.CompletedProcess:
    """snakemake, stopped with SIGINT on timeout (it does not stop on SIGTERM while it waits)."""
    proc = subprocess.Popen(
        snakemake_cmd("-s", str(REPO / "Snakefile"), *args), cwd=workdir, env=env or cluster_env(),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=120)
        pytest.fail(f"snakemake did not finish in {timeout} s:\n{out[-4000:]}")
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, "")


def cluster_env() -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    env["NO_COLOR"] = "1"
    return env


def outputs(workdir: Path) -> dict:
    """What a run computed: metrics and every HDF5 shard's content digest."""
    results = workdir / "results"
    found = {}
    for path in sorted(results.glob("gcn/*/metrics.json")):
        metrics = json.loads(path.read_text())
        found[str(path.relative_to(results))] = {
            k: metrics[k] for k in ("top1", "top5", "mean_class_accuracy", "n_videos")
        }
    for path in sorted(results.rglob("shard-*.h5")):
        with h5py.File(path, "r") as handle:
            found[str(path.relative_to(results))] = handle.attrs["content_digest"]
    return found


def workdir_with_config(root: Path, name: str) -> tuple[Path, Path]:
    workdir = root / name
    workdir.mkdir()
    configfile = workdir / "tiny.yaml"
    configfile.write_text(yaml.safe_dump(CONFIG))
    return workdir, configfile


@pytest.fixture(scope="module")
def local_run(tmp_path_factory):
    """The same run without SLURM, with the same threads per job."""
    root = tmp_path_factory.mktemp("local")
    profile = fitted_profile(root)
    threads = yaml.safe_load((profile / "config.v8+.yaml").read_text())["set-threads"]
    workdir, configfile = workdir_with_config(root, "work")
    proc = run(
        ["evaluate", "--configfile", str(configfile), "--cores", "2",
         "--set-threads", *[f"{rule}={n}" for rule, n in threads.items()]],
        workdir, 900,
    )
    assert proc.returncode == 0, proc.stdout[-4000:]
    return outputs(workdir)


@pytest.fixture(scope="module")
def slurm_profile(tmp_path_factory):
    return fitted_profile(tmp_path_factory.mktemp("profile"))


@pytest.fixture(scope="module")
def slurm_run(tmp_path_factory, slurm_profile):
    """The demo to ``evaluate`` through the profile: (work folder, config file, its output)."""
    workdir, configfile = workdir_with_config(tmp_path_factory.mktemp("slurm"), "work")
    proc = run(["--configfile", str(configfile), "--profile", str(slurm_profile), *STATUS_FLAGS, "evaluate"],
               workdir, 1500)
    assert proc.returncode == 0, proc.stdout[-6000:]
    return workdir, configfile, proc


def test_demo_runs_as_slurm_jobs_with_the_profiles_requests(slurm_run, slurm_profile, local_run):
    workdir, configfile, proc = slurm_run
    profile = yaml.safe_load((slurm_profile / "config.v8+.yaml").read_text())
    rules = load_rules(workdir, [configfile])
    (run_id,) = run_ids(proc.stdout)
    jobs = slurm_jobs(workdir, {run_id})
    assert jobs, "no SLURM job ran from the work folder"
    ran: dict[str, int] = {}
    for job in jobs:
        name = job["Comment"][len("rule_"):].split("_wildcards_")[0]
        ran[name] = ran.get(name, 0) + 1
        rule = rules[name]
        resources = {**profile["default-resources"], **rule.resources, **profile["set-resources"].get(name, {})}
        want = request_of(name, profile["set-threads"].get(name, rule.threads), resources)
        assert job["JobState"] == "COMPLETED" and job["ExitCode"] == "0:0", (name, job["JobState"])
        assert int(job["NumCPUs"]) == want.cpus, (name, job["NumCPUs"], want)
        assert mem_mb(job["MinMemoryNode"]) == want.mem_mb, (name, job["MinMemoryNode"], want)
        assert slurm_minutes(job["TimeLimit"]) == want.minutes, (name, job["TimeLimit"], want)
        gpus = job.get("TresPerJob", "") + job.get("TresPerNode", "")
        if want.gpus:
            assert job["Partition"] == "gpu" and f"gpu:{want.gpus}" in gpus, (name, job)
        else:
            assert job["Partition"] == "cpu" and "gpu" not in gpus, (name, job)
        assert "ArrayTaskId" not in job, f"{name}: the profile asks for no array jobs"
    # every job of the DAG with code to run was a SLURM job, once
    stats = dict(re.findall(r"^(\w+)\s+(\d+)$", proc.stdout.split("Job stats:")[1].split("total")[0], re.M))
    expected = {rule: int(n) for rule, n in stats.items() if rules[rule].script}
    assert ran == expected
    assert any(rules[name].resources.get("gpu") for name in ran), "no GPU rule was exercised"
    assert outputs(workdir) == local_run


def running_job(workdir: Path, rule: str, proc: subprocess.Popen, timeout: float = 600) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        for job in slurm_jobs(workdir):
            if job["JobState"] == "RUNNING" and job["Comment"].startswith(f"rule_{rule}_"):
                return job
        time.sleep(1)
    out = proc.stdout.read() if proc.poll() is not None else ""
    pytest.fail(f"no {rule} job ran (snakemake exit status {proc.poll()}):\n{out[-4000:]}")


def test_a_cancelled_job_is_redone_by_the_same_command(tmp_path, slurm_run, slurm_profile, local_run):
    """The demo's feature shards and heads deleted and made again with --jobs 2, below the six
    shards that are ready at once; one is cancelled while it runs, and the same command finishes."""
    done, configfile, _ = slurm_run
    workdir = tmp_path / "work"
    shutil.copytree(done, workdir, symlinks=True)
    for path in (workdir / "results" / "features").rglob("shard-*.h5"):
        path.unlink()
    shutil.rmtree(workdir / "results" / "gcn")  # or Snakemake has nothing to do
    command = ["--configfile", str(configfile), "--profile", str(slurm_profile), *STATUS_FLAGS,
               "--jobs", "2", "--retries", "0", "evaluate"]
    proc = subprocess.Popen(snakemake_cmd("-s", str(REPO / "Snakefile"), *command), cwd=workdir,
                            env=cluster_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        victim = running_job(workdir, "features_shard", proc)
        subprocess.run(["scancel", victim["JobId"]], check=True)
        out, _ = proc.communicate(timeout=1500)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            proc.communicate(timeout=120)
    assert proc.returncode != 0, out[-3000:]
    first = {j["JobId"]: j for j in slurm_jobs(workdir, run_ids(out))}
    assert first[victim["JobId"]]["JobState"] == "CANCELLED"
    # the other five feature shards were made (keep-going)
    made = [j for j in first.values() if j["Comment"].startswith("rule_features_shard_")]
    assert len(made) == 6 and sum(j["JobState"] == "COMPLETED" for j in made) == 5
    assert len(list((workdir / "results" / "features").rglob("shard-*.h5"))) == 5
    again = run(command, workdir, 1500)
    assert again.returncode == 0, again.stdout[-6000:]
    redone = slurm_jobs(workdir, run_ids(again.stdout))
    assert [j["Comment"] for j in redone if "features_shard" in j["Comment"]] == [victim["Comment"]]
    assert all(j["JobState"] == "COMPLETED" for j in redone)
    assert outputs(workdir) == local_run


def test_jobs_too_big_for_the_node_stop_the_run_at_once(tmp_path):
    """The profile's SSv1 sizes (16-CPU features, 8-thread index) on this 2-CPU node, with a
    partition file that tells the truth: an error naming each rule, and nothing submitted."""
    profile = tmp_path / "profile"
    shutil.copytree(PROFILE, profile)
    cluster = sinfo()
    (profile / "partitions.yaml").write_text(yaml.safe_dump({"partitions": {
        name: {"max_threads": p.cpus, "max_mem_mb": p.mem_mb, "max_gpu": p.gpus if name == "gpu" else 0}
        for name, p in cluster.items()
    }}))
    workdir, configfile = workdir_with_config(tmp_path, "work")
    started = time.monotonic()
    proc = run(["--configfile", str(configfile), "--profile", str(profile), "evaluate"], workdir, 300)
    assert proc.returncode != 0
    assert time.monotonic() - started < 120
    assert "nothing was submitted" in proc.stdout
    assert re.search(r"rule index: asks for 8 CPUs, 16000 MB.*more than any partition of .*partitions.yaml", proc.stdout)
    assert re.search(r"rule features_shard: asks for 16 CPUs", proc.stdout)
    assert not slurm_jobs(workdir)


def test_partition_file_promising_more_than_the_cluster_stops_the_run(tmp_path):
    workdir, configfile = workdir_with_config(tmp_path, "work")
    proc = run(["--configfile", str(configfile), "--profile", str(PROFILE), "evaluate"], workdir, 300)
    assert proc.returncode != 0
    assert re.search(r"partitions.yaml: partition 'cpu' promises more than its nodes have \(max_threads 64 > \d+", proc.stdout)
    assert not slurm_jobs(workdir)


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--slurm-status-command", "sacct"], r"no accounting .* use --slurm-status-command squeue"),
        (["--slurm-array-jobs", "all", "--jobs", "2"], r"--slurm-array-jobs all: this run has \d+ jobs, more than the 2"),
    ],
    ids=["sacct-without-accounting", "arrays-above-jobs"],
)
def test_settings_that_would_hang_stop_the_run_at_once(tmp_path, slurm_profile, flags, message):
    workdir, configfile = workdir_with_config(tmp_path, "work")
    proc = run(["--configfile", str(configfile), "--profile", str(slurm_profile), *flags, "evaluate"], workdir, 300)
    assert proc.returncode != 0
    assert re.search(message, proc.stdout), proc.stdout[-3000:]
    assert not slurm_jobs(workdir)
