"""``snakemake --profile profiles/slurm`` against recording stand-ins for the SLURM commands.

The real snakemake-executor-plugin-slurm builds every ``sbatch``/``srun``/``sacct`` call; the
stand-ins in ``tests/fake_slurm/`` record them and run the submitted job scripts on this
machine. The test then checks what the plugin asked SLURM for, rule by rule, against what the
rules and the profile declare (read independently: rules through Snakemake's API, the profile
as YAML): GPU requests and the GPU partition for rules that declare ``gpu``, the CPU partition
and no GPU otherwise, memory, wall time, CPUs, array jobs for the per-shard rules, and that the
workflow completes with every output written.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import h5py
import pytest
import yaml

from tests.conftest import REPO, snakemake_cmd, tiny_config
from tests.workflow_rules import RuleInfo, load_rules

FAKE_SLURM = Path(__file__).parent / "fake_slurm"
PROFILE = REPO / "profiles" / "slurm"

# A tiny configuration (schema defaults fill the rest). flow.backend torch makes flow_shard a
# GPU rule (device auto), so GPU requests are checked even before the backbone stage runs.
SLURM_CONFIG = tiny_config(flow={"backend": "torch", "threads": 1, "batch_size": 32})
# Target rule -> the per-shard rule that produces it; those the workflow has run on the cluster
# (extract, split and index, single CPU jobs, run locally first to keep the test short).
STAGES = {"flow": "flow_shard", "boxes": "boxes_shard", "features": "features_shard"}


def read_record(state: Path) -> list[dict]:
    path = state / "record.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def rule_of(comment: str) -> str:
    """The plugin's --comment is rule_<name> or rule_<name>_wildcards_<values>."""
    assert comment.startswith("rule_"), comment
    return comment[len("rule_"):].split("_wildcards_")[0]


@pytest.fixture
def fake_cluster(tmp_path):
    """Environment with the stand-ins first on PATH; ends any job they left running."""
    state = tmp_path / "slurm"
    env = {
        **os.environ,
        "PATH": f"{FAKE_SLURM}{os.pathsep}{os.environ['PATH']}",
        "FAKE_SLURM_DIR": str(state),
        "FAKE_SLURM_PYTHON": sys.executable,
        "FAKE_SLURM_PARALLEL": "2",
        "NO_COLOR": "1",
    }
    env = {k: v for k, v in env.items() if not k.startswith("SLURM_")}
    yield env, state
    for path in (state / "jobs").glob("*.json"):
        job = json.loads(path.read_text())
        if job.get("state") in ("PENDING", "RUNNING") and "pgid" in job:
            try:
                os.killpg(job["pgid"], signal.SIGKILL)
            except ProcessLookupError:
                pass


def expected_resources(rule: RuleInfo, profile: dict) -> tuple[dict, int]:
    """(resources, threads) of a rule under the profile, as Snakemake documents the merge:
    default-resources fill what the rule leaves out; set-resources and set-threads override."""
    resources = {**profile.get("default-resources", {}), **rule.resources}
    resources.update(profile.get("set-resources", {}).get(rule.name, {}))
    threads = profile.get("set-threads", {}).get(rule.name, rule.threads)
    return resources, threads


def expected_cpus(resources: dict, threads: int) -> int:
    """CPUs a job should get: cpus_per_task, else cpus_per_gpu x gpus on a GPU, else threads."""
    gpus = int(resources.get("gpu", 0))
    if "cpus_per_task" in resources:
        return int(resources["cpus_per_task"])
    if gpus and "cpus_per_gpu" in resources:
        return int(resources["cpus_per_gpu"]) * gpus
    return threads


def job_cpus(options: dict) -> int:
    """CPUs an sbatch or srun call asks for."""
    if "cpus_per_task" in options:
        return int(options["cpus_per_task"]) * int(options.get("ntasks", 1))
    return int(options["cpus_per_gpu"]) * int(options["gpus"])


def test_profile_is_a_valid_plugin_configuration():
    """Keys the plugin reads, spelled as it spells them; the partition file it names exists."""
    profile = yaml.safe_load((PROFILE / "config.v8+.yaml").read_text())
    assert profile["executor"] == "slurm"
    partitions = yaml.safe_load((PROFILE / profile["slurm-partition-config"]).read_text())
    limits = partitions["partitions"]
    assert any(p.get("max_gpu", 0) > 0 for p in limits.values())
    assert any(p.get("max_gpu", 0) == 0 for p in limits.values())
    # a misspelt rule name would silently leave that rule with the defaults
    defined = {
        line.split()[1].rstrip(":")
        for smk in (REPO / "rules").glob("*.smk")
        for line in smk.read_text().splitlines()
        if line.strip().startswith("rule ") and line.rstrip().endswith(":")
    }
    assert set(profile.get("set-resources", {})) <= defined
    assert set(profile.get("set-threads", {})) <= defined


@pytest.mark.slow
def test_slurm_profile_requests_and_completes(tmp_path, fake_cluster):
    env, state = fake_cluster
    workdir = tmp_path / "work"
    workdir.mkdir()
    configfile = workdir / "tiny.yaml"
    configfile.write_text(yaml.safe_dump(SLURM_CONFIG))
    rules = load_rules(workdir, [configfile])
    targets = [target for target, shard_rule in STAGES.items() if shard_rule in rules]
    local = subprocess.run(
        snakemake_cmd("-s", str(REPO / "Snakefile"), "--configfile", str(configfile),
                      "--cores", "2", "index"),
        cwd=workdir, env=env, capture_output=True, text=True, timeout=300,
    )
    assert local.returncode == 0, local.stderr[-3000:]
    proc = subprocess.run(
        snakemake_cmd(
            "-s", str(REPO / "Snakefile"), "--configfile", str(configfile),
            "--profile", str(PROFILE),
            # poll the stand-ins every second instead of the plugin's 40 s first wait
            "--slurm-init-seconds-before-status-checks", "1",
            "--seconds-between-status-checks", "1",
            "--latency-wait", "5", "--retries", "0",
            *targets,
        ),
        cwd=workdir, env=env, capture_output=True, text=True, timeout=540,
    )
    record = read_record(state)
    assert proc.returncode == 0, (
        f"snakemake failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}\n"
        f"record tail: {record[-3:]}"
    )
    profile = yaml.safe_load((PROFILE / "config.v8+.yaml").read_text())
    partitions = yaml.safe_load((PROFILE / profile["slurm-partition-config"]).read_text())["partitions"]
    gpu_partitions = {n for n, p in partitions.items() if p.get("max_gpu", 0) > 0}
    cpu_partitions = set(partitions) - gpu_partitions
    errors = [r for r in record if "error" in r]
    assert not errors, errors

    sbatches = [r for r in record if r["slurm_command"] == "sbatch"]
    assert sbatches
    run_names = {r["options"]["job_name"] for r in sbatches}
    assert len(run_names) == 1  # one run id, which the status queries filter on
    (run_name,) = run_names
    status_queries = [r for r in record if r["slurm_command"] in ("sacct", "squeue") and "--name" in r["argv"]]
    assert status_queries and all(run_name in r["argv"] for r in status_queries)

    jobs_per_rule: dict[str, int] = {}
    arrays_per_rule: dict[str, int] = {}
    gpu_rules_seen = set()
    for call in sbatches:
        options = call["options"]
        name = rule_of(options["comment"])
        rule = rules[name]
        resources, threads = expected_resources(rule, profile)
        n_tasks = len(call["tasks"]) if call["tasks"] else 1
        jobs_per_rule[name] = jobs_per_rule.get(name, 0) + n_tasks
        assert options["parsable"] is True and options["export"] == "ALL"
        assert Path(options["chdir"]) == workdir
        assert int(options["time"]) == resources["runtime"], name
        mem = int(options["mem"])
        if call["tasks"]:
            arrays_per_rule[name] = arrays_per_rule.get(name, 0) + 1
            # the plugin adds a few MB for the array payload the job step decodes
            assert resources["mem_mb"] <= mem <= resources["mem_mb"] + 8, (name, mem)
            assert "--slurm-jobstep-array-execs" in call["script"]
        else:
            assert mem == resources["mem_mb"], name
        assert "--executor slurm-jobstep" in call["script"]
        gpus = int(resources.get("gpu", 0))
        assert job_cpus(options) == expected_cpus(resources, threads), name
        if gpus:
            gpu_rules_seen.add(name)
            assert options["gpus"] == str(gpus), name
            assert options["partition"] in gpu_partitions, name
            assert "ntasks" not in options
        else:
            assert "gpus" not in options and "gres" not in options, name
            assert options["partition"] in cpu_partitions, name
            assert options["ntasks"] == "1", name
        assert call["env"] == {}, "sbatch must not inherit SLURM_* variables"

    # every job the DAG needed went through sbatch, the per-shard rules as arrays
    n_shards = sum(SLURM_CONFIG["shards"].values())
    for target in targets:
        shard_rule = STAGES[target]
        if shard_rule:
            streams = SLURM_CONFIG["backbone"]["streams"] if shard_rule == "features_shard" else [None]
            assert jobs_per_rule[shard_rule] == n_shards * len(streams), shard_rule
            assert arrays_per_rule.get(shard_rule, 0) >= 1, f"{shard_rule} not sent as an array job"
    assert not {"toy_dataset", "extract", "split", "index"} & set(jobs_per_rule)  # done locally
    declared_gpu = {n for n in jobs_per_rule if int(expected_resources(rules[n], profile)[0].get("gpu", 0))}
    assert "flow_shard" in declared_gpu  # the torch backend with device auto wants a GPU
    assert gpu_rules_seen == declared_gpu

    # Inside a job the jobstep plugin starts the rule with srun (array tasks after the first
    # through one more jobstep), asking for the CPUs and GPUs of the rule.
    states = [json.loads(p.read_text()) for p in (state / "jobs").glob("*.json")]
    sbatch_rule = {str(c["job_id"]): rule_of(c["options"]["comment"]) for c in sbatches}
    rule_of_job = {str(s["job_id"]): sbatch_rule[s["key"].split("_")[0]] for s in states}
    sruns = [r for r in record if r["slurm_command"] == "srun"]
    single = [c for c in sbatches if not c["tasks"]]
    srun_jobs = [r["env"]["SLURM_JOB_ID"] for r in sruns]
    assert all(srun_jobs.count(str(c["job_id"])) == 1 for c in single)
    assert sruns
    for call in sruns:
        name = rule_of_job[call["env"]["SLURM_JOB_ID"]]
        resources, threads = expected_resources(rules[name], profile)
        gpus = int(resources.get("gpu", 0))
        assert call["options"].get("gpus") == (str(gpus) if gpus else None), name
        assert call["options"]["ntasks"] == "1" and call["options"]["nodes"] == "1"
        # the step asks for the CPUs the job was given, or it runs on fewer
        assert job_cpus(call["options"]) == expected_cpus(resources, threads), name

    # the jobs really ran: every task completed, and the outputs are there and complete
    assert len(states) == sum(jobs_per_rule.values())
    assert {s["state"] for s in states} == {"COMPLETED"}
    for target in targets:
        shards = list((workdir / "results" / target).rglob("shard-*.h5"))
        assert len(shards) == jobs_per_rule[STAGES[target]]
        for path in shards:
            with h5py.File(path, "r") as handle:
                assert handle.attrs  # provenance written, the file is complete


def test_profile_dry_run(tmp_path, fake_cluster):
    """`snakemake --profile profiles/slurm -n` works where the plugin is installed."""
    env, _ = fake_cluster
    configfile = tmp_path / "tiny.yaml"
    configfile.write_text(yaml.safe_dump(SLURM_CONFIG))
    proc = subprocess.run(
        snakemake_cmd("-s", str(REPO / "Snakefile"), "--configfile", str(configfile),
                      "--profile", str(PROFILE), "-n"),
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "index" in proc.stdout + proc.stderr
