#!/usr/bin/env bash
# `make gpu-check`, on the GPU machine (after `make gpu-prepare` here, with .gpu carried along): the wheels of
# .gpu/wheels go into .gpu/site (no venv: the machine's own python3 with its torch runs everything), the project goes
# on the path as `hipnet` without installing it, and bench/gpu_check.py runs. Results: $OUT/gpu.json when $OUT is
# set, else bench/results/gpu.json. Extra arguments go to gpu_check.py (e.g. --device cpu --tiny to try it here).
set -euo pipefail
cd "$(dirname "$0")/.."
G="$PWD/.gpu"
[ -d "$G/wheels" ] && [ -d "$G/data" ] || { echo "gpu-check: no .gpu/wheels or .gpu/data: run make gpu-prepare first" >&2; exit 2; }
PY="${PYTHON:-python3}"
"$PY" -m pip install -q --no-index --no-deps --disable-pip-version-check --target "$G/site" --upgrade "$G"/wheels/*.whl
mkdir -p "$G/pkg/hipnet"
for d in pipeline model cli viz data_manifests; do ln -sfn "$PWD/$d" "$G/pkg/hipnet/$d"; done
export PYTHONPATH="$G/pkg:$G/site" HIPNET_COMMIT="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
"$PY" bench/gpu_check.py --data "$G/data" --out "${OUT:-bench/results}/gpu.json" "$@"
