"""Generate the synthetic dataset in the Something-Something v1 or v2 download format."""

import os

from regiongraph.dataset.toy import ToySettings, make_toy_dataset, make_toy_ssv2
from regiongraph.jobs import start_job

start_job(snakemake.log[0])
settings = dict(snakemake.params.settings)
settings["split_fractions"] = tuple(settings["split_fractions"])
settings = ToySettings(**settings, seed=snakemake.params.seed)
output = snakemake.output
if snakemake.params.dataset == "ssv2":
    make_toy_ssv2(
        archives=output.parts,
        annotations=os.path.dirname(output.labels),
        boxes=os.path.dirname(output.boxes[0]),
        settings=settings,
    )
else:
    make_toy_dataset(
        archives=output.parts, annotations=os.path.dirname(output.labels), settings=settings
    )
