#!/usr/bin/env bash
# Run by Snakemake (--use-conda) inside the environment it just created from cv.yaml, as a copy
# under .snakemake/conda/ and from the working folder, so no path here is relative: the workflow
# exports its own folder as REGIONGRAPH_SOURCE (rules/common.smk).
set -euo pipefail
: "${REGIONGRAPH_SOURCE:?not set: create this environment with snakemake --use-conda, whose workflow sets it}"
python -m pip install --no-deps -e "$REGIONGRAPH_SOURCE"
