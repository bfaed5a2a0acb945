"""What the console shows: failed jobs with the end of their logs, config errors in a few lines,
and the videos left out."""

from __future__ import annotations

import pandas as pd

from regiongraph.config import config_problems, load_schema
from regiongraph.console import dropped_report, failed_jobs, failed_jobs_report, meaningful_tail
from tests.conftest import REPO

MAIN_LOG = """\
[Wed Dec  2 14:09:41 2026]
Error in rule flow_shard:
    message: None
    jobid: 7
    input: results/index/train.parquet
    output: results/flow/train/shard-001.h5
    log: results/logs/flow/train/shard-001.log (check log file(s) for error details)
    wildcards: split=train, k=001
Shutting down, this might take some time.
Error in rule flow_shard:
    message: None
    jobid: 7
    output: results/flow/train/shard-001.h5
"""

JOB_LOG = """\
2026-12-02 14:09:40 INFO regiongraph.flow.stage: 12 videos
flow train/shard-001:  10%|#         | 1/10 [00:01<00:09,  1.00s/video]\rflow train/shard-001:  20%|##        | 2/10 [00:02<00:08,  1.00s/video]
Traceback (most recent call last):
  File "/x/scripts/flow.py", line 10, in <module>
    compute_flow_shard(
  File "/x/regiongraph/flow/stage.py", line 300, in compute_flow_shard
    raise ValueError(message)
ValueError: results/frames/train/3/17/00004.jpg: JPEG does not decode
"""


def test_failed_jobs_are_read_from_the_main_log_once_each():
    jobs = failed_jobs(MAIN_LOG)
    assert [job.rule for job in jobs] == ["flow_shard"]
    assert jobs[0].logs == ["results/logs/flow/train/shard-001.log"]
    assert jobs[0].fields["wildcards"] == "split=train, k=001"


def test_the_meaningful_tail_is_the_exception_without_progress_bars():
    assert meaningful_tail(JOB_LOG) == [
        "ValueError: results/frames/train/3/17/00004.jpg: JPEG does not decode"
    ]
    assert meaningful_tail("a\n\nb\nc  50%|#####     | 5/10 [00:01<00:01]\n", 5) == ["a", "b"]


def test_failed_jobs_report_quotes_each_jobs_log(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "results/logs/flow/train").mkdir(parents=True)
    (tmp_path / "results/logs/flow/train/shard-001.log").write_text(JOB_LOG)
    (tmp_path / "main.log").write_text(MAIN_LOG)
    report = failed_jobs_report([str(tmp_path / "main.log")])
    assert report.splitlines() == [
        "1 job failed:",
        "  rule flow_shard (results/flow/train/shard-001.h5)",
        "    log results/logs/flow/train/shard-001.log:",
        "      ValueError: results/frames/train/3/17/00004.jpg: JPEG does not decode",
    ]
    assert failed_jobs_report(None) == "" and failed_jobs_report(tmp_path / "none.log") == ""


def test_dropped_report_counts_by_stage_and_kind(tmp_path):
    rows = [
        ("1", "train", "unknown label 'Foo' (something-something-v1-train.csv:3)", "split"),
        ("2", "train", "unknown label 'Foo' (something-something-v1-train.csv:9)", "split"),
        ("3", "validation", "missing frame 00002.jpg in results/frames/x (1 missing)", "index"),
    ]
    table = pd.DataFrame(rows, columns=["video_id", "split", "reason", "stage"])
    table.to_csv(tmp_path / "dropped.csv", index=False)
    lines = dropped_report(tmp_path / "dropped.csv", tmp_path / "absent.csv").splitlines()
    assert lines[0].startswith("3 videos were left out") and str(tmp_path / "dropped.csv") in lines[0]
    assert lines[1].split() == ["2", "split", "train", "unknown", "label", "'Foo'"]
    assert lines[2].split() == ["1", "index", "validation", "missing", "frame"]
    pd.DataFrame(columns=table.columns).to_csv(tmp_path / "none.csv", index=False)
    assert dropped_report(tmp_path / "none.csv") == ""


def test_config_problems_name_key_value_and_what_is_allowed_and_fill_defaults():
    schema = load_schema(REPO / "config" / "schema.yaml")
    config = {"gcn": {"lr": -1, "models": ["joint", "graph"]}, "boxes": {"per_frame": "ten"}}
    problems = config_problems(config, schema)
    assert "boxes.per_frame: 'ten' is not of type integer" in problems
    assert "gcn.lr: -1 must be greater than 0" in problems
    assert any(p.startswith("gcn.models.1: 'graph' is not allowed (allowed: baseline") for p in problems)
    good = {"index": {"min_frames": 30}}
    assert config_problems(good, schema) == []
    assert good["index"] == {"min_frames": 30, "short_videos": "drop", "unknown_labels": "error"}
    assert good["gcn"]["epochs"] == 10  # a whole missing section gets its defaults too
