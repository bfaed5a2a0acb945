"""Checks made before a run through snakemake-executor-plugin-slurm submits anything.

Three ways the plugin (2.8.0) leaves a run waiting forever, each turned into an error at once
(the workflow's ``onstart:`` calls :func:`check_slurm_run`):

- a job larger than every node of the partition it is sent to stays PENDING
  (``Reason=PartitionConfig`` or ``Resources``): :func:`misfits` compares each job's CPUs,
  memory, time and GPUs with the partitions ``sinfo`` reports, and the partition file given to
  the plugin (``--slurm-partition-config``) with the same ``sinfo`` limits, since the plugin
  picks partitions from that file only;
- polling with ``sacct`` on a cluster without accounting loses every job:
  :func:`status_command_problem`;
- array jobs: the plugin drops the jobs of an array rule that Snakemake hands it in more than
  one batch ("Array job collection incomplete ... waiting for more jobs"), which happens
  whenever ``--jobs`` or ``--max-jobs-per-timespan`` is below the jobs ready at once:
  :func:`array_jobs_problem`.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

SINFO_FORMAT = "%P|%c|%m|%l|%G"  # partition (default marked *), CPUs, memory MB, time limit, GRES
PROFILE_HINT = (
    "lower it with --set-threads / --set-resources, or in set-resources of "
    "profiles/slurm/config.v8+.yaml"
)


@dataclass(frozen=True)
class PartitionLimits:
    """The largest node of a partition: CPUs, memory (MB), time limit (minutes, None: none), GPUs."""

    name: str
    cpus: int
    mem_mb: int
    minutes: int | None
    gpus: int
    default: bool = False

    def describe(self) -> str:
        time = "no time limit" if self.minutes is None else f"{self.minutes} min"
        return f"{self.name}: {self.cpus} CPUs, {self.mem_mb} MB, {time}, {self.gpus} GPUs"


@dataclass(frozen=True)
class JobRequest:
    """What the plugin asks sbatch for, for one rule."""

    rule: str
    cpus: int
    mem_mb: int | None
    minutes: int | None
    gpus: int
    partition: str | None = None

    def describe(self) -> str:
        parts = [f"{self.cpus} CPUs"]
        if self.mem_mb is not None:
            parts.append(f"{self.mem_mb} MB")
        if self.minutes is not None:
            parts.append(f"{self.minutes} min")
        if self.gpus:
            parts.append(f"{self.gpus} GPUs")
        return ", ".join(parts)

    def fits(self, limits: PartitionLimits) -> bool:
        return (
            self.cpus <= limits.cpus
            and (self.mem_mb is None or self.mem_mb <= limits.mem_mb)
            and (self.minutes is None or limits.minutes is None or self.minutes <= limits.minutes)
            and self.gpus <= limits.gpus
        )


def slurm_minutes(text: str) -> int | None:
    """SLURM's time format (``infinite``, ``MM``, ``MM:SS``, ``HH:MM:SS``, ``D-HH[:MM[:SS]]``)
    in whole minutes, None for no limit."""
    text = text.strip()
    if text.lower() in ("infinite", "unlimited", "n/a", ""):
        return None
    days, _, clock = text.rpartition("-")
    fields = [int(f) for f in clock.split(":")]
    if days:
        hours, minutes, seconds = (fields + [0, 0])[:3]
    elif len(fields) == 3:
        hours, minutes, seconds = fields
    elif len(fields) == 2:
        hours, (minutes, seconds) = 0, fields
    else:
        hours, minutes, seconds = 0, fields[0], 0
    return (int(days or 0) * 24 + hours) * 60 + minutes + (1 if seconds else 0)


def gres_gpus(text: str) -> int:
    """GPUs in a GRES string of sinfo (``gpu:2``, ``gpu:a100:4(S:0-1)``, ``(null)``)."""
    total = 0
    for item in text.split(","):
        match = re.fullmatch(r"gpu(?::[^:(]+)?:(\d+)(?:\(.*\))?", item.strip())
        if match:
            total += int(match[1])
    return total


def parse_sinfo(text: str) -> dict[str, PartitionLimits]:
    """Partitions from ``sinfo -h -o '%P|%c|%m|%l|%G'``, each the largest of its node lines."""
    partitions: dict[str, PartitionLimits] = {}
    for line in text.splitlines():
        if not line.strip():
            continue
        name, cpus, mem, time, gres = line.strip().split("|")
        default = name.endswith("*")
        name = name.rstrip("*")
        limits = PartitionLimits(
            name, int(cpus.rstrip("+")), int(mem.rstrip("+")), slurm_minutes(time),
            gres_gpus(gres), default,
        )
        old = partitions.get(name)
        if old is not None:
            limits = PartitionLimits(
                name, max(old.cpus, limits.cpus), max(old.mem_mb, limits.mem_mb),
                None if None in (old.minutes, limits.minutes) else max(old.minutes, limits.minutes),
                max(old.gpus, limits.gpus), old.default or default,
            )
        partitions[name] = limits
    return partitions


def _number(value) -> int | None:
    """A resource as a whole number; None where it is not one yet (a value Snakemake evaluates
    only when the job runs)."""
    try:
        return None if value is None else int(value)
    except (TypeError, ValueError):
        return None


def request_of(rule: str, threads: int, resources: Mapping) -> JobRequest:
    """CPUs as the plugin computes them: cpus_per_task, else cpus_per_gpu x GPUs, else threads."""
    gpus = _number(resources.get("gpu", 0)) or 0
    cpus = _number(resources.get("cpus_per_task"))
    if cpus is None and gpus:
        per_gpu = _number(resources.get("cpus_per_gpu"))
        cpus = None if per_gpu is None else per_gpu * gpus
    if cpus is None:
        cpus = _number(threads) or 1
    return JobRequest(
        rule, max(cpus, 1), _number(resources.get("mem_mb")), _number(resources.get("runtime")),
        gpus, resources.get("slurm_partition"),
    )


def partition_file_limits(data: Mapping) -> dict[str, PartitionLimits]:
    """The plugin's partition file (``partitions: {name: {max_threads, max_mem_mb, ...}}``)."""
    big = 2**62
    return {
        name: PartitionLimits(
            name, int(p.get("max_threads", big)), int(p.get("max_mem_mb", big)),
            None if p.get("max_runtime") is None else int(p["max_runtime"]),
            int(p.get("max_gpu", 0)),
        )
        for name, p in data["partitions"].items()
    }


def misfits(
    requests: Iterable[JobRequest],
    cluster: Mapping[str, PartitionLimits],
    partition_file: Mapping[str, PartitionLimits] | None = None,
    partition_file_name: str = "the partition file",
) -> list[str]:
    """One line per job that could not start on the partition it would be sent to, and per
    partition of the plugin's partition file that promises more than the cluster has."""
    problems = []
    if partition_file is not None:
        for name, promised in partition_file.items():
            real = cluster.get(name)
            if real is None:
                problems.append(
                    f"{partition_file_name}: partition {name!r} does not exist on this cluster "
                    f"(sinfo lists {', '.join(sorted(cluster))}): edit the names there"
                )
                continue
            too_much = [
                f"{key} {value} > {have}"
                for key, value, have in (
                    ("max_threads", promised.cpus, real.cpus),
                    ("max_mem_mb", promised.mem_mb, real.mem_mb),
                    ("max_gpu", promised.gpus, real.gpus),
                )
                if value < 2**62 and value > have
            ]
            if promised.minutes is not None and real.minutes is not None and promised.minutes > real.minutes:
                too_much.append(f"max_runtime {promised.minutes} > {real.minutes}")
            if too_much:
                problems.append(
                    f"{partition_file_name}: partition {name!r} promises more than its nodes have "
                    f"({'; '.join(too_much)}; sinfo: {real.describe()}): edit the limits there"
                )
    default = next((p for p in cluster.values() if p.default), None)
    for request in {r.rule: r for r in requests}.values():
        if request.partition:
            candidates = [cluster[request.partition]] if request.partition in cluster else []
            where = f"partition {request.partition!r} (slurm_partition)"
        elif partition_file is not None:
            candidates = [p for p in partition_file.values() if p.gpus >= request.gpus]
            where = f"any partition of {partition_file_name}"
        else:
            candidates = [default] if default else list(cluster.values())
            where = f"the default partition {default.name!r}" if default else "any partition"
        if not any(request.fits(p) for p in candidates):
            limits = "; ".join(p.describe() for p in candidates) or "no such partition"
            problems.append(
                f"rule {request.rule}: asks for {request.describe()}, more than {where} "
                f"offers ({limits}), so SLURM would keep it PENDING: {PROFILE_HINT}"
            )
    return problems


def status_command_problem(
    status_command: str | None, accounting: bool, min_job_age: int | None, init_seconds: int
) -> str | None:
    """sacct on a cluster without accounting answers nothing, and the plugin loses every job;
    the plugin also turns squeue into sacct when MinJobAge < 3 x the first status wait."""
    if accounting:
        return None
    if status_command in (None, "sacct"):
        return (
            "this cluster has no accounting (AccountingStorageType=accounting_storage/none), so "
            "sacct knows no job and the run would wait forever: use --slurm-status-command "
            "squeue (the profile's slurm-status-command)"
        )
    if min_job_age is None or min_job_age < 3 * init_seconds:
        return (
            f"this cluster has no accounting and MinJobAge={min_job_age} s is below 3 x "
            f"--slurm-init-seconds-before-status-checks ({init_seconds} s), where the plugin "
            "polls with sacct instead of squeue and would wait forever: lower "
            f"--slurm-init-seconds-before-status-checks to {max((min_job_age or 0) // 3, 1)} or less"
        )
    return None


def min_job_age(config_text: str) -> int | None:
    match = re.search(r"^MinJobAge\s*=\s*(\d+)", config_text, re.MULTILINE)
    return int(match[1]) if match else None


def array_jobs_problem(
    array_rules: set[str], jobs_per_rule: Mapping[str, int], jobs_limit: int, rate_limit: int | None
) -> str | None:
    """The plugin submits an array rule's jobs only if Snakemake hands them all over at once,
    which it does only when every job of the run fits ``--jobs`` and the submission rate."""
    selected = {
        rule: n for rule, n in jobs_per_rule.items() if n > 1 and ("all" in array_rules or rule in array_rules)
    }
    if not selected:
        return None
    total = sum(jobs_per_rule.values())
    limit = min(jobs_limit, rate_limit) if rate_limit else jobs_limit
    if total <= limit:
        return None
    rules = ", ".join(f"{rule} ({n} jobs)" for rule, n in sorted(selected.items()))
    return (
        f"--slurm-array-jobs {','.join(sorted(array_rules))}: this run has {total} jobs, more "
        f"than the {limit} that --jobs / --max-jobs-per-timespan let Snakemake hand over at once, "
        f"and snakemake-executor-plugin-slurm then never submits the rest of an array rule's "
        f"jobs ({rules}): drop --slurm-array-jobs (the profile submits one job per shard) or "
        f"raise --jobs and --max-jobs-per-timespan to at least {total}"
    )


def run_command(argv: list[str]) -> str:
    try:
        return subprocess.run(argv, capture_output=True, text=True, check=True, timeout=60).stdout
    except (OSError, subprocess.SubprocessError) as error:
        raise RuntimeError(f"{' '.join(argv)} failed ({error}): is this a SLURM login node?") from error


def cluster_accounting(config_text: str) -> bool:
    match = re.search(r"^AccountingStorageType\s*=\s*(\S+)", config_text, re.MULTILINE)
    return match is None or match[1] != "accounting_storage/none"


def check_slurm_run(workflow) -> None:
    """Raise ``ValueError`` listing every problem above, when Snakemake runs with the SLURM
    executor (the jobs' own Snakemake, the jobstep executor, is not checked)."""
    plugin = getattr(workflow, "executor_plugin", None)
    if plugin is None or plugin.name != "slurm" or workflow.dryrun:
        return
    import yaml

    settings = workflow.executor_settings
    jobs = list(workflow.dag.needrun_jobs())
    requests = [request_of(job.rule.name, job.threads, job.resources) for job in jobs]
    cluster = parse_sinfo(run_command(["sinfo", "-h", "-o", SINFO_FORMAT]))
    partition_file = None
    name = "the partition file"
    if getattr(settings, "partition_config", None):
        path = Path(settings.partition_config)
        name = str(path)
        partition_file = partition_file_limits(yaml.safe_load(path.read_text()))
    problems = misfits(requests, cluster, partition_file, name)
    config_text = run_command(["scontrol", "show", "config"])
    status = status_command_problem(
        getattr(settings, "status_command", None), cluster_accounting(config_text),
        min_job_age(config_text), int(getattr(settings, "init_seconds_before_status_checks", 40) or 40),
    )
    problems += [status] if status else []
    array_setting = getattr(settings, "array_jobs", None) or ""
    array_rules = {r.strip() for r in array_setting.replace(";", ",").split(",") if r.strip()}
    jobs_per_rule: dict[str, int] = {}
    for job in jobs:
        jobs_per_rule[job.rule.name] = jobs_per_rule.get(job.rule.name, 0) + 1
    timespan = workflow.scheduling_settings.max_jobs_per_timespan
    arrays = array_jobs_problem(
        array_rules, jobs_per_rule, int(workflow.resource_settings.nodes or 1),
        int(timespan.max_jobs) if timespan else None,
    )
    problems += [arrays] if arrays else []
    if problems:
        raise ValueError(
            "this run cannot finish on this SLURM cluster; nothing was submitted:\n  "
            + "\n  ".join(problems)
        )
