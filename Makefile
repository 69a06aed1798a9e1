# HIPNet toolkit. `make demo` runs the main job on the embedded Anny data; `make test` runs the tests.
# Both create .venv and install everything first (`make setup`).
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
DATASET ?= anny
DATA ?= data
RAW ?= $(DATA)/raw/$(DATASET)
PROCESSED ?= $(DATA)/processed/$(DATASET)
WORKERS ?= 2
GEODESICS ?= per-frame
# extra `hipnet-data preprocess` options, e.g. PREPROCESS_ARGS="--snarf --shard-frames 64"
PREPROCESS_ARGS ?=
# your SMPL/SMPL+H/SMPL-X model files (AMASS, DFAUST and CAPE need them; licence-gated, never downloaded)
BODY_MODELS ?=
RUN ?= runs/$(DATASET)_small
TRAIN_CONFIG ?= small
TRAIN_MINUTES ?= 8
# evaluation of $(RUN) on the test store: EVAL_ARGS="--max-frames 48 --resolution 128" for a quick look
EVAL_STORE ?= $(PROCESSED)/test.zarr
EVAL_ARGS ?=
# Anny's one-off model build is cached here (about 0.8 GB per topology).
export ANNY_CACHE_DIR ?= $(HOME)/.cache/hipnet/anny

.PHONY: setup test demo preprocess train eval lint bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# The stamp is rebuilt when pyproject.toml changes; torch goes in first so nothing pulls a CUDA build.
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	@if ! ldconfig -p | grep -q libusb-1.0; then \
		echo "installing libusb-1.0-0 (needed by open3d)"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libusb-1.0-0; fi
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e ".[dev]"
	touch $@

setup: $(VENV)/.installed

test: setup
	$(BIN)/python -m pytest -q

# The main job on the embedded data: generate it (with a picture), preprocess it into stores, train the small
# model on CPU for $(TRAIN_MINUTES) minutes. Every step is resumable; rerunning continues training.
demo: setup
	$(BIN)/hipnet-data anny --out $(DATA)/raw/anny --png $(DATA)/demo/anny_grid.png
	$(MAKE) --no-print-directory preprocess DATASET=anny
	$(MAKE) --no-print-directory train DATASET=anny
	$(BIN)/hipnet-data inspect $(DATA)/processed/anny/train.zarr --frame 100 --png $(DATA)/demo/labels.png
	@echo "demo: $(DATA)/demo/anny_grid.png, $(DATA)/demo/labels.png, stores in $(DATA)/processed/anny, run in $(RUN)"

# Train on the preprocessed training store; continues the run in $(RUN) when it has a checkpoint.
train: setup
	$(BIN)/hipnet-train --shards $(PROCESSED)/train.zarr --config $(TRAIN_CONFIG) --out $(RUN) \
		--max-minutes $(TRAIN_MINUTES) $(if $(wildcard $(RUN)/ckpt.pt),--resume,)

# Score the latest checkpoint of $(RUN) on the test store: $(RUN)/eval/report.md, metrics.json, pictures, meshes.
eval: setup
	$(BIN)/hipnet-eval --checkpoint $(RUN)/ckpt.pt --shards $(EVAL_STORE) --out $(RUN)/eval $(EVAL_ARGS)

# Raw data -> one store per split in $(PROCESSED). For anny the raw data is generated first (a no-op once done).
# Both steps are resumable: rerun after an interruption.
preprocess: setup
ifeq ($(DATASET),anny)
	$(BIN)/hipnet-data anny --out $(RAW)
endif
	$(BIN)/hipnet-data preprocess --dataset $(DATASET) --root $(RAW) --out $(PROCESSED) \
		--workers $(WORKERS) --geodesics $(GEODESICS) $(if $(BODY_MODELS),--body-models $(BODY_MODELS),) \
		$(PREPROCESS_ARGS)
	$(BIN)/hipnet-data validate $(PROCESSED)/*.zarr

lint: setup
	$(BIN)/ruff check .

bench: setup
	for b in bench/[!_]*.py; do $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
