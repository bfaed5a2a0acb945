"""The workflow on SSv2 in its download format: the synthetic set through every stage to the
evaluation, a user's download with a broken video, and the config checks of dataset.name ssv2."""

from __future__ import annotations

import gzip
import io
import json
import shutil
import tarfile
import zipfile
from pathlib import Path

import pandas as pd
import pytest

from tests.conftest import tiny_config
from tests.test_workflow import job_counts, run_snakemake

STEM = "20bn-something-something-v2"
SSV2_TINY = tiny_config(
    dataset={"name": "ssv2"},
    gcn={"models": ["joint"], "streams": ["rgb"], "epochs": 2, "batch_size": 4},
)


@pytest.mark.slow
def test_the_synthetic_ssv2_download_runs_to_the_evaluation(tmp_path):
    proc = run_snakemake(tmp_path, SSV2_TINY, "--cores", "2")
    counts = job_counts(proc.stdout + proc.stderr)
    assert counts["toy_dataset"] == counts["extract"] == counts["decode"] == counts["split"] == 1
    assert counts["evaluate_model"] == 1 and counts["train_model"] == 1  # joint, rgb only: small
    toy = tmp_path / "resources" / "toy" / "ssv2"
    parts = sorted(p.name for p in (toy / "archives").iterdir() if not p.name.startswith("."))
    assert parts[0] == f"{STEM}-00.zip" and all(p.endswith(".zip") for p in parts)
    results = tmp_path / "results"
    assert sorted(p.name for p in results.iterdir()) == ["ssv2"]  # never beside an SSv1 run's
    out = results / "ssv2"
    with zipfile.ZipFile(toy / "annotations" / "20bn-something-something-download-package-labels.zip") as z:
        class_index = json.loads(z.read("labels/labels.json"))
        train_entries = json.loads(z.read("labels/train.json"))
    labels = pd.read_csv(out / "index" / "labels.csv")
    assert {row.label: row.label_index for row in labels.itertuples()} == {
        text: int(i) for text, i in class_index.items()
    }
    train = pd.read_parquet(out / "index" / "train.parquet").set_index("video_id")
    entry = train_entries[0]
    assert list(train.loc[entry["id"], "placeholders"]) == entry["placeholders"]
    # every frame of the video, at its own rate (the toy videos have 6..10 frames)
    assert train.n_frames.between(6, 10).all()
    metrics = json.loads((out / "gcn" / "joint" / "metrics.json").read_text())
    listed = pd.read_parquet(out / "split" / "listed.parquet")
    assert metrics["n_videos"] == (listed.split == "validation").sum() and metrics["n_from_prior"] == 0
    assert 0.0 <= metrics["top1"] <= 1.0 and metrics["paper"]["data"] == "demo data"
    predictions = (out / "gcn" / "joint" / "test_predictions.csv").read_text().splitlines()
    assert len(predictions) == (listed.split == "test").sum()


def _rebuild_with_broken_video(zips: Path, out: Path) -> str:
    """The download again, one video's bytes replaced by garbage and another's cut short."""
    pieces = []
    for path in sorted(zips.glob("*.zip")):
        with zipfile.ZipFile(path) as archive:
            pieces.append(archive.read(archive.namelist()[0]))
    members = []
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(b"".join(pieces))), mode="r:") as tar:
        for member in tar:
            data = tar.extractfile(member).read() if member.isfile() else None
            members.append((member, data))
    videos = [m for m, d in members if d is not None]
    broken, cut = videos[0].name, videos[1].name
    buffer = io.BytesIO()
    with gzip.GzipFile(fileobj=buffer, mode="wb", mtime=0) as gz, tarfile.open(fileobj=gz, mode="w|") as tar:
        for member, data in members:
            if member.name == broken:
                data = b"\x1a\x45\xdf\xa3" + bytes(500)
            elif member.name == cut:
                data = b""
            if data is not None:
                member.size = len(data)
            tar.addfile(member, io.BytesIO(data) if data is not None else None)
    data, size = buffer.getvalue(), 30_000
    out.mkdir(parents=True)
    for k in range(0, len(data), size):
        name = f"{STEM}-{k // size:02d}"
        with zipfile.ZipFile(out / f"{name}.zip", "w") as archive:
            archive.writestr(name, data[k : k + size])
    return Path(broken).stem, Path(cut).stem


@pytest.mark.slow
def test_a_users_download_with_broken_videos_drops_them_with_their_reason(tiny_ssv2_download, tmp_path):
    zips, labels, boxes = tiny_ssv2_download
    data = tmp_path / "data"
    broken, empty = _rebuild_with_broken_video(zips, data / "archives")
    shutil.copy(labels, data / labels.name)
    shutil.copytree(boxes, data / "something-else")
    config = {
        **SSV2_TINY,
        "dataset": {
            "name": "ssv2",
            "source": "archives",
            "archives": str(data / "archives"),
            "annotations": str(data / labels.name),
            "box_annotations": str(data / "something-else"),
        },
    }
    run_snakemake(tmp_path / "work", config, "--cores", "2", "boxes")
    out = tmp_path / "work" / "results" / "ssv2"
    dropped = pd.read_csv(out / "index" / "index-dropped.csv", dtype=str).set_index("video_id")
    assert dropped.loc[broken, "stage"] == "decode" and "undecodable video" in dropped.loc[broken, "reason"]
    assert dropped.loc[empty, "stage"] == "decode" and "zero-byte video file" in dropped.loc[empty, "reason"]
    kept = pd.concat(pd.read_parquet(out / "index" / f"{s}.parquet") for s in ("train", "validation", "test"))
    assert len(kept) == 24 - 2
    assert json.loads((out / "raw" / "decode.json").read_text())["dropped"] == 2


@pytest.mark.parametrize(
    ("dataset", "extra", "message"),
    [
        ({"splits": "compositional"}, {}, "dataset.splits: 'compositional' applies to ssv2 only"),
        ({"name": "ssv2"}, {"frames": {"short_side": 128}}, "frames.short_side (128) resizes the frames, but boxes.backend is annotations"),
        ({"name": "ssv2", "splits": "compositional"}, {}, "dataset.splits is compositional, but no compositional/ folder"),
        ({"name": "ssv2", "splits": "/nonexistent/folder"}, {}, "dataset.splits: /nonexistent/folder is neither"),
        ({"name": "ssv3"}, {}, "dataset.name: 'ssv3' is not allowed (allowed: ssv1, ssv2)"),
    ],
)
def test_ssv2_config_mistakes_stop_before_any_job(tmp_path, dataset, extra, message):
    proc = run_snakemake(tmp_path, {"dataset": dataset, **extra}, "-n", check=False)
    assert proc.returncode != 0 and message in proc.stdout + proc.stderr, (proc.stdout + proc.stderr)[-1500:]
    assert not (tmp_path / "results").exists() and not (tmp_path / "resources").exists()


def test_a_box_folder_without_something_else_parts_is_a_config_error(tmp_path):
    (tmp_path / "boxes").mkdir()
    proc = run_snakemake(
        tmp_path, {"dataset": {"name": "ssv2", "box_annotations": str(tmp_path / "boxes")}}, "-n", check=False
    )
    assert proc.returncode != 0
    assert "holds no bounding_box_smthsmth_part*.json" in proc.stdout + proc.stderr


@pytest.mark.slow  # a DAG of ~4,500 jobs: under a minute, too slow for make test-fast
def test_config_ssv2_yaml_plans_the_whole_run_on_a_download(tiny_ssv2_download, tmp_path):
    """config/ssv2.yaml with its paths set to a download in the real format: valid, and the
    DAG has every stage, under results/ssv2/."""
    import yaml

    from tests.conftest import REPO

    zips, labels, boxes = tiny_ssv2_download
    config = yaml.safe_load((REPO / "config" / "ssv2.yaml").read_text())
    config["dataset"].update(archives=str(zips), annotations=str(labels), box_annotations=str(boxes))
    config["backbone"]["weights"] = None  # no download in a test
    proc = run_snakemake(tmp_path, config, "-n", "--cores", "16")
    counts = job_counts(proc.stdout + proc.stderr)
    assert counts["extract"] == counts["decode"] == counts["split"] == counts["index"] == 1
    assert counts["boxes_shard"] == counts["flow_shard"] == 512 + 64 + 64
    assert counts["features_shard"] == 2 * 640 and counts["evaluate_model"] == 4
    assert "results/ssv2/index/train.parquet" in proc.stdout + proc.stderr


@pytest.mark.parametrize("source", ["toy", "archives"])
def test_ssv2_rules_write_only_under_results_ssv2_or_the_toy_folder(tiny_ssv2_download, tmp_path, source):
    import yaml

    from tests.workflow_rules import load_rules

    zips, labels, boxes = tiny_ssv2_download
    config = {"dataset": {"name": "ssv2", "source": source}}
    if source == "archives":
        data = tmp_path / "data"
        shutil.copytree(zips, data / "archives")
        shutil.copy(labels, data / labels.name)
        shutil.copytree(boxes, data / "something-else")
        config["dataset"].update(
            archives=str(data / "archives"), annotations=str(data / labels.name),
            box_annotations=str(data / "something-else"),
        )
    configfile = tmp_path / "config.yaml"
    configfile.write_text(yaml.safe_dump(config))
    rules = load_rules(tmp_path, [configfile])
    assert {"decode", "box_annotations", "split", "extract"} <= set(rules)
    for name, rule in rules.items():
        for out in rule.outputs:
            path = (tmp_path / out).resolve()
            if name == "toy_dataset":
                assert path.is_relative_to((tmp_path / "resources" / "toy" / "ssv2").resolve()), out
            else:
                assert path.is_relative_to((tmp_path / "results" / "ssv2").resolve()), (name, out)


def test_splits_compositional_is_found_in_the_something_else_folder(tiny_ssv2_download, tmp_path):
    zips, labels, boxes = tiny_ssv2_download
    data = tmp_path / "data"
    shutil.copytree(boxes, data / "something-else")
    splits = data / "something-else" / "dataset_splits" / "compositional"
    splits.mkdir(parents=True)
    for name in ("train", "validation"):
        (splits / f"{name}.json").write_text("[]")
    dataset = {
        "name": "ssv2", "source": "archives", "archives": str(zips), "annotations": str(labels),
        "box_annotations": str(data / "something-else"), "splits": "compositional",
    }
    proc = run_snakemake(tmp_path / "work", {"dataset": dataset}, "-n", "split")
    split_job = (proc.stdout + proc.stderr).split("rule split:")[1].split("output:")[0]
    assert str(splits) in split_job
    dataset["splits"] = str(splits)  # the folder itself
    proc = run_snakemake(tmp_path / "work", {"dataset": dataset}, "-n", "split")
    assert str(splits) in (proc.stdout + proc.stderr).split("rule split:")[1].split("output:")[0]
