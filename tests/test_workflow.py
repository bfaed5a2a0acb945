"""The workflow itself: config validation, stage targets, forced reruns, DAG size at SSv1 scale."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from tests.conftest import REPO, snakemake_cmd, tiny_config

# the tiny toy set only: every stage keeps its demo settings and shard counts
TINY = {key: tiny_config()[key] for key in ("dataset", "index")}


def run_snakemake(workdir: Path, config: dict, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    workdir.mkdir(parents=True, exist_ok=True)
    configfile = workdir / "config.yaml"
    configfile.write_text(yaml.safe_dump(config))
    cmd = snakemake_cmd(
        "-s", str(REPO / "Snakefile"), "--directory", str(workdir), "--configfile", str(configfile), *args
    )
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "NO_COLOR": "1"})
    if check and proc.returncode:
        raise AssertionError(f"snakemake failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


def job_counts(output: str) -> dict[str, int]:
    """The 'Job stats' table Snakemake prints, as {rule: count}."""
    block = output.split("Job stats:")[-1]
    counts = {}
    for line in block.splitlines()[3:]:
        match = re.match(r"^(\S+)\s+(\d+)$", line.strip())
        if not match:
            break
        counts[match[1]] = int(match[2])
    counts.pop("total", None)
    return counts


@pytest.mark.parametrize(
    ("config", "names"),
    [
        ({"index": {"min_frame": 3}}, ["min_frame"]),
        ({"index": {"min_frames": "many"}}, ["min_frames", "many"]),
        ({"shard": {"train": 2}}, ["shard"]),
        ({"flow": {"backend": "cuda-magic"}}, ["backend", "cuda-magic"]),
    ],
)
def test_bad_config_fails_before_any_job(tmp_path, config, names):
    proc = run_snakemake(tmp_path, config, "--cores", "1", "index", check=False)
    assert proc.returncode != 0
    message = proc.stdout + proc.stderr
    for name in names:
        assert name in message
    assert not (tmp_path / "results").exists() and not (tmp_path / "resources").exists()


@pytest.mark.slow
def test_index_target_then_forcerun_split_index(tmp_path):
    proc = run_snakemake(tmp_path, TINY, "--cores", "2", "index")
    assert job_counts(proc.stderr + proc.stdout) == {"toy_dataset": 1, "extract": 1, "split": 1, "index": 1}
    results = tmp_path / "results"
    for split in ("train", "validation", "test"):
        assert len(pd.read_parquet(results / "index" / f"{split}.parquet")) > 0
    manifest = results / "raw" / "manifest.json"
    before = manifest.stat().st_mtime_ns
    proc = run_snakemake(tmp_path, TINY, "--cores", "2", "--forcerun", "split", "index", "--", "index")
    assert job_counts(proc.stderr + proc.stdout) == {"split": 1, "index": 1}
    assert manifest.stat().st_mtime_ns == before
    proc = run_snakemake(tmp_path, TINY, "--cores", "2", "-n", "index")
    assert "Nothing to be done" in proc.stdout + proc.stderr


def _touch(path: Path, mtime: float, content: bytes = b"") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        path.write_bytes(content)
    os.utime(path, (mtime, mtime))


def test_dry_run_at_ssv1_scale_is_fast(tmp_path):
    """108,499 videos, 174 labels, 256/32/32 shards: the DAG is built without touching a frame."""
    sizes = {"train": 86017, "validation": 11522, "test": 10960}
    shards = {"train": 256, "validation": 32, "test": 32}
    rng = np.random.default_rng(0)
    t0 = time.time() - 1000
    archives, annotations = tmp_path / "download" / "archives", tmp_path / "download" / "annotations"
    _touch(archives / "20bn-something-something-v1-00", t0)
    for name in ("labels", "train", "validation", "test"):
        _touch(annotations / f"something-something-v1-{name}.csv", t0)
    os.utime(archives, (t0, t0))  # a folder input: its own mtime counts
    results = tmp_path / "results"
    _touch(results / "raw" / "manifest.json", t0 + 10, b"{}")
    for name in ("split/videos.parquet", "split/listed.parquet", "split/dropped.csv", "split/labels.csv"):
        _touch(results / name, t0 + 20)
    (results / "frames").mkdir()
    os.utime(results / "frames", (t0 + 20, t0 + 20))
    start = 1
    for split, n in sizes.items():
        ids = np.arange(start, start + n).astype(str)
        start += n
        table = pd.DataFrame({
            "video_id": ids, "split": split, "label": "", "label_index": rng.integers(0, 174, n),
            "n_frames": rng.integers(32, 70, n), "height": 100, "width": 176,
            "frame_dir": [f"results/frames/{split}/0/{i}" for i in ids], "shard": rng.integers(0, shards[split], n),
        })
        (results / "index").mkdir(exist_ok=True)
        table.to_parquet(results / "index" / f"{split}.parquet")
        os.utime(results / "index" / f"{split}.parquet", (t0 + 30, t0 + 30))
    for name in ("index-dropped.csv", "labels.csv"):
        _touch(results / "index" / name, t0 + 30)
    detector = tmp_path / "download" / "fasterrcnn.pth"
    _touch(detector, t0)
    config = {
        "dataset": {"source": "archives", "archives": str(archives), "annotations": str(annotations)},
        "shards": shards,
        "boxes": {"backend": "torchvision", "weights": str(detector)},
    }
    began = time.time()
    proc = run_snakemake(tmp_path, config, "-n", "--cores", "8", "--rerun-triggers", "mtime")
    elapsed = time.time() - began
    counts = job_counts(proc.stdout + proc.stderr)
    assert "extract" not in counts and "index" not in counts  # up to date: nothing upstream reruns
    n_shards = sum(shards.values())
    assert counts["flow_shard"] == n_shards and counts["boxes_shard"] == n_shards
    assert counts["features_shard"] == 2 * n_shards  # rgb and flow streams
    assert elapsed < 20, f"dry run took {elapsed:.1f} s"


def _user_download(tiny_download, root: Path) -> tuple[Path, Path]:
    """A copy of the tiny download in a folder of the user's, as a real download would be."""
    archives, annotations = tiny_download
    shutil.copytree(archives, root / "archives")
    shutil.copytree(annotations, root / "annotations")
    return root / "archives", root / "annotations"


def _snapshot(folder: Path) -> dict[str, tuple[bytes, int]]:
    return {str(p.relative_to(folder)): (p.read_bytes(), p.stat().st_mtime_ns) for p in folder.rglob("*") if p.is_file()}


def test_toy_source_with_paths_to_a_real_download_stops_before_any_job(tiny_download, tmp_path):
    """The default source is toy: pointing the dataset paths at a download without setting
    source: archives must never let the synthetic set overwrite it."""
    archives, annotations = _user_download(tiny_download, tmp_path / "data")
    before = _snapshot(tmp_path / "data")
    config = {"dataset": {"archives": str(archives), "annotations": str(annotations)}}
    proc = run_snakemake(tmp_path / "work", config, "--cores", "1", check=False)
    message = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "dataset.source: archives" in message, message[-2000:]
    assert _snapshot(tmp_path / "data") == before
    assert not (tmp_path / "work" / "results").exists()
    assert not (tmp_path / "work" / "resources").exists()


@pytest.mark.parametrize("source", ["toy", "archives"])
def test_no_rule_declares_a_users_input_as_its_output(tiny_download, tmp_path, source):
    from tests.workflow_rules import load_rules

    config = {"dataset": {"source": source}}
    if source == "archives":
        archives, annotations = _user_download(tiny_download, tmp_path / "data")
        config["dataset"].update(archives=str(archives), annotations=str(annotations),
                                 box_annotations=str(annotations / "something-else-boxes.json"))
    configfile = tmp_path / "config.yaml"
    configfile.write_text(yaml.safe_dump(config))
    rules = load_rules(tmp_path, [configfile])
    outputs = [(name, out) for name, rule in rules.items() for out in rule.outputs]
    assert outputs
    inputs = [tmp_path / "data"] if source == "archives" else []
    for name, out in outputs:
        path = (tmp_path / out).resolve()
        for folder in inputs:
            assert not path.is_relative_to(folder.resolve()), f"rule {name} writes {out}"
        if name == "toy_dataset":
            assert path.is_relative_to((tmp_path / "resources" / "toy").resolve()), out
        else:
            assert path.is_relative_to((tmp_path / "results").resolve()), (name, out)


def test_config_errors_fit_in_a_few_lines_naming_key_and_allowed_values(tmp_path):
    proc = run_snakemake(tmp_path, {"index": {"min_frame": 3}, "foo": 1}, "-n", check=False)
    message = proc.stdout + proc.stderr
    assert proc.returncode != 0 and len(message.splitlines()) <= 8, message
    assert "config: index.min_frame: unknown key; did you mean min_frames?" in message
    assert "allowed: min_frames, short_videos, unknown_labels" in message
    assert "config: foo: unknown key" in message
    proc = run_snakemake(tmp_path, {"flow": {"backend": "cuda-magic"}}, "-n", check=False)
    assert "config: flow.backend: 'cuda-magic' is not allowed (allowed: opencv, torch)" in proc.stderr + proc.stdout


def _archives_config(archives: Path, annotations: Path, **index) -> dict:
    return {
        **TINY,
        "dataset": {"source": "archives", "archives": str(archives), "annotations": str(annotations),
                    "box_annotations": str(annotations / "something-else-boxes.json")},
        "index": {**TINY["index"], **index},
    }


def _unknown_label(annotations: Path) -> str:
    train = annotations / "something-something-v1-train.csv"
    lines = train.read_text().splitlines()
    video_id = lines[0].split(";")[0]
    lines[0] = f"{video_id};Juggling something"
    train.write_text("\n".join(lines) + "\n")
    return video_id


@pytest.mark.slow
def test_a_failed_job_ends_the_run_with_its_rule_file_and_error_on_the_console(tiny_download, tmp_path):
    archives, annotations = _user_download(tiny_download, tmp_path / "data")
    _unknown_label(annotations)
    proc = run_snakemake(
        tmp_path / "work", _archives_config(archives, annotations), "--cores", "1", "split",
        "--logger", "regiongraph", check=False,
    )
    console = proc.stdout + proc.stderr
    assert proc.returncode != 0
    # the plugin's live notice, as the job fails
    assert "regiongraph: rule split failed; log results/logs/split.log: " in console
    assert "AnnotationError: 1 video carries a label" in console.split("regiongraph: rule split failed")[1].splitlines()[0]
    report = console[console.index("1 job failed:"):]
    assert "rule split (results/frames and 4 more)" in report and "log results/logs/split.log:" in report
    assert "AnnotationError: 1 video carries a label that is not in" in report
    assert "'Juggling something': 1 video" in report and "index.unknown_labels: drop" in report
    assert "Traceback" not in report


@pytest.mark.slow
def test_unknown_labels_dropped_are_reported_on_the_console_at_the_end(tiny_download, tmp_path):
    archives, annotations = _user_download(tiny_download, tmp_path / "data")
    video_id = _unknown_label(annotations)
    proc = run_snakemake(
        tmp_path / "work", _archives_config(archives, annotations, unknown_labels="drop"),
        "--cores", "1", "index",
    )
    console = proc.stdout + proc.stderr
    assert "1 videos were left out" in console or "1 video was left out" in console, console[-2000:]
    assert "split    train      unknown label 'Juggling something'" in console
    dropped = pd.read_csv(tmp_path / "work" / "results" / "index" / "index-dropped.csv", dtype=str)
    assert dropped.set_index("video_id").loc[video_id, "stage"] == "split"


def test_make_dag_without_graphviz_leaves_the_committed_picture(tmp_path):
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "dot").write_text("#!/bin/sh\necho 'dot: command not found' >&2\nexit 127\n")
    (fake / "dot").chmod(0o755)
    picture = REPO / "docs" / "rulegraph.png"
    before = picture.read_bytes()
    venv = Path(sys.executable).parents[1]
    proc = subprocess.run(
        ["make", "-C", str(REPO), "-o", f"{venv}/.installed", "dag", f"VENV={venv}"],
        capture_output=True, text=True, env={**os.environ, "PATH": f"{fake}:{os.environ['PATH']}"},
    )
    assert proc.returncode != 0 and "dot" in proc.stderr
    assert picture.read_bytes() == before and len(before) > 1000


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (None, "missing.yaml: config file not found"),
        ("index:\n  min_frames: [3\n", "bad.yaml:3:1: not valid YAML: expected ',' or ']'"),
        ("index:\n\tmin_frames: 3\n", "bad.yaml:2:1: not valid YAML: found character '\\t'"),
    ],
)
def test_a_missing_or_broken_configfile_is_one_line_naming_file_and_line(tmp_path, content, expected):
    name = "missing.yaml" if content is None else "bad.yaml"
    if content is not None:
        (tmp_path / name).write_text(content)
    proc = subprocess.run(
        snakemake_cmd("-s", str(REPO / "Snakefile"), "--configfile", name, "-n"),
        cwd=tmp_path, capture_output=True, text=True, env={**os.environ, "NO_COLOR": "1"},
    )
    message = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "Traceback" not in message and 'File "' not in message, message
    assert any(line.startswith(expected) for line in message.splitlines()), message
    assert len(message.splitlines()) <= 2


HEAVY = ("numpy", "pandas", "h5py", "torch", "torchvision", "cv2", "tqdm", "PIL", "matplotlib", "pyarrow")


def test_the_workflow_loads_only_light_modules_of_the_package():
    """The Snakefile runs in Snakemake's own environment (with --use-conda too), which need not
    have the pipeline's heavy dependencies: what it imports from regiongraph must not pull them."""
    code = (
        "import re, sys\n"
        "from pathlib import Path\n"
        f"sys.path.insert(0, {str(REPO)!r})\n"
        "before = set(sys.modules)\n"
        "text = ''.join(p.read_text() for p in [Path('Snakefile'), *Path('rules').glob('*.smk')])\n"
        "modules = sorted(set(re.findall(r'^from (regiongraph[.\\w]*) import', text, re.M)))\n"
        "assert modules, 'no regiongraph import found'\n"
        "for name in modules: __import__(name)\n"
        "print(' '.join(modules)); print(' '.join(sorted(set(sys.modules) - before)))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    modules, loaded = proc.stdout.splitlines()
    assert "regiongraph.config" in modules.split()
    heavy = sorted({name.split(".")[0] for name in loaded.split()} & set(HEAVY))
    assert not heavy, f"the workflow's imports ({modules}) load {heavy}"
