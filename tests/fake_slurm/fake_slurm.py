"""Recording stand-ins for the SLURM commands that snakemake-executor-plugin-slurm calls.

Only the cluster is fake: the real executor plugin (2.8) and jobstep plugin (0.6) build the
commands, and these stand-ins record what they were asked and behave as SLURM does, on this
machine. ``sbatch``, ``srun``, ``sacct``, ``squeue``, ``scontrol``, ``scancel`` and ``sinfo``
in this folder are two-line shell wrappers calling ``fake_slurm.py <command> ARGS``.

What the plugin sends, read from its source (``snakemake_executor_plugin_slurm``):

* ``sbatch --parsable --job-name RUN_UUID --output LOG --export=ALL --comment rule_R_wildcards_W
  -p PART -t RUNTIME --mem MB --ntasks=1 --cpus-per-task=N | --cpus-per-gpu=N -D WORKDIR
  [--gpus=N | --gres=G] [--array=1-K] --wrap="python -m snakemake ..."`` (``submit_string.py``,
  ``__init__.py``); with ``pass_command_as_script`` the job script comes on stdin instead of
  ``--wrap`` (path ``/dev/stdin``). ``--parsable`` prints ``JOBID`` (``JOBID;CLUSTER`` on a
  multi-cluster setup). An array's first task runs the wrapped command; the others decode theirs
  from ``--slurm-jobstep-array-execs`` using ``SLURM_ARRAY_TASK_ID`` and
  ``SLURM_ARRAY_TASK_MIN``, which SLURM sets in each task's environment.
* ``sacct -X --parsable2 --clusters all --noheader --format=JobIdRaw,State --starttime T
  --endtime now --name RUN_UUID``, parsed as ``ID|STATE`` lines (``job_status_query.py``).
  Array tasks are looked up as ``JOBID_TASK`` first, then ``JOBID``.
* ``squeue --format=%i|%T --states=all --noheader --name RUN_UUID``: same parsing.
* ``scontrol show config`` for ``MaxArraySize`` and ``MinJobAge``.
* ``scancel ID ...`` when Snakemake is interrupted; ``sinfo -o %P`` when no partition is given.
* Inside a non-array job, the jobstep plugin runs ``srun -n1 --cpu-bind=q --cpus-per-task=N |
  --cpus-per-gpu=N [--gpus=N] --nodes=1 python -m snakemake ...``; array tasks run their
  command without srun.
* Real ``sacct --format=JobIdRaw`` lists an array task under its own raw id; the plugin then
  falls back to the array's id. These stand-ins answer ``JOBID_TASK`` (as ``squeue %i`` does), so
  each task's own state is what the plugin sees.

Environment: ``FAKE_SLURM_DIR`` (required) holds ``record.jsonl`` (one JSON object per call:
command, argv, parsed options, and for sbatch the job script and the ``SLURM_*``/``SBATCH_*``
variables it was given) and the job states under ``jobs/``. ``FAKE_SLURM_PARALLEL`` (default 2)
caps the array tasks run at once. Each submitted job runs in its own session (process group),
so ``scancel`` and a test's clean-up can end it.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

# sbatch options that take a value; both "--opt VALUE" and "--opt=VALUE" (and "-p VALUE").
SBATCH_VALUE_OPTIONS = {
    "--job-name": "job_name", "-J": "job_name",
    "--output": "output", "-o": "output",
    "--error": "error", "-e": "error",
    "--comment": "comment",
    "--account": "account", "-A": "account",
    "--partition": "partition", "-p": "partition",
    "--clusters": "clusters", "-M": "clusters",
    "--time": "time", "-t": "time",
    "--constraint": "constraint", "-C": "constraint",
    "--qos": "qos", "-q": "qos",
    "--mem": "mem",
    "--mem-per-cpu": "mem_per_cpu",
    "--nodes": "nodes", "-N": "nodes",
    "--ntasks": "ntasks", "-n": "ntasks",
    "--ntasks-per-node": "ntasks_per_node",
    "--ntasks-per-gpu": "ntasks_per_gpu",
    "--cpus-per-task": "cpus_per_task", "-c": "cpus_per_task",
    "--cpus-per-gpu": "cpus_per_gpu",
    "--chdir": "chdir", "-D": "chdir",
    "--gres": "gres",
    "--gpus": "gpus", "-G": "gpus",
    "--array": "array", "-a": "array",
    "--wrap": "wrap",
    "--export": "export",
    "--exclude": "exclude", "-x": "exclude",
    "--reservation": "reservation",
}
SBATCH_FLAGS = {"--parsable": "parsable", "--requeue": "requeue", "--no-requeue": "no_requeue"}

# srun options of the jobstep plugin (and its commented-out group-job code).
SRUN_VALUE_OPTIONS = {
    "-n": "ntasks", "--ntasks": "ntasks",
    "-c": "cpus_per_task", "--cpus-per-task": "cpus_per_task",
    "--cpus-per-gpu": "cpus_per_gpu",
    "--cpu-bind": "cpu_bind",
    "--gpus": "gpus", "-G": "gpus",
    "--nodes": "nodes", "-N": "nodes",
    "-J": "job_name", "--job-name": "job_name",
    "--jobid": "jobid",
    "--mem-per-cpu": "mem_per_cpu",
    "--mem": "mem",
}
SRUN_FLAGS = {"--exclusive": "exclusive"}


class UsageError(Exception):
    pass


def state_dir() -> Path:
    root = os.environ.get("FAKE_SLURM_DIR")
    if not root:
        raise UsageError("FAKE_SLURM_DIR is not set")
    path = Path(root)
    (path / "jobs").mkdir(parents=True, exist_ok=True)
    return path


def record(slurm_command: str, argv: list[str], **fields) -> None:
    entry = {"slurm_command": slurm_command, "argv": argv, "time": time.time(), **fields}
    with open(state_dir() / "record.jsonl", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        handle.write(json.dumps(entry) + "\n")


def slurm_env_of(environ) -> dict[str, str]:
    return {k: v for k, v in environ.items() if k.startswith(("SLURM_", "SBATCH_", "SRUN_"))}


def parse_options(argv: list[str], value_options: dict, flags: dict, command: str,
                  stop_at_positional: bool) -> tuple[dict, list[str]]:
    """Options as SLURM's getopt reads them; unknown options are an error, as in SLURM."""
    options: dict = {}
    rest: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        if not arg.startswith("-") or arg == "-":
            if stop_at_positional:
                return options, argv[i:]
            rest.append(arg)
            i += 1
            continue
        name, eq, value = arg.partition("=")
        if name in flags:
            options[flags[name]] = True
        elif name in value_options:
            if not eq:
                i += 1
                if i == len(argv):
                    raise UsageError(f"{command}: option {name} requires an argument")
                value = argv[i]
            options[value_options[name]] = value
        elif len(arg) > 2 and arg[:2] in value_options and not arg.startswith("--"):
            options[value_options[arg[:2]]] = arg[2:]  # "-n1"
        else:
            raise UsageError(f"{command}: unrecognized option '{arg}'")
        i += 1
    return options, rest


def next_job_id() -> int:
    counter = state_dir() / "next_id"
    with open(counter, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        handle.seek(0)
        text = handle.read().strip()
        job_id = int(text) if text else 1000
        handle.seek(0)
        handle.truncate()
        handle.write(str(job_id + 1))
    return job_id


def write_state(job_key: str, **state) -> None:
    path = state_dir() / "jobs" / f"{job_key}.json"
    tmp = path.with_suffix(".tmp")
    old = json.loads(path.read_text()) if path.exists() else {}
    tmp.write_text(json.dumps({**old, **state}))
    os.replace(tmp, path)


def read_states() -> list[dict]:
    states = []
    for path in sorted((state_dir() / "jobs").glob("*.json")):
        try:
            states.append(json.loads(path.read_text()))
        except (OSError, json.JSONDecodeError):
            continue  # being replaced right now
    return states


def parse_array(spec: str) -> list[int]:
    match = re.fullmatch(r"(\d+)-(\d+)", spec) or re.fullmatch(r"(\d+)", spec)
    if not match:
        raise UsageError(f"sbatch: fake supports --array=A-B or --array=A only, got {spec!r}")
    start = int(match[1])
    stop = int(match[2]) if match.lastindex == 2 else start
    return list(range(start, stop + 1))


def sbatch(argv: list[str]) -> int:
    options, positional = parse_options(
        argv, SBATCH_VALUE_OPTIONS, SBATCH_FLAGS, "sbatch", stop_at_positional=True
    )
    if "wrap" in options:
        if positional:
            raise UsageError("sbatch: error: script arguments not permitted with --wrap option")
        script = "#!/bin/sh\n" + options["wrap"] + "\n"
    elif positional:
        source = positional[0]
        script = sys.stdin.read() if source in ("/dev/stdin", "-") else Path(source).read_text()
    else:
        script = sys.stdin.read()
    if not script.startswith("#!"):
        raise UsageError("sbatch: error: This does not look like a batch script.")
    job_id = next_job_id()
    tasks = parse_array(options["array"]) if "array" in options else None
    record("sbatch", argv, options=options, script=script, env=slurm_env_of(os.environ),
           job_id=job_id, tasks=tasks)
    keys = [f"{job_id}_{t}" for t in tasks] if tasks else [str(job_id)]
    for key in keys:
        write_state(key, key=key, name=options.get("job_name", ""), state="PENDING")
    spec = {"job_id": job_id, "options": options, "script": script, "tasks": tasks,
            "cwd": os.getcwd(), "env": dict(os.environ)}
    spec_path = state_dir() / "jobs" / f"{job_id}.spec"
    spec_path.write_text(json.dumps(spec))
    # The job runs detached, like a batch job: sbatch returns at once.
    subprocess.Popen(
        [sys.executable, os.path.abspath(__file__), "_run", str(spec_path)],
        start_new_session=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL, env=os.environ,
    )
    if options.get("parsable"):
        print(job_id)
    else:
        print(f"Submitted batch job {job_id}")
    return 0


def _log_path(pattern: str, job_id: int, array_job: int | None, task: int | None) -> str:
    """sbatch --output patterns: %j job id, %A array master id, %a task id, %% a percent."""
    out = pattern.replace("%%", "\0").replace("%j", str(job_id))
    out = out.replace("%A", str(array_job if array_job is not None else job_id))
    out = out.replace("%a", str(task if task is not None else 4294967294))
    return out.replace("\0", "%")


def _run_one(spec: dict, task: int | None, task_job_id: int) -> None:
    options = spec["options"]
    key = f"{spec['job_id']}_{task}" if task is not None else str(spec["job_id"])
    env = dict(spec["env"]) if options.get("export", "ALL") == "ALL" else {
        k: v for k, v in spec["env"].items() if k in ("PATH", "HOME", "USER")
    }
    cwd = options.get("chdir") or spec["cwd"]
    env.update({
        "SLURM_JOB_ID": str(task_job_id), "SLURM_JOBID": str(task_job_id),
        "SLURM_JOB_NAME": options.get("job_name", "sbatch"),
        "SLURM_JOB_PARTITION": options.get("partition", "debug"),
        "SLURM_SUBMIT_DIR": spec["cwd"], "SLURM_CLUSTER_NAME": "fake",
        "SLURM_NTASKS": options.get("ntasks", "1"), "SLURM_NNODES": "1",
        "SLURM_JOB_NODELIST": "localhost", "SLURMD_NODENAME": "localhost",
    })
    if "cpus_per_task" in options:
        env["SLURM_CPUS_PER_TASK"] = options["cpus_per_task"]
    if "cpus_per_gpu" in options:
        env["SLURM_CPUS_PER_GPU"] = options["cpus_per_gpu"]
    if "mem" in options:
        env["SLURM_MEM_PER_NODE"] = options["mem"]
    if "gpus" in options:  # SLURM exports the sbatch --gpus request as SLURM_GPUS
        env["SLURM_GPUS"] = options["gpus"]
    if task is not None:
        tasks = spec["tasks"]
        env.update({
            "SLURM_ARRAY_JOB_ID": str(spec["job_id"]), "SLURM_ARRAY_TASK_ID": str(task),
            "SLURM_ARRAY_TASK_MIN": str(min(tasks)), "SLURM_ARRAY_TASK_MAX": str(max(tasks)),
            "SLURM_ARRAY_TASK_COUNT": str(len(tasks)), "SLURM_ARRAY_TASK_STEP": "1",
        })
    log = _log_path(options.get("output", "slurm-%j.out"), task_job_id,
                    spec["job_id"] if task is not None else None, task)
    log = os.path.join(cwd, log)
    script = Path(state_dir() / "jobs" / f"{key}.sh")
    script.write_text(spec["script"])
    script.chmod(0o755)
    with open(log, "a") as out:
        proc = subprocess.Popen([str(script)], cwd=cwd, env=env, stdout=out,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        write_state(key, state="RUNNING", pid=proc.pid, pgid=os.getpgid(0), job_id=task_job_id)
        code = proc.wait()
    current = json.loads((state_dir() / "jobs" / f"{key}.json").read_text())
    if current.get("state") == "CANCELLED":
        return
    write_state(key, state="COMPLETED" if code == 0 else "FAILED", exit_code=code)


def run_job(spec_path: str) -> int:
    spec = json.loads(Path(spec_path).read_text())
    if spec["tasks"] is None:
        _run_one(spec, None, spec["job_id"])
        return 0
    parallel = int(os.environ.get("FAKE_SLURM_PARALLEL", "2"))
    with ThreadPoolExecutor(max_workers=parallel) as pool:
        futures = [pool.submit(_run_one, spec, task, next_job_id()) for task in spec["tasks"]]
        for future in futures:
            future.result()
    return 0


def _status_lines() -> list[tuple[str, str, str]]:
    return [(s["key"], s["state"], s.get("name", "")) for s in read_states()]


def sacct(argv: list[str]) -> int:
    record("sacct", argv)
    args = " ".join(argv)
    name = None
    if "--name" in argv:
        name = argv[argv.index("--name") + 1]
    if "--format=JobIdRaw,State" in argv:
        if "--parsable2" not in argv or "--noheader" not in argv or "-X" not in argv:
            raise UsageError(f"sacct: fake expects -X --parsable2 --noheader, got {args}")
        for key, state, job_name in _status_lines():
            if name is None or job_name == name:
                print(f"{key}|{state}")
        return 0
    # The plugin's other sacct calls: account guess (-o Account), failure reasons
    # (--format=Reason) and failed nodes (-o nodelist): nothing to report here.
    if "nodelist" in args:
        print("localhost")
    return 0


def squeue(argv: list[str]) -> int:
    record("squeue", argv)
    name = argv[argv.index("--name") + 1] if "--name" in argv else None
    if "--format=%i|%T" not in argv:
        raise UsageError(f"squeue: fake expects --format=%i|%T, got {' '.join(argv)}")
    for key, state, job_name in _status_lines():
        if name is None or job_name == name:
            print(f"{key}|{state}")
    return 0


def scontrol(argv: list[str]) -> int:
    record("scontrol", argv)
    if argv[:2] == ["show", "config"]:
        print("Configuration data as of 2026-01-01T00:00:00")
        print("MaxArraySize            = 1001")
        print("MinJobAge               = 300 sec")
        print("AccountingStorageType   = accounting_storage/slurmdbd")
        return 0
    if argv[:2] == ["show", "partition"]:
        for name, gpus in (("cpu", 0), ("gpu", 4)):
            gres = f" TRES=cpu=64,mem=512G,gres/gpu={gpus}" if gpus else " TRES=cpu=64,mem=512G"
            print(f"PartitionName={name}\n   MaxTime=2-00:00:00 MaxNodes=UNLIMITED\n  {gres}\n")
        return 0
    raise UsageError(f"scontrol: fake supports 'show config' and 'show partition', got {argv}")


# The fake cluster's partitions as `sinfo -o '%P|%c|%m|%l|%G'` prints them: the limits of
# profiles/slurm/partitions.yaml, so that the workflow's pre-submission check passes.
SINFO_PARTITIONS = [("cpu*", "64", "256000", "3-00:00:00", "(null)"),
                    ("gpu", "64", "512000", "2-00:00:00", "gpu:a100:4(S:0-1)")]


def sinfo(argv: list[str]) -> int:
    record("sinfo", argv)
    if "-o" in argv:
        fields = {"%P": 0, "%c": 1, "%m": 2, "%l": 3, "%G": 4}
        columns = [fields[f] for f in argv[argv.index("-o") + 1].split("|")]
        if "-h" not in argv:
            print("|".join(f.lstrip("%") for f in argv[argv.index("-o") + 1].split("|")))
        for row in SINFO_PARTITIONS:
            print("|".join(row[c] for c in columns))
        return 0
    print("PARTITION\ncpu*\ngpu")
    return 0


def scancel(argv: list[str]) -> int:
    record("scancel", argv)
    wanted = [a for a in argv if not a.startswith("-")]
    for state in read_states():
        key = state["key"]
        if key in wanted or key.split("_")[0] in wanted:
            if state["state"] in ("PENDING", "RUNNING"):
                write_state(key, state="CANCELLED")
                if "pgid" in state:
                    try:
                        os.killpg(state["pgid"], signal.SIGTERM)
                    except ProcessLookupError:
                        pass
    return 0


def srun(argv: list[str]) -> int:
    options, command = parse_options(
        argv, SRUN_VALUE_OPTIONS, SRUN_FLAGS, "srun", stop_at_positional=True
    )
    if not command:
        raise UsageError("srun: fatal: No command given to execute.")
    record("srun", argv, options=options, step_command=command, env=slurm_env_of(os.environ))
    env = dict(os.environ)
    env["SLURM_STEP_ID"] = "0"
    if "cpus_per_task" in options:
        env["SLURM_CPUS_PER_TASK"] = options["cpus_per_task"]
    if "gpus" in options:
        env["SLURM_STEP_GPUS"] = options["gpus"]
    sys.stdout.flush()
    os.execvpe(command[0], command, env)
    return 127  # not reached


COMMANDS = {"sbatch": sbatch, "srun": srun, "sacct": sacct, "squeue": squeue,
            "scontrol": scontrol, "sinfo": sinfo, "scancel": scancel}


def main() -> int:
    command, argv = sys.argv[1], sys.argv[2:]
    if command == "_run":
        return run_job(argv[0])
    try:
        return COMMANDS[command](argv)
    except UsageError as error:
        record(command, argv, error=str(error))
        print(str(error), file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())

