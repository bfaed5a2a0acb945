"""What the console shows at the end of a run: the failed jobs and their errors, the videos left out.

A job's own output goes to its ``log:`` file, so a failure shows on the console only as
Snakemake's ``Error in rule ...`` block. The workflow's ``onerror:`` handler calls
:func:`failed_jobs_report` with Snakemake's main log: for each failed job it names the rule,
the output and the log file, and quotes the log's last meaningful lines (the exception of a
traceback; progress bars left out). ``onsuccess:`` calls :func:`dropped_report`, which says
how many videos were left out and why. Snakemake loads this module with the workflow, so it
imports nothing beyond the standard library at load time.
"""

from __future__ import annotations

import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

ERROR_BLOCK = re.compile(r"^Error in rule (?P<rule>\S+):\s*$")
FIELD = re.compile(r"^\s+(?P<key>[a-z_]+):\s?(?P<value>.*)$")
ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
PROGRESS = re.compile(r"\d+%\||\d+/\d+ \[|it/s\]|s/it\]|B/s\]")
TRACEBACK = "Traceback (most recent call last):"


@dataclass
class FailedJob:
    rule: str
    fields: dict[str, str] = field(default_factory=dict)

    @property
    def logs(self) -> list[str]:
        value = self.fields.get("log", "")
        value = value.split(" (check log file", 1)[0]
        return [part for part in re.split(r",\s*", value) if part]


def failed_jobs(main_log: str) -> list[FailedJob]:
    """The ``Error in rule`` blocks of Snakemake's main log, in order, each job once."""
    jobs: list[FailedJob] = []
    current: FailedJob | None = None
    for line in ANSI.sub("", main_log).splitlines():
        match = ERROR_BLOCK.match(line)
        if match:
            current = FailedJob(match["rule"])
            jobs.append(current)
            continue
        if current is not None:
            found = FIELD.match(line)
            if found:
                current.fields.setdefault(found["key"], found["value"].strip())
            else:
                current = None
    unique: dict[tuple[str, str], FailedJob] = {}
    for job in jobs:
        unique.setdefault((job.rule, job.fields.get("jobid", "")), job)
    return list(unique.values())


def meaningful_tail(text: str, lines: int = 6) -> list[str]:
    """The end of a job log worth reading: the exception of its last traceback, or else its
    last non-empty lines, without progress bars."""
    rows = [row.rstrip() for row in re.split(r"[\r\n]+", ANSI.sub("", text))]
    rows = [row for row in rows if row.strip() and not PROGRESS.search(row)]
    if TRACEBACK in rows:
        start = len(rows) - 1 - rows[::-1].index(TRACEBACK)
        tail = rows[start + 1 :]
        # frames and source lines are indented; what is left is the exception and its message
        message = [row for row in tail if not row.startswith((" ", "\t"))]
        if message:
            return message[-lines:]
    return rows[-lines:]


def _first_output(job: FailedJob) -> str:
    outputs = [o for o in re.split(r",\s*", job.fields.get("output", "")) if o]
    if not outputs:
        return job.fields.get("wildcards", "")
    return outputs[0] + (f" and {len(outputs) - 1} more" if len(outputs) > 1 else "")


def failed_jobs_report(main_log_path, lines: int = 6) -> str:
    """Per failed job of the run whose main log is ``main_log_path`` (a path, or the list of
    them that Snakemake hands its ``onerror:`` handler): rule, output, log, and the last
    meaningful lines of the log."""
    if isinstance(main_log_path, list | tuple):
        main_log_path = main_log_path[0] if main_log_path else None
    if not main_log_path or not os.path.exists(main_log_path):
        return ""
    jobs = failed_jobs(Path(main_log_path).read_text(errors="replace"))
    if not jobs:
        return ""
    out = [f"{len(jobs)} job{'s' if len(jobs) > 1 else ''} failed:"]
    for job in jobs:
        target = _first_output(job)
        out.append(f"  rule {job.rule}" + (f" ({target})" if target else ""))
        for log_path in job.logs or []:
            if os.path.exists(log_path):
                tail = meaningful_tail(Path(log_path).read_text(errors="replace"), lines)
                out.append(f"    log {log_path}:")
                out.extend(f"      {row}" for row in tail or ["(empty)"])
            else:
                out.append(f"    log {log_path} (not written: the job failed before it started)")
        if not job.logs:
            message = job.fields.get("message")
            if message and message != "None":
                out.append(f"    {message}")
            out.append("    (no log file; see the error above)")
    return "\n".join(out)


def dropped_report(*paths: str | os.PathLike) -> str:
    """The newest existing table of dropped videos among ``paths``, summarised."""
    existing = [Path(p) for p in paths if Path(p).exists()]
    if not existing:
        return ""
    from regiongraph.io.dropped import read_dropped, summarise_dropped  # pandas: only now
    newest = max(existing, key=lambda p: p.stat().st_mtime_ns)
    lines = summarise_dropped(read_dropped(newest))
    if not lines:
        return ""
    return "\n".join([lines[0].replace("the table's", f"{newest}'s"), *lines[1:]])


def print_console_report(text: str) -> None:
    """Print a report to the console (stderr, beside Snakemake's own messages), if any."""
    if text:
        print(text, file=sys.stderr, flush=True)
