#!/usr/bin/env bash
# The GPU items of issue 11 in one run on the device machine (docs/memory.md "On a GPU",
# docs/model.md "The astrocyte scan on CUDA"): the CUDA path's tests, training tokens/s
# (astro-neuron bench train on CUDA, once per scan),
# the sequence-level tables. Expects flash-linear-attention's wheel in .whl/ (fla-core
# 0.6.0, carried; the machine has no registry) and $OUT for what comes back.
#   TABLE_BUDGET=300 bash scripts/device_check.sh
set -u
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD"
OUT=${OUT:-out/device}; mkdir -p "$OUT" out/device
t0=$(date +%s)
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
  --target /tmp/site .whl/*.whl && export PYTHONPATH="$PWD:/tmp/site"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
python3 -c "import torch, triton, numpy, fla; print('torch', torch.__version__, 'triton', \
triton.__version__, 'numpy', numpy.__version__, 'fla', fla.__version__)"
echo "== tests (CUDA path) $(( $(date +%s) - t0 )) s"
# alone on the GPU: the first calls compile and autotune the Triton kernels (98 s for the
# first shape on an H200; 13 table runs beside it left time for 4 of the 17 tests)
timeout 300 python3 -m pytest -p no:cacheprovider tests/core/test_core_cuda.py -rA \
  -o addopts="--import-mode=importlib" -o timeout=290 2>&1 | tail -40 | tee "$OUT/tests.txt"
echo "== speed $(( $(date +%s) - t0 )) s"
# training tokens/s, AM-SNet with each scan (the benchmark's other models use no scan)
for scan in fla torch; do
  ASTRO_NEURON_SCAN=$scan timeout 75 python3 -m astro_neuron bench train --device cuda \
    --d-models 128 512 --lengths 256 1024 4096 --threads 0 2>&1 | tail -20
done | tee "$OUT/speed.txt"
echo "== tables $(( $(date +%s) - t0 )) s"
timeout $(( ${TABLE_BUDGET:-300} + 40 )) python3 scripts/device_tables.py --out out/device \
  --budget "${TABLE_BUDGET:-300}" 2>&1 | grep -v "^\s*$" | tail -40 | tee "$OUT/tables.txt"
echo "== done $(( $(date +%s) - t0 )) s"
tar czf "$OUT/device_results.tar.gz" out/device 2>/dev/null
