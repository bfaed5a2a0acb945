"""Extract the split archive into the raw frames folder and write its manifest."""

from regiongraph.dataset.archive import extract_archive
from regiongraph.io import write_json
from regiongraph.jobs import start_job

start_job(snakemake.log[0])
manifest = extract_archive(
    snakemake.input.parts,
    snakemake.params.raw,
    max_member_bytes=snakemake.params.max_member_bytes,
)
write_json(snakemake.output.manifest, manifest)
