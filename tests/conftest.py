"""Shared fixtures: a tiny synthetic dataset in the SSv1 download format."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from regiongraph.dataset.toy import ToySettings, make_toy_dataset

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def snakemake_cmd(*args: str) -> list[str]:
    """The snakemake of the interpreter running the tests (the project's venv)."""
    return [str(BIN / "snakemake"), *args]


TINY_TOY = ToySettings(
    videos=24, classes=4, min_frames=6, max_frames=10, min_width=48, max_width=64,
    height=40, part_bytes=20_000, seed=3,
)


@pytest.fixture(scope="session")
def tiny_download(tmp_path_factory) -> tuple[Path, Path]:
    """(archives folder, annotations folder) of a tiny synthetic download, made once."""
    root = tmp_path_factory.mktemp("download")
    make_toy_dataset(root / "archives", root / "annotations", TINY_TOY)
    return root / "archives", root / "annotations"


@pytest.fixture
def env_no_color(monkeypatch):
    monkeypatch.setenv("NO_COLOR", "1")
    return os.environ
