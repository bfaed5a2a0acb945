#!/usr/bin/env bash
# Run by Snakemake (--use-conda) inside the environment it just created from detectron2.yaml, as
# a copy under .snakemake/conda/ and from the working folder, so no path here is relative: the
# workflow exports its own folder as REGIONGRAPH_SOURCE (rules/common.smk).
# detectron2 is built against this environment's torch, without build isolation (its setup.py
# imports torch), from DETECTRON2_SOURCE: a source tarball, a built wheel or a pip URL (default:
# its git repository). The build takes minutes and about 2.5 GB of memory.
set -euo pipefail
: "${REGIONGRAPH_SOURCE:?not set: create this environment with snakemake --use-conda, whose workflow sets it}"
python -m pip install --no-deps -e "$REGIONGRAPH_SOURCE"
python -m pip install --no-build-isolation \
    "${DETECTRON2_SOURCE:-git+https://github.com/facebookresearch/detectron2.git}"
python -c "import detectron2.config"
