"""Generate the synthetic dataset in the Something-Something v1 download format."""

import os

from regiongraph.dataset.toy import ToySettings, make_toy_dataset
from regiongraph.jobs import start_job

start_job(snakemake.log[0])
settings = dict(snakemake.params.settings)
settings["split_fractions"] = tuple(settings["split_fractions"])
make_toy_dataset(
    archives=snakemake.output.parts,
    annotations=os.path.dirname(snakemake.output.labels),
    settings=ToySettings(**settings, seed=snakemake.params.seed),
)
