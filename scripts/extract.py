"""Extract the split archive (SSv1's frames, or SSv2's videos) and write its manifest."""

from regiongraph.dataset.archive import extract_archive
from regiongraph.io import write_json
from regiongraph.jobs import start_job

start_job(snakemake.log[0])
manifest = extract_archive(
    snakemake.input.parts,
    snakemake.params.raw,
    stem=snakemake.params.stem,
    max_member_bytes=snakemake.params.max_member_bytes,
)
write_json(snakemake.output.manifest, manifest)
