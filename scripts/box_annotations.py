"""Rule box_annotations: Something-Else's part files cut once into one small file per shard
and part (regiongraph.detect.annotations.shard_box_annotations)."""

import os

from regiongraph.dataset.index import read_index
from regiongraph.detect.annotations import shard_box_annotations
from regiongraph.jobs import start_job

log = start_job(snakemake.log[0])
owners = {
    video_id: (split, int(shard))
    for split in ("train", "validation", "test")
    for video_id, shard in read_index(snakemake.input[split])[["video_id", "shard"]].itertuples(
        index=False
    )
}
counts = shard_box_annotations(
    snakemake.input.parts,
    owners,
    dict(snakemake.params.shards),
    os.path.dirname(snakemake.output.classes),  # the fragments lie beside the class list
)
log.info("box annotations: %s", counts)
