#!/usr/bin/env bash
# `make gpu-prepare`, on this (CPU) machine: everything the GPU machine needs beyond what it has (Python 3.12, torch,
# numpy, scipy, scikit-image, pyyaml, matplotlib; no zarr, no pytest, no network) goes to .gpu/, which `make
# gpu-check` uses there (pass `.gpu` as a carried path): wheels for Python 3.12 (this project's own wheel among them,
# built here) and small embedded stores.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .gpu/wheels
# the project's pinned zarr/numcodecs versions, as Python 3.12 wheels (no numpy: the GPU machine has it)
pins=$(.venv/bin/python -c "import importlib.metadata as m; print(' '.join(f'{p}=={m.version(p)}' for p in
    ('zarr', 'numcodecs', 'donfig', 'google-crc32c', 'typing_extensions', 'packaging', 'pytest', 'pluggy', 'iniconfig',
    'pygments')))")
.venv/bin/pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d .gpu/wheels $pins
rm -f .gpu/wheels/hipnet_toolkit-*.whl
.venv/bin/python -m build --wheel --no-isolation --outdir .gpu/wheels . > /dev/null
.venv/bin/python -m bench.gpu_prepare --out .gpu/data
du -sh .gpu/wheels .gpu/data
