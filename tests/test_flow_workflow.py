"""The flow rule in the workflow: the target on the synthetic set, resources per backend."""

from __future__ import annotations

import pandas as pd
import pytest

from regiongraph.io import open_shard
from tests.test_workflow import TINY, run_snakemake

FAST = {"nscales": 2, "warps": 1, "inner_iterations": 5, "outer_iterations": 2}


@pytest.mark.slow
def test_flow_target_writes_every_shard(tmp_path):
    config = {**TINY, "flow": {"tvl1": FAST}, "shards": {"train": 2, "validation": 1, "test": 1}}
    run_snakemake(tmp_path, config, "--cores", "2", "flow")
    results = tmp_path / "results"
    expect = {"backend": "opencv", "bound": 20.0, "nscales": 2, "warps": 1, "tau": 0.25}
    for split, shards in (("train", 2), ("validation", 1), ("test", 1)):
        index = pd.read_parquet(results / "index" / f"{split}.parquet")
        seen = []
        for k in range(shards):
            with open_shard(results / "flow" / split / f"shard-{k:03d}.h5", "flow", expect) as shard:
                for video_id in shard:
                    row = index[index.video_id == video_id].iloc[0]
                    assert row.shard == k
                    flow = shard[video_id]["flow"]
                    assert flow.shape == (row.n_frames - 1, row.height, row.width, 2)
                    assert flow[:].std() > 0  # the toy set's objects move
                    seen.append(video_id)
        assert sorted(seen) == sorted(index.video_id)
        assert "pairs/s" in (results / "logs" / "flow" / split / "shard-000.log").read_text()


def test_flow_rule_asks_for_a_gpu_only_for_the_torch_backend(tmp_path):
    def resources(config):
        proc = run_snakemake(tmp_path, {**TINY, **config}, "--cores", "4", "-n", "flow")
        jobs = proc.stdout.split("rule flow_shard:")[1:]
        assert len(jobs) == 4  # train 2 shards, validation 1, test 1 (the default shards)
        return jobs[0]

    assert "gpu=0" in resources({})
    assert "gpu=1" in resources({"flow": {"backend": "torch"}})
    assert "gpu=0" in resources({"flow": {"backend": "torch"}, "device": "cpu"})
    assert "threads: 3" in resources({"flow": {"threads": 3}})
    assert not (tmp_path / "results" / "flow").exists()  # a dry run writes nothing
