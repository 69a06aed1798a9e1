#!/usr/bin/env bash
# `make gpu-check`, on the GPU machine (after `make gpu-prepare` here, with .gpu carried along): the wheels of
# .gpu/wheels, this project's among them, go into .gpu/site (no venv: the machine's own python3 with its torch runs
# everything), and bench/gpu_check.py runs on the installed project. Results: $OUT/gpu.json when $OUT is
# set, else bench/results/gpu.json. Extra arguments go to gpu_check.py (e.g. --device cpu --tiny to try it here).
set -euo pipefail
cd "$(dirname "$0")/.."
G="$PWD/.gpu"
[ -d "$G/wheels" ] && [ -d "$G/data" ] || { echo "gpu-check: no .gpu/wheels or .gpu/data: run make gpu-prepare first" >&2; exit 2; }
PY="${PYTHON:-python3}"
"$PY" -m pip install -q --no-index --no-deps --disable-pip-version-check --target "$G/site" --upgrade "$G"/wheels/*.whl
export PYTHONPATH="$G/site" HIPNET_COMMIT="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
"$PY" -m bench.gpu_check --data "$G/data" --out "${OUT:-bench/results}/gpu.json" "$@"
