#!/usr/bin/env bash
# Every GPU measurement of the stages, in one run on a lent GPU machine (no Snakemake needed;
# nothing is installed). Each benchmark has its own time limit, so one failure costs only its
# share; each writes its figure into bench/measured.csv (--record), which bench/scale.py
# reads. Tables go to stdout and, with the measured.csv, to $OUT when it is set.
#
#   PYTHONPATH=. bash bench/gpu_check.sh            # about 8 minutes on one H100/H200
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
OUT="${OUT:-build/gpu_check}"
mkdir -p "$OUT"
PY="${PYTHON:-python3}"

step() {  # step <seconds> <name> <command...>
    local limit=$1 name=$2
    shift 2
    echo
    echo "=== $name (limit ${limit}s) ==="
    local start=$SECONDS
    (cd bench && timeout "$limit" "$@") 2>&1 | grep -v -E '(it/s|s/it|clip/s|batch/s)\]?$' | tee "$OUT/$name.txt"
    local rc=${PIPESTATUS[0]}
    echo "--- $name: rc $rc in $((SECONDS - start)) s"
    echo "| $name | $rc | $((SECONDS - start)) |" >> "$OUT/summary.md"
}

printf '| check | rc | seconds |\n|---|---:|---:|\n' > "$OUT/summary.md"
step 60 environment "$PY" -c '
import importlib, platform, sys
print("python", sys.version.split()[0], platform.machine())
for name in ("torch", "torchvision", "triton", "h5py", "pandas", "pyarrow", "cv2", "yaml", "tqdm"):
    try:
        module = importlib.import_module(name)
        print(f"{name:12s}", getattr(module, "__version__", "?"))
    except Exception as error:
        print(f"{name:12s} MISSING ({type(error).__name__}: {error})")
import torch
print("cuda", torch.cuda.is_available(), torch.cuda.get_device_name() if torch.cuda.is_available() else "-")
'
step 60 jpeg "$PY" gpu_jpeg_check.py
step 80 flow_stage "$PY" flow_stage.py --videos 200 --batch-size 2048 --record
step 120 features "$PY" features.py --gpu --clips 256 --batches 16 32 --workers 8 --record
step 90 finetune "$PY" finetune.py --gpu --clips 128 --batches 8 --workers 8 --record
step 100 boxes "$PY" boxes.py --no-cpu --gpu-frames 512 --record
step 60 gcn "$PY" gcn.py --device cuda --videos 1024 --batch-size 64 --workers 4 --repeats 1 --record
cp bench/measured.csv "$OUT/measured.csv"
echo
echo "=== summary ==="
cat "$OUT/summary.md"
echo
cat bench/measured.csv
