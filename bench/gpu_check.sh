#!/usr/bin/env bash
# `make gpu-check`, on the GPU machine (after `make gpu-prepare` here, with .gpu carried along): installs the wheels of
# .gpu/wheels into a venv over the system's packages (torch included), puts the project on the path as `hipnet`
# without installing it, and runs bench/gpu_check.py. Results: $OUT/gpu.json when $OUT is set, else bench/results/.
set -euo pipefail
cd "$(dirname "$0")/.."
G="$PWD/.gpu"
[ -d "$G/wheels" ] && [ -d "$G/data" ] || { echo "gpu-check: no .gpu/wheels or .gpu/data: run make gpu-prepare first" >&2; exit 2; }
python3 -m venv --system-site-packages "$G/venv"
"$G/venv/bin/pip" install -q --no-index --find-links "$G/wheels" zarr numcodecs pytest
mkdir -p "$G/pkg/hipnet"
for d in pipeline model cli viz data_manifests; do ln -sfn "$PWD/$d" "$G/pkg/hipnet/$d"; done
export PYTHONPATH="$G/pkg" HIPNET_COMMIT="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
"$G/venv/bin/python" bench/gpu_check.py --data "$G/data" --out "${OUT:-bench/results}/gpu.json" "$@"
