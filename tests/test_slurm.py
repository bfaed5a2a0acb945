"""``snakemake --profile profiles/slurm`` against recording stand-ins for the SLURM commands,
and the pre-submission checks of ``regiongraph/slurm.py``.

tests/test_slurm_cluster.py runs the profile on a real single-node cluster (``make
test-slurm``). What a 2-core node cannot show is kept here: the profile exactly as shipped, its
SSv1 sizes (16 CPUs, 64 GB) on partitions with different limits (``cpu``: 3 days, no GPU;
``gpu``: 2 days, four A100s), and the ``srun`` options the jobstep plugin uses inside a job.
The real snakemake-executor-plugin-slurm builds every ``sbatch``/``srun``/``squeue`` call; the
stand-ins in ``tests/fake_slurm/`` record them and run the submitted job scripts on this
machine. The test checks what the plugin asked for, rule by rule, against what the rules and
the profile declare (rules through Snakemake's API, the profile as YAML).
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

from regiongraph.slurm import (
    PartitionLimits,
    array_jobs_problem,
    cluster_accounting,
    gres_gpus,
    misfits,
    parse_sinfo,
    partition_file_limits,
    request_of,
    slurm_minutes,
    status_command_problem,
)
from regiongraph.slurm import min_job_age as slurm_min_job_age
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
        assert not call["tasks"], f"{name}: the profile submits no array jobs"
        assert int(options["mem"]) == resources["mem_mb"], name
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

    # every job the DAG needed went through sbatch, one per shard
    n_shards = sum(SLURM_CONFIG["shards"].values())
    for target in targets:
        shard_rule = STAGES[target]
        if shard_rule:
            streams = SLURM_CONFIG["backbone"]["streams"] if shard_rule == "features_shard" else [None]
            assert jobs_per_rule[shard_rule] == n_shards * len(streams), shard_rule
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


# The checks made before anything is submitted (regiongraph/slurm.py), on sinfo's own output.
SINFO = "cpu*|2|23081|infinite|(null)\ngpu|2|23081|1-00:00:00|gpu:2\ngpu|8|64000+|1-00:00:00|gpu:a100:4(S:0-1)\n"


def test_sinfo_partitions_are_their_largest_nodes():
    partitions = parse_sinfo(SINFO)
    assert partitions["cpu"] == PartitionLimits("cpu", 2, 23081, None, 0, default=True)
    assert partitions["gpu"] == PartitionLimits("gpu", 8, 64000, 24 * 60, 4)
    assert [slurm_minutes(t) for t in ("30", "5:00", "1:30:00", "2-00:00:00", "1-12", "0:30")] == [
        30, 5, 90, 2880, 2160, 1
    ]
    assert gres_gpus("gpu:2,gpu:v100:1(S:0)") == 3 and gres_gpus("(null)") == 0


def test_a_job_no_partition_can_run_is_named_with_what_it_asks():
    cluster = parse_sinfo(SINFO)
    index = request_of("index", 8, {"mem_mb": 16000, "runtime": 120})
    small = request_of("split", 1, {"mem_mb": 4000, "runtime": 60})
    gpu_job = request_of("features_shard", 2, {"gpu": 1, "cpus_per_task": 6, "mem_mb": 32000})
    assert (index.cpus, gpu_job.cpus, gpu_job.gpus) == (8, 6, 1)
    # without a partition file the plugin sends jobs to the default partition
    problems = misfits([index, small, gpu_job], cluster)
    assert len(problems) == 2
    assert problems[0].startswith(
        "rule index: asks for 8 CPUs, 16000 MB, 120 min, more than the default partition 'cpu' "
        "offers (cpu: 2 CPUs, 23081 MB, no time limit, 0 GPUs)"
    )
    assert "--set-resources" in problems[0] and problems[1].startswith("rule features_shard:")
    # the partition file the plugin chooses from: only its partitions with GPUs take GPU jobs
    fitted = {"cpu": PartitionLimits("cpu", 2, 23081, None, 0), "gpu": PartitionLimits("gpu", 6, 64000, 1440, 4)}
    problems = misfits([index, small, gpu_job], cluster, fitted, "partitions.yaml")
    assert problems == [problems[0]] and "more than any partition of partitions.yaml" in problems[0]
    # each limit on its own: memory, time, GPUs
    assert misfits([request_of("split", 1, {"mem_mb": 30000})], cluster)[0].startswith(
        "rule split: asks for 1 CPUs, 30000 MB, more than"
    )
    assert misfits([request_of("split", 1, {"mem_mb": 30000})], {"big": PartitionLimits("big", 2, 40000, None, 0, True)}) == []
    day = {"gpu": PartitionLimits("gpu", 8, 64000, 1440, 4, True)}
    assert misfits([request_of("train", 1, {"runtime": 1441})], day)[0].startswith("rule train: asks for 1 CPUs, 1441 min")
    assert misfits([request_of("train", 1, {"runtime": 1440, "gpu": 4})], day) == []
    assert misfits([request_of("train", 1, {"gpu": 5})], day)[0].startswith("rule train: asks for 1 CPUs, 5 GPUs")
    # a job sent to a named partition must fit that one
    pinned = request_of("split", 4, {"slurm_partition": "cpu"})
    assert misfits([pinned], cluster)[0].startswith("rule split: asks for 4 CPUs, more than partition 'cpu'")


def test_a_partition_file_that_promises_more_than_sinfo_is_refused():
    cluster = parse_sinfo(SINFO)
    shipped = partition_file_limits(yaml.safe_load((PROFILE / "partitions.yaml").read_text()))
    problems = misfits([], cluster, shipped, "partitions.yaml")
    assert problems[0] == (
        "partitions.yaml: partition 'cpu' promises more than its nodes have (max_threads 64 > 2; "
        "max_mem_mb 256000 > 23081; sinfo: cpu: 2 CPUs, 23081 MB, no time limit, 0 GPUs): edit the limits there"
    )
    assert "max_runtime 2880 > 1440" in problems[1]
    renamed = {"batch": PartitionLimits("batch", 2, 1000, None, 0)}
    assert "partition 'batch' does not exist on this cluster (sinfo lists cpu, gpu)" in misfits([], cluster, renamed)[0]


def test_status_command_must_work_without_accounting():
    assert status_command_problem("sacct", accounting=True, min_job_age=10, init_seconds=40) is None
    assert "--slurm-status-command squeue" in status_command_problem("sacct", False, 300, 40)
    assert "--slurm-status-command squeue" in status_command_problem(None, False, 300, 40)
    assert status_command_problem("squeue", False, 300, 40) is None
    # below 3 x the first wait the plugin switches to sacct by itself
    assert "lower --slurm-init-seconds-before-status-checks to 33" in status_command_problem("squeue", False, 100, 40)
    config = "AccountingStorageType   = accounting_storage/none\nMinJobAge               = 300 sec\n"
    assert not cluster_accounting(config) and slurm_min_job_age(config) == 300
    assert cluster_accounting("AccountingStorageType = accounting_storage/slurmdbd\n")


def test_array_jobs_are_refused_where_the_plugin_would_drop_some():
    jobs = {"flow_shard": 320, "boxes_shard": 320, "index": 1}
    assert array_jobs_problem(set(), jobs, 200, 100) is None
    message = array_jobs_problem({"all"}, jobs, 200, 100)
    assert message.startswith("--slurm-array-jobs all: this run has 641 jobs, more than the 100")
    assert "boxes_shard (320 jobs), flow_shard (320 jobs)" in message
    assert "drop --slurm-array-jobs" in message
    small = {"flow_shard": 3, "boxes_shard": 3, "index": 1}
    assert array_jobs_problem({"flow_shard"}, small, 200, 100) is None
    assert "more than the 2" in array_jobs_problem({"flow_shard"}, small, 2, 100)
    assert array_jobs_problem({"index"}, small, 2, 100) is None  # one job: never an array


def test_resources_not_known_before_the_job_runs_are_not_checked():
    request = request_of("boxes_shard", "TBD", {"mem_mb": "<TBD>", "runtime": 30, "gpu": 1, "cpus_per_gpu": 4})
    assert (request.cpus, request.mem_mb, request.minutes, request.gpus) == (4, None, 30, 1)
