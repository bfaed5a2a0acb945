"""The benchmarks' bookkeeping: what ``--record`` writes and what ``bench/scale.py`` then uses,
and the fine-tuning and JPEG benchmarks run through on the CPU."""

from __future__ import annotations

import subprocess
import sys

import pytest
from conftest import REPO

sys.path.insert(0, str(REPO / "bench"))
import measured  # noqa: E402  (bench/measured.py)
import scale  # noqa: E402  (bench/scale.py)


@pytest.fixture
def table(tmp_path, monkeypatch):
    path = tmp_path / "measured.csv"
    monkeypatch.setattr(measured, "MEASURED", path)
    return path


def test_a_recorded_gpu_figure_replaces_the_anchor_and_a_cpu_one_does_not(table):
    assert scale.gpu_figure("features_clips_per_s", None) == (293.0, "anchor (docs/architecture.md), not measured")
    measured.record("features_clips_per_s", 12.5, "clips/s", "cpu")
    assert scale.gpu_figure("features_clips_per_s", None)[0] == 293.0  # a CPU figure is not a GPU's
    measured.record("features_clips_per_s", 251.25, "clips/s", "NVIDIA H200")
    measured.record("features_clips_per_s", 240.0, "clips/s", "NVIDIA H200")  # replaces its row
    value, source = scale.gpu_figure("features_clips_per_s", None)
    assert value == 240.0 and source.startswith("measured on NVIDIA H200")
    rows = measured.read_measured(table)
    assert sorted(rows) == [("features_clips_per_s", "NVIDIA H200"), ("features_clips_per_s", "cpu")]
    assert rows[("features_clips_per_s", "NVIDIA H200")]["value"] == "240"
    assert scale.gpu_figure("features_clips_per_s", 100.0) == (100.0, "given (--features-clips-per-s)")
    # the flow stage's figure is recorded under the stage's own name
    measured.record("flow_stage_pairs_per_s", 4000.0, "pairs/s", "NVIDIA H200")
    assert scale.gpu_figure("flow_pairs_per_s", None)[0] == 4000.0


@pytest.mark.slow
@pytest.mark.parametrize(
    "command",
    [
        ["finetune.py", "--clips", "4", "--batches", "2", "--jpeg-decode", "device"],
        ["gpu_jpeg_check.py"],
    ],
    ids=["finetune", "gpu_jpeg_check"],
)
def test_benchmark_prints_its_table(command):
    proc = subprocess.run(
        [sys.executable, *command], cwd=REPO / "bench", capture_output=True, text=True,
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"}, timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = [line for line in proc.stdout.splitlines() if line.startswith("| ") and "---" not in line]
    assert len(rows) >= 2, proc.stdout
    if command[0] == "finetune.py":  # the device-decoding row, with a positive ratio
        assert [r.split("|")[3].strip() for r in rows[1:]] == ["device"]
        assert all(float(r.split("|")[-2]) > 0 for r in rows[1:])
    else:  # the CPU's torchvision and OpenCV decode alike; the clips differ by a level at most
        assert rows[1].split("|")[2].strip() == "0" and int(rows[3].split("|")[2]) <= 2
