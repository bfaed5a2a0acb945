#!/usr/bin/env bash
# detectron2 from a source tarball, built once per machine: the wheel is cached outside the clone
# (keyed on the detectron2 commit and the torch and Python versions) and installed into .venv.
# Usage: .ci/detectron2.sh TARBALL [WHEEL_CACHE]. No tarball: nothing to do (the detectron2
# tests then skip, saying how to install it). A tarball whose build fails: this fails.
set -euo pipefail
tarball=${1:-}
wheels=${2:-$HOME/.cache/regiongraph/wheels}
if [ -z "$tarball" ] || [ ! -f "$tarball" ]; then
    echo "detectron2: no source tarball (${tarball:-none given}); the detectron2 tests will skip"
    exit 0
fi
commit=$(basename "$tarball" .tar.gz)
commit=${commit#detectron2-}
key=$(.venv/bin/python -c 'import sys, torch; print(f"torch{torch.__version__}-py{sys.version_info.major}.{sys.version_info.minor}")')
dir="$wheels/detectron2-$commit-$key"
if ! compgen -G "$dir/detectron2-*.whl" >/dev/null; then
    echo "detectron2: building $tarball into $dir (a few minutes, about 2.5 GB of memory)"
    rm -rf "$dir.partial"
    mkdir -p "$dir.partial"
    # FORCE_CUDA=0: a CPU build unless torch sees a GPU here
    FORCE_CUDA=0 MAX_JOBS=${MAX_JOBS:-2} .venv/bin/pip wheel --quiet --no-build-isolation --no-deps \
        -w "$dir.partial" "$tarball"
    mv "$dir.partial" "$dir"
fi
.venv/bin/pip install --quiet --no-build-isolation "$dir"/detectron2-*.whl
.venv/bin/python -c "import detectron2.config; print('detectron2', detectron2.__version__, 'from', '$dir')"
