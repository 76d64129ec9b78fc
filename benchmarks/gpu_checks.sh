#!/usr/bin/env bash
# The GPU checks of the speed issue in one go (about 12 minutes on an H200, where each worker
# process took ~16 s to start; SPEED_ARGS="--in-process" runs the model rows without a process
# start each, SPEED_ARGS="--batches 4" halves the grid):
#   1. the training and prediction code paths on CUDA, on the built-in synthetic data: bf16 and fp16
#      (loss scaler) autocast, torch.compile, cuDNN autotuning, channels-last; then predict;
#   2. benchmarks/speed.py --device cuda --compile (biounet vs MONAI BasicUNet vs plain PyTorch).
#
#   OUT=/tmp/biounet_gpu bash benchmarks/gpu_checks.sh
#
# Needs python3 with a CUDA build of torch and the project's runtime dependencies (pyproject.toml);
# MONAI for the MONAI peer (else that peer is skipped). Writes into $OUT: gpu.txt, paths.log,
# speed.log, speed_rows.jsonl, speed.json, speed.md (merge its "cuda" section into
# benchmarks/results/speed.json with `python benchmarks/speed_merge.py $OUT/speed.json`).
set -u
OUT=${OUT:-/tmp/biounet_gpu}
PY=${PYTHON:-python3}
mkdir -p "$OUT"
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
$PY -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name())" | tee -a "$OUT/gpu.txt"

W=$(mktemp -d)
(
  set -e
  $PY -c "from biounet.data.synthetic import write_synthetic_dataset as w; w('$W/data', 16, 4)"
  for opt in "--precision fp16" "--precision auto --compile"; do
    echo "== train $opt"
    TIMEFORMAT="   %R s"
    time $PY -m biounet train --data "$W/data" --out "$W/run" --epochs 2 --batch-size 4 $opt
    tail -n 3 "$W/run/metrics.csv"
    rm -rf "$W/run_last" && mv "$W/run" "$W/run_last"
  done
  echo "== predict on CUDA"
  $PY -m biounet predict --checkpoint "$W/run_last/best.pt" --out "$W/pred" "$W/data/images"
  ls "$W/pred" | head -3
) 2>&1 | tee "$OUT/paths.log"

timeout "${SPEED_TIMEOUT:-420}" $PY benchmarks/speed.py --device cuda --compile --timeout 150 ${SPEED_ARGS:-} \
  --results-dir "$OUT" --log "$OUT/speed_rows.jsonl" 2>&1 | tee "$OUT/speed.log"
rm -rf "$W"
