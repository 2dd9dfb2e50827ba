#!/usr/bin/env bash
# The GPU items of issue 11 in one run on the device machine (docs/memory.md "On a GPU",
# docs/model.md "The astrocyte scan on CUDA"): training tokens/s with the torch scan on a
# quiet GPU; then the CUDA path's tests (pytest-xdist, so that Triton's compilation runs
# on several cores) beside the sequence-level tables (scripts/device_tables.py); then
# training tokens/s with flash-linear-attention's kernels, their Triton cache warmed by
# the tests. Expects flash-linear-attention's wheel in .whl/ (fla-core 0.6.0, carried;
# the machine has no registry) and $OUT for what comes back.
#   TABLE_BUDGET=350 bash scripts/device_check.sh      # as run in the twelfth session
# TABLE_JOBS picks scripts/device_tables.py's jobs (default 0-7, that call's). The
# twelfth session's lesson: beside 8 training runs no CUDA test finished in 260 s, so
# PHASE=tests runs the speed and the CUDA tests with the machine to themselves (about
# 7 minutes, one call) and PHASE=tables the tables alone (a call each); PHASE=both (the
# default) is the twelfth session's order, tests and tables at once. The next lease:
#   PHASE=tests bash scripts/device_check.sh
#   PHASE=tables TABLE_BUDGET=420 TABLE_JOBS=18,19,20,21,14,15,16,17 bash scripts/device_check.sh
set -u
PHASE=${PHASE:-both}
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD"
OUT=${OUT:-out/device}; mkdir -p "$OUT" out/device
t0=$(date +%s)
stamp() { echo "== $1 $(( $(date +%s) - t0 )) s"; }
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
  --target /tmp/site .whl/*.whl && export PYTHONPATH="$PWD:/tmp/site"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
python3 -c "import torch, triton, numpy, fla; print('torch', torch.__version__, 'triton', \
triton.__version__, 'numpy', numpy.__version__, 'fla', fla.__version__)"
SPEED="--device cuda --d-models 128 512 --lengths 256 1024 4096 --threads 0 --tokens 65536 \
--repeats 5"
tests() {
  timeout 260 python3 -m pytest -p no:cacheprovider tests/core/test_core_cuda.py -rA -n 6 \
    -o addopts="--import-mode=importlib" -o timeout=250 > "$OUT/tests.txt" 2>&1
  grep -E "passed|failed|PASSED|FAILED|ERROR|error" "$OUT/tests.txt" | tail -30
  stamp "tests done"
}
tables() {
  nice -n 5 timeout $(( ${TABLE_BUDGET:-380} + 45 )) python3 scripts/device_tables.py \
    --out out/device --budget "${TABLE_BUDGET:-380}" --workers 8 \
    --jobs "${TABLE_JOBS:-0,1,2,3,4,5,6,7}" > "$OUT/tables.txt" 2>&1
  grep -v "^\s*$" "$OUT/tables.txt" | tail -14
  cp out/device/summary.json "$OUT/" 2>/dev/null
}
if [ "$PHASE" != tables ]; then
  stamp "speed, torch scan"
  ASTRO_NEURON_SCAN=torch timeout 80 python3 -m astro_neuron bench train $SPEED 2>&1 \
    | tee "$OUT/speed_torch.txt" | tail -12
fi
case "$PHASE" in
  tests) stamp "tests (alone)"; tests ;;
  tables) stamp "tables"; tables ;;
  *) stamp "tables (background) and tests"; tables & pid=$!; tests; wait $pid ;;
esac
if [ "$PHASE" != tables ]; then
  stamp "speed, flash-linear-attention"
  ASTRO_NEURON_SCAN=fla timeout 75 python3 -m astro_neuron bench train $SPEED 2>&1 \
    | tee "$OUT/speed_fla.txt" | tail -12
fi
stamp done
tar czf "$OUT/device_results.tar.gz" out/device 2>/dev/null
