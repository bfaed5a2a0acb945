"""The synthetic dataset: SSv1's exact download format, determinism, and class signal."""

from __future__ import annotations

import json

import numpy as np

from regiongraph.dataset.toy import CLASS_NAMES, ToySettings, make_toy_dataset, render_video
from tests.conftest import TINY_TOY


def test_download_format(tiny_download):
    archives, annotations = tiny_download
    parts = sorted(p.name for p in archives.iterdir())
    assert parts[0] == "20bn-something-something-v1-00"
    assert parts == [f"20bn-something-something-v1-{i:02d}" for i in range(len(parts))]
    assert len(parts) > 1, "the archive must be split into several parts"
    assert (archives / parts[0]).read_bytes()[:2] == b"\x1f\x8b"
    labels = (annotations / "something-something-v1-labels.csv").read_text().splitlines()
    assert labels == CLASS_NAMES[: TINY_TOY.classes]
    train = (annotations / "something-something-v1-train.csv").read_text().splitlines()
    assert all(line.count(";") == 1 and line.split(";")[1] in labels for line in train)
    test = (annotations / "something-something-v1-test.csv").read_text().splitlines()
    assert all(line.isdigit() for line in test)
    boxes = json.loads((annotations / "something-else-boxes.json").read_text())
    vid = train[0].split(";")[0]
    first = boxes[vid][0]
    assert first["name"] == f"{vid}/0001.jpg"
    assert set(first["labels"][0]["box2d"]) == {"x1", "y1", "x2", "y2"}
    assert first["nr_instances"] == len(first["labels"])


def test_some_default_label_has_a_comma():
    assert any("," in label for label in CLASS_NAMES[: ToySettings().classes])


def test_deterministic_bytes(tmp_path):
    settings = ToySettings(**{**TINY_TOY.__dict__, "videos": 12, "classes": 3})
    make_toy_dataset(tmp_path / "a", tmp_path / "an", settings)
    make_toy_dataset(tmp_path / "b", tmp_path / "bn", settings)
    for part in sorted((tmp_path / "a").iterdir()):
        assert part.read_bytes() == (tmp_path / "b" / part.name).read_bytes()
    other = ToySettings(**{**settings.__dict__, "seed": settings.seed + 1})
    make_toy_dataset(tmp_path / "c", tmp_path / "cn", other)
    assert (tmp_path / "a" / "20bn-something-something-v1-00").read_bytes() != (
        tmp_path / "c" / "20bn-something-something-v1-00"
    ).read_bytes()


def _centre_track(boxes):
    return np.array([[(b["box"][0] + b["box"][2]) / 2, (b["box"][1] + b["box"][3]) / 2] for b in boxes if b])


def test_motion_defines_the_class():
    """Left-to-right and right-to-left differ only in the direction of the object's motion."""
    for label, sign in ((0, 1), (1, -1)):
        frames, boxes = render_video(label, 30, 100, 160, np.random.default_rng(7))
        assert len(frames) == 30 and frames[0].shape == (100, 160, 3)
        track = np.array([[(f[0]["box"][0] + f[0]["box"][2]) / 2] for f in boxes])
        assert sign * (track[-1, 0] - track[0, 0]) > 40
    frames, boxes = render_video(3, 30, 100, 160, np.random.default_rng(8))  # down
    ys = [(f[0]["box"][1] + f[0]["box"][3]) / 2 for f in boxes]
    assert ys[-1] - ys[0] > 20
    frames, boxes = render_video(4, 40, 100, 160, np.random.default_rng(9))  # falls off
    assert len(boxes[-1]) == 0 and len(boxes[0]) == 1


def test_colour_does_not_identify_the_class():
    """Mean colour of frames varies more within a class than it would if it encoded the class."""
    means = {
        label: [render_video(label, 8, 100, 120, np.random.default_rng(s))[0][0].mean((0, 1)) for s in range(6)]
        for label in (0, 1)
    }
    within = np.mean([np.std(np.array(v), axis=0).mean() for v in means.values()])
    between = np.abs(np.mean(means[0], axis=0) - np.mean(means[1], axis=0)).mean()
    assert within > between


def test_ssv2_download_format(tiny_ssv2_download):
    import zipfile

    zips, labels_zip, boxes = tiny_ssv2_download
    names = sorted(p.name for p in zips.iterdir())
    assert names == [f"20bn-something-something-v2-{i:02d}.zip" for i in range(len(names))]
    assert len(names) > 1
    for name in names:
        with zipfile.ZipFile(zips / name) as archive:
            assert archive.namelist() == [name[: -len(".zip")]]  # one piece, named as the zip
    with zipfile.ZipFile(zips / names[0]) as archive:
        assert archive.read(archive.namelist()[0])[:2] == b"\x1f\x8b"
    assert labels_zip.name == "20bn-something-something-download-package-labels.zip"
    with zipfile.ZipFile(labels_zip) as archive:
        assert sorted(archive.namelist()) == [f"labels/{n}.json" for n in ("labels", "test", "train", "validation")]
        class_index = json.loads(archive.read("labels/labels.json"))
        train = json.loads(archive.read("labels/train.json"))
        test = json.loads(archive.read("labels/test.json"))
    assert list(class_index) == sorted(class_index)  # keys alphabetical, as in the real file
    assert [class_index[c] for c in CLASS_NAMES[: TINY_TOY.classes]] == ["0", "1", "2", "3"]
    assert sorted(class_index, key=lambda c: int(class_index[c])) != sorted(class_index)
    assert all(set(e) == {"id", "label", "template", "placeholders"} for e in train)
    assert all("[something]" in e["template"] for e in train)
    assert all(set(e) == {"id"} and e["id"].isdigit() for e in test)
    parts = sorted(p.name for p in boxes.iterdir())
    assert parts == ["bounding_box_smthsmth_part1.json", "bounding_box_smthsmth_part2.json"]
    first = json.loads((boxes / parts[0]).read_text())
    video_id, frames = next(iter(first.items()))
    assert frames[0]["name"] == f"{video_id}/0001.jpg" and "gt_placeholders" in frames[0]
