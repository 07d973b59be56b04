#!/usr/bin/env bash
# The GPU check: the benchmark suite and `run --all` at the quick preset on a CUDA device, then one table
# (device, each source phase's img/s, each strategy's ms per episode, peak memory, total wall time).
# Needs no network and no TensorFlow (the Keras rows are recorded as skipped without it); run it from the
# repository root, installed or not:
#
#     DATA=/path/to/cifar10 bash scripts/gpu_check.sh        # or: tox -e gpu
#
# Settings (environment): DATA (CIFAR-10 folder; else $HARNESS_DATA or the cache), DEVICE (cuda), PRESET
# (quick), PRECISION (fp32), DETERMINISTIC (yes), OUT (a results folder). fp32 and deterministic by default: on
# an H200, bf16 gave wrong accuracies and non-deterministic kernels failed reptile's independence check (README).
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
DEVICE=${DEVICE:-cuda}
PRESET=${PRESET:-quick}
PRECISION=${PRECISION:-fp32}
OUT=${OUT:-$(mktemp -d)}
if [ "${DETERMINISTIC:-yes}" = yes ]; then DET=--deterministic; else DET=--no-deterministic; fi
data_args=()
if [ -n "${DATA:-}" ]; then data_args=(--data-dir "$DATA"); fi
mkdir -p "$OUT"

HARNESS_BENCH_DEVICE=$DEVICE python -m pytest tests/benchmarks -q -p no:cacheprovider --benchmark-enable \
  --benchmark-json "$OUT/benchmarks.json" > "$OUT/benchmarks.log" 2>&1 || { tail -30 "$OUT/benchmarks.log"; exit 1; }

start=$(date +%s.%N)
status=0
python -m harness run --all --device "$DEVICE" --preset "$PRESET" --precision "$PRECISION" "$DET" \
  "${data_args[@]}" --cache-dir "$OUT/cache" --out "$OUT/run" --quiet > "$OUT/run.log" 2>&1 || status=$?
end=$(date +%s.%N)
if [ "$status" -gt 1 ]; then tail -30 "$OUT/run.log"; exit "$status"; fi

python scripts/gpu_report.py "$OUT/run" --benchmarks "$OUT/benchmarks.json" \
  --wall-seconds "$(python -c "print($end - $start)")"
exit "$status"
