"""Shared fixtures: a tiny synthetic dataset in the SSv1 download format."""

from __future__ import annotations

import copy
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


# The workflow on a tiny synthetic set: what every end-to-end test starts from (schema defaults
# fill the rest). Light TV-L1 and a 4-frame, 32 px, narrow I3D keep a whole run near a minute.
TINY_CONFIG = {
    "dataset": {"toy": {
        "videos": 24, "classes": 4, "min_frames": 6, "max_frames": 10,
        "min_width": 48, "max_width": 64, "height": 40, "part_bytes": 20000,
    }},
    "index": {"min_frames": 4},
    "shards": {"train": 1, "validation": 1, "test": 1},
    "flow": {"threads": 2, "tvl1": {"nscales": 2, "warps": 1, "inner_iterations": 5, "outer_iterations": 2}},
    "backbone": {
        "streams": ["rgb"], "num_frames": 4, "frame_stride": 2, "resize_short": 40,
        "crop_size": 32, "width_per_group": 4, "batch_size": 4, "workers": 0,
        "finetune": {"epochs": 0},
    },
}


def tiny_config(**sections: dict) -> dict:
    """A copy of TINY_CONFIG with some sections' keys overridden (one level deep)."""
    config = copy.deepcopy(TINY_CONFIG)
    for name, values in sections.items():
        config[name] = {**config.get(name, {}), **values}
    return config


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


@pytest.fixture(scope="session")
def tiny_ssv2_download(tmp_path_factory) -> tuple[Path, Path, Path]:
    """(zipped parts folder, labels zip, Something-Else boxes folder) of a tiny synthetic SSv2
    download, made once."""
    from regiongraph.dataset.toy import SSV2_LABELS_ZIP, make_toy_ssv2

    root = tmp_path_factory.mktemp("ssv2-download")
    make_toy_ssv2(root / "archives", root / "annotations", root / "something-else", TINY_TOY)
    return root / "archives", root / "annotations" / SSV2_LABELS_ZIP, root / "something-else"


def pytest_collection_modifyitems(items) -> None:
    """Every test of a ``*_workflow.py`` module starts Snakemake (about 10 s each): marked
    ``workflow``, so that ``make test-fast`` can leave them to ``make test``."""
    for item in items:
        if item.path.name.endswith("_workflow.py"):
            item.add_marker(pytest.mark.workflow)
