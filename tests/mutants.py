"""Deliberately broken copies of the paper's facts: each must make a named test fail.

    .venv/bin/python tests/mutants.py            # every mutant
    .venv/bin/python tests/mutants.py roi_frame  # one

For each mutant the script rewrites one line of the package in place, runs the tests that
guard the fact (pytest -x), restores the file, and prints a table: a mutant the tests let
through ("SURVIVED") is a fact no test checks. The script exits non-zero when any survives.
Not collected by pytest (the file name does not start with ``test_``); run it by hand after
changing a guarded fact or its tests.
"""

from __future__ import annotations

import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Mutant:
    name: str
    fact: str
    path: str
    old: str
    new: str
    tests: tuple[str, ...]


MUTANTS = [
    Mutant(
        "roi_frame",
        "RoI features come from the feature frame of their box frame",
        "regiongraph/features/cache.py",
        "image = valid[:, 0] * t_feat + valid[:, 1] * t_feat // t_box",
        "image = valid[:, 0] * t_feat",
        ("tests/test_features.py",),
    ),
    Mutant(
        "flip",
        "training clips are never mirrored (direction labels)",
        "regiongraph/features/clips.py",
        "array = resize_and_crop(frames, geometry)",
        "array = resize_and_crop(frames, geometry)\n"
        "                if rng is not None and rng.random() < 0.5:\n"
        "                    array = array[:, :, ::-1].copy()",
        ("tests/test_features.py",),
    ),
    Mutant(
        "joint_mean",
        "the joint head sums its branches",
        "regiongraph/models/gcn.py",
        "z = sum(branch(x, nodes) for branch in self.branches)",
        "z = sum(branch(x, nodes) for branch in self.branches) / len(self.branches)",
        ("tests/test_gcn.py",),
    ),
    Mutant(
        "similarity_columns",
        "the similarity graph is a softmax over j (each row sums to 1)",
        "regiongraph/models/gcn.py",
        "graph = torch.softmax(logits, dim=-1)",
        "graph = torch.softmax(logits, dim=-2)",
        ("tests/test_gcn.py",),
    ),
    Mutant(
        "similarity_bias",
        "phi(x) = w x and phi'(x) = w' x have no bias",
        "regiongraph/models/gcn.py",
        "self.theta = nn.Linear(channels, channels, bias=False)",
        "self.theta = nn.Linear(channels, channels, bias=True)",
        ("tests/test_gcn.py",),
    ),
    Mutant(
        "iou_unnormalised",
        "the spatial-temporal graphs are row-normalised",
        "regiongraph/models/gcn.py",
        "return row_normalise(front), row_normalise(back)",
        "return front, back",
        ("tests/test_gcn.py",),
    ),
    Mutant(
        "iou_swapped",
        "the forward graph links t to t + 1, the backward graph t + 1 to t",
        "regiongraph/models/gcn.py",
        "return row_normalise(front), row_normalise(back)",
        "return row_normalise(back), row_normalise(front)",
        ("tests/test_gcn.py",),
    ),
    Mutant(
        "caffe2_bn_stats",
        "Caffe2's _rm / _riv blobs are BatchNorm's running mean / variance",
        "regiongraph/models/caffe2.py",
        'BN_SUFFIXES = {"s": "weight", "b": "bias", "rm": "running_mean", "riv": "running_var"}',
        'BN_SUFFIXES = {"s": "weight", "b": "bias", "rm": "running_var", "riv": "running_mean"}',
        ("tests/test_caffe2.py",),
    ),
    Mutant(
        "caffe2_theta_phi",
        "nonlocal_conv*_theta is the non-local query, _phi the key",
        "regiongraph/models/caffe2.py",
        'return (\n            f"{prefix}.{part}.{CONV_SUFFIXES[conv]}"',
        'part = {"theta": "phi", "phi": "theta"}.get(part, part)\n'
        '        return (\n            f"{prefix}.{part}.{CONV_SUFFIXES[conv]}"',
        ("tests/test_caffe2.py",),
    ),
    Mutant(
        "caffe2_branch2a_2c",
        "res*_branch2a is the bottleneck's first conv, branch2c its last",
        "regiongraph/models/caffe2.py",
        'prefix = f"res{stage}.blocks.{block}.{branch}"',
        'branch = {"branch2a_": "branch2c"}.get(branch + "_", branch)\n'
        '        prefix = f"res{stage}.blocks.{block}.{branch}"',
        ("tests/test_caffe2.py",),
    ),
    Mutant(
        "views_not_averaged",
        "a video's evaluation views are averaged into one prediction",
        "regiongraph/train/loop.py",
        "    if len(first) == len(video_ids):\n        return list(video_ids), labels, log_probs",
        "    if True:\n        return list(video_ids), labels, log_probs",
        ("tests/test_train.py",),
    ),
    Mutant(
        "three_crops_centre",
        "three crops cover both ends and the centre of the long side",
        "regiongraph/features/transforms.py",
        "    if crops == 1:\n        return centre",
        "    if True:\n        return centre",
        ("tests/test_features.py",),
    ),
    Mutant(
        "heads_share_rng",
        "heads trained in one pass each keep their own RNG stream (equal to training alone)",
        "regiongraph/train/loop.py",
        "with own_rng(self.state.rng), autocast:",
        "with autocast:",
        ("tests/test_train.py",),
    ),
    Mutant(
        "uniform_centre",
        "uniform sampling takes each segment's centre for evaluation",
        "regiongraph/dataset/sampling.py",
        "positions = (np.arange(num_frames) + offsets) * (n_frames / num_frames)",
        "positions = np.arange(num_frames) * (n_frames / num_frames)",
        ("tests/test_sampling.py",),
    ),
    Mutant(
        "device_crop_offset",
        "clips decoded on the device are cropped where the host path crops them",
        "regiongraph/features/transforms.py",
        "crop = resized[:, :, g.y0 : g.y0 + g.crop, g.x0 : g.x0 + g.crop]",
        "crop = resized[:, :, g.y0 : g.y0 + g.crop, : g.crop]",
        ("tests/test_jpeg_device.py",),
    ),
    Mutant(
        "device_frame_order",
        "a looped clip repeats its decoded frames in the sampled order",
        "regiongraph/features/clips.py",
        'out[b] = distinct[:, batch["jpeg_order"][b].to(distinct.device)]',
        'out[b] = distinct[:, torch.arange(distinct.shape[1]).repeat(frames)[:frames]]',
        ("tests/test_jpeg_device.py",),
    ),
    Mutant(
        "ssv2_alphabetical",
        "SSv2's class index is labels.json's value, not an alphabetical order",
        "regiongraph/dataset/ssv2.py",
        "    return [by_index[i] for i in range(len(by_index))]",
        "    return sorted(by_index.values())",
        ("tests/test_ssv2_labels.py",),
    ),
    Mutant(
        "ssv2_brackets",
        "SSv2's template is looked up with its [something] brackets removed",
        "regiongraph/dataset/ssv2.py",
        'return template.replace("[", "").replace("]", "")',
        "return template",
        ("tests/test_ssv2_labels.py",),
    ),
    Mutant(
        "ssv2_zip_member",
        "a zipped part must hold only its own piece",
        "regiongraph/dataset/archive.py",
        "if len(files) != 1 or posixpath.basename(names[0]) != expected:",
        "if not files:",
        ("tests/test_ssv2_extract.py",),
    ),
    Mutant(
        "ssv2_every_frame",
        "every decoded frame is kept, numbered from 00001.jpg",
        "regiongraph/dataset/video.py",
        "            for frame in container.decode(stream):\n",
        "            for i, frame in enumerate(container.decode(stream)):\n"
        "                if i % 2:\n"
        "                    continue\n",
        ("tests/test_ssv2_decode.py",),
    ),
    Mutant(
        "ssv2_truncation",
        "a webm cut short of its container's duration is dropped",
        "regiongraph/dataset/video.py",
        "end - last_end > 2 * step",
        "end - last_end > 20 * step",
        ("tests/test_ssv2_decode.py",),
    ),
]


def run(mutant: Mutant) -> tuple[str, float]:
    path = REPO / mutant.path
    original = path.read_text()
    if original.count(mutant.old) != 1:
        return f"NOT APPLIED ({mutant.old[:40]!r} found {original.count(mutant.old)} times)", 0.0
    start = time.monotonic()
    try:
        path.write_text(original.replace(mutant.old, mutant.new))
        proc = subprocess.run(
            [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", "-m", "not slow",
             *mutant.tests],
            cwd=REPO, capture_output=True, text=True,
        )
    finally:
        path.write_text(original)
    elapsed = time.monotonic() - start
    if proc.returncode == 0:
        return "SURVIVED", elapsed
    failed = [line.split("::", 1)[-1].split(" ")[0] for line in proc.stdout.splitlines()
              if line.startswith("FAILED")]
    return f"caught by {failed[0] if failed else '(error: ' + proc.stdout.splitlines()[-1] + ')'}", elapsed


def main(names: list[str]) -> int:
    chosen = [m for m in MUTANTS if not names or m.name in names]
    print("| mutant | fact | result | seconds |\n|---|---|---|---:|")
    survived = 0
    for mutant in chosen:
        result, seconds = run(mutant)
        survived += not result.startswith("caught")
        print(f"| `{mutant.name}` | {mutant.fact} | {result} | {seconds:.0f} |", flush=True)
    return 1 if survived else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
