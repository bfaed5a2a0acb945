"""SSv2's labels: template -> index from labels.json's values, placeholders kept, every naming,
bad entries reported as for SSv1, Something-Else's compositional split files."""

from __future__ import annotations

import json
import shutil
import zipfile
from pathlib import Path

import pandas as pd
import pytest

from regiongraph.dataset.annotations import AnnotationError
from regiongraph.dataset.archive import extract_archive
from regiongraph.dataset.index import build_index
from regiongraph.dataset.ssv2 import split_ssv2, template_class
from regiongraph.dataset.toy import CLASS_NAMES
from regiongraph.dataset.video import DecodeSettings, decode_videos

STEM = "20bn-something-something-v2"


@pytest.fixture(scope="module")
def decoded(tiny_ssv2_download, tmp_path_factory) -> Path:
    """The tiny SSv2 download extracted and decoded: its frame folders."""
    zips, _, _ = tiny_ssv2_download
    root = tmp_path_factory.mktemp("ssv2-decoded")
    extract_archive(zips, root / "videos", stem=STEM)
    decode_videos(root / "videos" / STEM, root / "frames", DecodeSettings(None, 90))
    return root / "frames"


def _labels(path: Path) -> dict[str, object]:
    with zipfile.ZipFile(path) as archive:
        return {
            Path(name).stem: json.loads(archive.read(name))
            for name in archive.namelist()
            if name.endswith(".json")
        }


def _write_zip(path: Path, files: dict[str, object]) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in files.items():
            archive.writestr(name, json.dumps(data))
    return path


def test_template_brackets_are_removed():
    assert template_class("Putting [something] onto [something]") == "Putting something onto something"
    assert template_class("[Something] falling like a rock") == "Something falling like a rock"
    assert (
        template_class("Tipping [something] with [something in it] over, so [something in it] falls out")
        == "Tipping something with something in it over, so something in it falls out"
    )


def test_index_comes_from_labels_json_values_not_alphabetical(tiny_ssv2_download, decoded, tmp_path):
    _, labels_zip, _ = tiny_ssv2_download
    files = _labels(labels_zip)
    # shuffle the values: the index must follow them, not the keys' order
    names = sorted(files["labels"])
    order = [3, 0, 2, 1]
    files["labels"] = {name: str(order[i]) for i, name in enumerate(names)}
    labels_zip = _write_zip(
        tmp_path / labels_zip.name, {f"labels/{name}.json": data for name, data in files.items()}
    )
    result = split_ssv2(labels_zip, decoded, tmp_path / "frames")
    assert result.labels == [names[order.index(i)] for i in range(4)]
    assert result.labels != sorted(result.labels)
    entry = files["train"][0]
    row = result.videos.set_index("video_id").loc[entry["id"]]
    assert "[" in entry["template"] and row.label == template_class(entry["template"])
    assert row.label_index == int(files["labels"][row.label])
    assert list(row.placeholders) == entry["placeholders"]
    link = tmp_path / "frames" / "train" / str(row.label_index) / entry["id"]
    assert link.is_symlink() and (link / "00001.jpg").is_file()
    test_ids = {e["id"] for e in files["test"]}
    test = result.videos[result.videos.split == "test"]
    assert set(test.video_id) == test_ids and (test.label_index == -1).all() and (test.label == "").all()
    assert result.dropped.empty
    # the placeholders reach the index
    index = build_index(result.videos, {"train": 1, "validation": 1, "test": 1}, 1, "drop")
    train = index.splits["train"].set_index("video_id")
    assert list(train.loc[entry["id"], "placeholders"]) == entry["placeholders"]


@pytest.mark.parametrize("naming", ["labels/{}.json", "something-something-v2-{}.json"])
def test_a_folder_of_the_four_jsons_in_either_naming(tiny_ssv2_download, decoded, tmp_path, naming):
    _, labels_zip, _ = tiny_ssv2_download
    folder = tmp_path / "labels-folder"
    for name, data in _labels(labels_zip).items():
        path = folder / naming.format(name)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(data))
    from_folder = split_ssv2(folder, decoded, tmp_path / "a")
    from_zip = split_ssv2(labels_zip, decoded, tmp_path / "b")
    assert from_folder.labels == from_zip.labels == CLASS_NAMES[:4]
    columns = ["video_id", "split", "label", "label_index"]
    assert from_folder.videos[columns].equals(from_zip.videos[columns])


def test_an_older_zip_naming_is_read(tiny_ssv2_download, decoded, tmp_path):
    _, labels_zip, _ = tiny_ssv2_download
    files = _labels(labels_zip)
    old = _write_zip(
        tmp_path / "old.zip", {f"something-something-v2-{name}.json": data for name, data in files.items()}
    )
    assert split_ssv2(old, decoded, tmp_path / "frames").labels == CLASS_NAMES[:4]


def test_a_labels_zip_without_labels_json_is_an_error_naming_it(tiny_ssv2_download, decoded, tmp_path):
    _, labels_zip, _ = tiny_ssv2_download
    files = _labels(labels_zip)
    del files["labels"]
    broken = _write_zip(tmp_path / "labels.zip", {f"labels/{n}.json": d for n, d in files.items()})
    with pytest.raises(AnnotationError, match=f"{broken}: holds no labels/labels.json .*labels/train.json"):
        split_ssv2(broken, decoded, tmp_path / "frames")
    assert not (tmp_path / "frames").exists()
    with pytest.raises(AnnotationError, match="not a readable zip"):
        split_ssv2(_truncated(labels_zip, tmp_path), decoded, tmp_path / "frames")


def _truncated(path: Path, tmp_path: Path) -> Path:
    out = tmp_path / "truncated.zip"
    out.write_bytes(path.read_bytes()[:100])
    return out


def _with_bad_entries(labels_zip: Path, tmp_path: Path) -> tuple[Path, dict]:
    files = _labels(labels_zip)
    train, validation = files["train"], files["validation"]
    unknown = dict(train[0], template="Juggling [something] with one hand")
    duplicate = dict(train[1])
    missing = dict(train[2], id="999999")
    files["train"] = [unknown, *train[1:]]
    files["validation"] = [*validation, duplicate, missing]
    path = _write_zip(tmp_path / "bad.zip", {f"labels/{n}.json": d for n, d in files.items()})
    return path, {"unknown": unknown["id"], "duplicate": duplicate["id"], "missing": "999999"}


def test_a_template_not_in_labels_json_stops_the_split(tiny_ssv2_download, decoded, tmp_path):
    labels_zip, _ = _with_bad_entries(tiny_ssv2_download[1], tmp_path)
    with pytest.raises(AnnotationError) as error:
        split_ssv2(labels_zip, decoded, tmp_path / "frames")
    message = str(error.value)
    assert "1 video carries a label that is not in" in message and "labels/labels.json" in message
    assert "'Juggling something with one hand': 1 video (first at" in message
    assert "labels/train.json entry 0" in message and "index.unknown_labels: drop" in message
    assert not (tmp_path / "frames").exists()


def test_unknown_templates_duplicates_and_missing_videos_are_reported(tiny_ssv2_download, decoded, tmp_path):
    labels_zip, ids = _with_bad_entries(tiny_ssv2_download[1], tmp_path)
    result = split_ssv2(labels_zip, decoded, tmp_path / "frames", unknown_labels="drop")
    reasons = result.dropped.set_index(["video_id", "split"])["reason"]
    assert "unknown label 'Juggling something with one hand'" in reasons[(ids["unknown"], "train")]
    assert "duplicate id" in reasons[(ids["duplicate"], "validation")]
    assert "first listed in train" in reasons[(ids["duplicate"], "validation")]
    assert "no frame folder" in reasons[(ids["missing"], "validation")]
    assert (result.dropped.stage == "split").all()
    kept = set(result.videos.video_id)
    assert ids["unknown"] not in kept and ids["duplicate"] in kept and len(kept) == 23


def test_a_video_the_decode_dropped_is_reported_with_its_reason(tiny_ssv2_download, decoded, tmp_path):
    _, labels_zip, _ = tiny_ssv2_download
    frames = tmp_path / "decoded"
    shutil.copytree(decoded, frames, symlinks=True)
    victim = _labels(labels_zip)["validation"][0]["id"]
    shutil.rmtree(frames / victim)
    drops = pd.DataFrame({"video_id": [victim], "reason": ["truncated video x.webm: ..."]})
    result = split_ssv2(labels_zip, frames, tmp_path / "frames", decode_dropped=drops)
    row = result.dropped.set_index("video_id").loc[victim]
    assert (row.split, row.stage, row.reason) == ("validation", "decode", "truncated video x.webm: ...")
    # still listed: the evaluation scores it with the class prior
    assert victim in set(result.listed.video_id)


def test_a_folder_of_something_else_split_files_replaces_the_official_split(tiny_ssv2_download, decoded, tmp_path):
    _, labels_zip, _ = tiny_ssv2_download
    files = _labels(labels_zip)
    everything = files["train"] + files["validation"]
    folder = tmp_path / "compositional"
    folder.mkdir()
    # Something-Else's own split: other videos in train and validation, its own labels.json
    # (values as numbers) with another order
    (folder / "train.json").write_text(json.dumps(everything[:8]))
    (folder / "validation.json").write_text(json.dumps(everything[8:]))
    own = {name: i for i, name in enumerate(reversed(CLASS_NAMES[:4]))}
    (folder / "labels.json").write_text(json.dumps(own))
    result = split_ssv2(labels_zip, decoded, tmp_path / "frames", splits_folder=folder)
    assert result.labels == list(reversed(CLASS_NAMES[:4]))
    by_split = result.videos.groupby("split").video_id.apply(set)
    assert by_split["train"] == {e["id"] for e in everything[:8]}
    assert by_split["validation"] == {e["id"] for e in everything[8:]}
    assert by_split["test"] == {e["id"] for e in files["test"]}  # the official test ids
    row = result.videos.set_index("video_id").loc[everything[9]["id"]]
    assert row.label_index == own[template_class(everything[9]["template"])]
    (folder / "validation.json").unlink()
    with pytest.raises(AnnotationError, match="compositional: dataset.splits folder has no validation.json"):
        split_ssv2(labels_zip, decoded, tmp_path / "frames2", splits_folder=folder)


@pytest.mark.parametrize(
    ("labels", "message"),
    [
        ({"A": "0", "B": "0"}, "index 0 is given to both 'A' and 'B'"),
        ({"A": "0", "B": "2"}, "class indices must be 0..1"),
        ({"A": "x"}, "has index 'x', not a number"),
        ([], "expected an object"),
    ],
)
def test_a_broken_labels_json_names_the_file(tiny_ssv2_download, decoded, tmp_path, labels, message):
    files = _labels(tiny_ssv2_download[1])
    files["labels"] = labels
    path = _write_zip(tmp_path / "l.zip", {f"labels/{n}.json": d for n, d in files.items()})
    with pytest.raises(AnnotationError, match=message) as error:
        split_ssv2(path, decoded, tmp_path / "frames")
    assert "labels/labels.json" in str(error.value)


def test_an_id_that_is_not_a_number_is_refused(tiny_ssv2_download, decoded, tmp_path):
    files = _labels(tiny_ssv2_download[1])
    files["test"].append({"id": "../../etc"})
    path = _write_zip(tmp_path / "l.zip", {f"labels/{n}.json": d for n, d in files.items()})
    with pytest.raises(AnnotationError, match=r"labels/test.json entry \d+: video id '../../etc' is not a number"):
        split_ssv2(path, decoded, tmp_path / "frames")


def test_only_an_ssv1_run_is_compared_with_the_papers_ssv1_figure():
    from regiongraph.train.metrics import paper_comparison

    assert paper_comparison("joint", "i3d_r50", "ssv1", 0.5)["gap_to_paper"] == pytest.approx(0.067)
    for data in ("ssv2", "demo data"):
        paper = paper_comparison("joint", "i3d_r50", data, 0.5)
        assert paper["gap_to_paper"] is None and paper["data"] == data and paper["paper_top1"] == 0.433
