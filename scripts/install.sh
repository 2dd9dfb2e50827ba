#!/usr/bin/env bash
# Creates .venv (Python 3.11) with everything astro-neuron needs, following
# ../shared/design/ENV.md. Idempotent: re-running on a complete venv is quick.
#
# Why a script and not `pip install -e .[dev]` alone: pip refuses lava-nc 0.10.0 on
# Python 3.11 (it declares <3.11) unless --ignore-requires-python is given, and
# spikingjelly 2.0.0 declares torchvision/torchaudio, which do not import beside the
# CPU torch. Both are installed with --no-deps; their runtime needs are listed in
# pyproject.toml.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${VENV:-.venv}"
PY_BOOT="${PYTHON:-python3}"
C=constraints.txt

if [ ! -x "$VENV/bin/python" ]; then
  "$PY_BOOT" -c 'import sys; assert sys.version_info[:2] == (3, 11), "astro-neuron needs Python 3.11, got " + sys.version' 
  "$PY_BOOT" -m venv "$VENV"
fi
PY="$VENV/bin/python"
"$PY" -c 'import sys; assert sys.version_info[:2] == (3, 11), "the venv must be Python 3.11, got " + sys.version'
PIP=("$PY" -m pip --disable-pip-version-check -q)

# 1. torch first: 2.13.0 resolves to the local CPU wheel on these machines.
"${PIP[@]}" install -c "$C" "torch==2.13.0"
# 2. the two packages whose metadata pip cannot satisfy here.
"${PIP[@]}" install -c "$C" --no-deps --ignore-requires-python "lava-nc==0.10.0" "spikingjelly==2.0.0"
# NEST 3.10.0 (the engine for large tripartite networks): its manylinux wheel declares
# cython, which it does not need to run; --no-deps keeps the install small.
"${PIP[@]}" install -c "$C" --no-deps "nest-simulator==3.10.0"
# 3. the project and every runtime/test dependency.
"${PIP[@]}" install -c "$C" -e ".[dev]"
# 4. a short check that the stack imports (Lava through the project's 3.11 hook).
"$PY" -m astro_neuron.apps.env_check
