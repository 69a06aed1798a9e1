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
# training preset (fast, the default everywhere | long | small | paper) or a YAML file; fast = the CPU demo (1,000 steps, about 7 minutes on
# 2 cores); long = fast trained 6,000 steps (at most 2 hours: with TRAIN_MINUTES=120)
TRAIN_CONFIG ?= fast
RUN ?= runs/$(DATASET)_$(TRAIN_CONFIG)
# a time cap: training stops there with a checkpoint even if the preset's steps are not done
TRAIN_MINUTES ?= 17
# extra `hipnet-train` options, e.g. TRAIN_ARGS="--fit-schedule --steps 1500" (the learning-rate decay fitted to
# TRAIN_MINUTES: the plan is set from the first steps' speed, at most --steps)
TRAIN_ARGS ?=
# evaluation of $(RUN) on the test store: EVAL_ARGS="--stride 16 --resolution 128" for a quick look
EVAL_STORE ?= $(PROCESSED)/test.zarr
EVAL_ARGS ?=
# the demo: per-template geodesics (25 frames/s instead of 5), no held-out subjects (`make preprocess` adds them),
# every 16th test frame scored (the first of each test sequence), two meshes. Its test store holds only those
# frames ($(DEMO_TEST)/test.zarr, the same bytes as theirs in the full store): evaluation points make a test frame
# cost ten times a training frame, and the other 360 took about 90 s of the 20 minutes. `make preprocess` writes all.
DEMO_TEST ?= $(DATA)/processed/anny_demo
# the demo's training time: the schedule is fitted to it (`--fit-schedule`): the run times its first steps and plans
# what 16.5 minutes hold (at most DEMO_MAX_STEPS; 2,832 on the 2-core machine in the last run), so the decay
# ends with the time on a slow machine and a fast one trains longer (bench/results/demo.json records the plan)
DEMO_TRAIN_MINUTES ?= 16.5
DEMO_MAX_STEPS ?= 4000
DEMO_EVAL_ARGS ?= --mesh-frames 2 --resolution 128
# what this demo run changes, recorded in bench/results/demo.json and the table of every run (docs/experiments/demo.md)
DEMO_NOTE ?=
# Anny's one-off model build is cached here (about 0.8 GB per topology).
export ANNY_CACHE_DIR ?= $(HOME)/.cache/hipnet/anny

.PHONY: setup test test-browser fuzz docs pretrained demo preprocess train eval lint bench bench-e2e bench-accuracy bench-families bench-mix bench-viewer bench-s3 gpu-prepare gpu-check clean

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

# The fuzzed readers at a larger, random budget (hypothesis profile `fuzz`: 400 damaged files per format, a few
# minutes); `make test` runs a fixed 60.
fuzz: setup
	HYPOTHESIS_PROFILE=fuzz $(BIN)/python -m pytest -q -p no:cacheprovider tests/test_fuzz_readers.py

# The documentation site (mkdocs-material; the API reference from the docstrings) into site/, strict: a broken link or
# reference fails. The experiment pages and the README's results table are regenerated from bench/results first.
docs: setup
	$(BIN)/python -m bench.pages
	@mkdir -p build/docs_pkg/hipnet && for d in pipeline model cli viz data_manifests; do \
		ln -sfn "$$PWD/$$d" build/docs_pkg/hipnet/$$d; done && ln -sfn "$$PWD/api/__init__.py" build/docs_pkg/hipnet/
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet

# hipnet-view in a real browser: headless Chromium from the Debian packages (installed here when missing; nothing
# is downloaded at run time); writes docs/viewer.png and docs/viewer_run.png. A few minutes on 2 cores.
test-browser: setup
	@if ! command -v chromium >/dev/null; then \
		echo "installing chromium (Debian package) for the browser test"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; fi
	$(BIN)/python -m pytest -q -m browser tests/test_viewer_browser.py

# The main job on the embedded data: generate it (with a picture), preprocess it into stores, train the `fast`
# model on CPU, score it on held-out poses (report in $(RUN)/eval/report.md). Every step is resumable.
demo: setup
	@mkdir -p $(DATA)/demo && date +%s > $(DATA)/demo/.started
	$(BIN)/hipnet-data anny --out $(DATA)/raw/anny --png $(DATA)/demo/anny_grid.png
	$(MAKE) --no-print-directory preprocess DATASET=anny GEODESICS=per-template PREPROCESS_ARGS="--splits train"
	$(MAKE) --no-print-directory preprocess DATASET=anny GEODESICS=per-template PROCESSED=$(DEMO_TEST) \
		PREPROCESS_ARGS="--splits test --frame-every 16 --shard-frames 12"
	$(MAKE) --no-print-directory train DATASET=anny TRAIN_MINUTES=$(DEMO_TRAIN_MINUTES) \
		TRAIN_ARGS="--fit-schedule --steps $(DEMO_MAX_STEPS)"
	$(MAKE) --no-print-directory eval DATASET=anny EVAL_STORE=$(DEMO_TEST)/test.zarr EVAL_ARGS="$(DEMO_EVAL_ARGS)"
	$(BIN)/hipnet-data inspect $(DATA)/processed/anny/train.zarr --frame 100 --png $(DATA)/demo/labels.png
	$(BIN)/python -m bench.demo_result --run $(RUN) --started $(DATA)/demo/.started $(if $(DEMO_NOTE),--note "$(DEMO_NOTE)",)
	$(BIN)/python -m bench.pages
	@echo "demo: $(DATA)/demo/anny_grid.png, $(DATA)/demo/labels.png, stores $(DATA)/processed/anny/train.zarr and" \
		"$(DEMO_TEST)/test.zarr, run in $(RUN)"
	@echo "demo: report $(RUN)/eval/report.md; $$(( ($$(date +%s) - $$(cat $(DATA)/demo/.started)) / 60 )) min" \
		"$$(( ($$(date +%s) - $$(cat $(DATA)/demo/.started)) % 60 )) s since the demo started"

# The pretrained model bundled with the package (model/pretrained/anny.pt and anny.json): the demo's data and preset,
# PRETRAINED_STEPS steps with no time cap (so the model does not depend on the machine's speed), scored on the
# demo's test frames, then bundled (python -m hipnet.model.export). About 20 minutes on 2 cores after the data.
PRETRAINED_STEPS ?= 1500
PRETRAINED_RUN ?= runs/anny_pretrained
pretrained: setup
	$(BIN)/hipnet-data anny --out $(DATA)/raw/anny
	$(MAKE) --no-print-directory preprocess DATASET=anny GEODESICS=per-template PREPROCESS_ARGS="--splits train"
	$(MAKE) --no-print-directory preprocess DATASET=anny GEODESICS=per-template PROCESSED=$(DEMO_TEST) \
		PREPROCESS_ARGS="--splits test --frame-every 16 --shard-frames 12"
	$(BIN)/hipnet-train --shards $(DATA)/processed/anny/train.zarr --config fast --steps $(PRETRAINED_STEPS) \
		--out $(PRETRAINED_RUN) $(if $(wildcard $(PRETRAINED_RUN)/ckpt.pt),--resume,)
	$(BIN)/hipnet-eval --checkpoint $(PRETRAINED_RUN)/ckpt.pt --shards $(DEMO_TEST)/test.zarr \
		--out $(PRETRAINED_RUN)/eval $(DEMO_EVAL_ARGS)
	$(BIN)/python -m hipnet.model.export --run $(PRETRAINED_RUN) --name anny --test-store $(DEMO_TEST)/test.zarr \
		--command "make pretrained PRETRAINED_STEPS=$(PRETRAINED_STEPS)"
	$(BIN)/python -m bench.pages

# Train on the preprocessed training store; continues the run in $(RUN) when it has a checkpoint.
train: setup
	$(BIN)/hipnet-train --shards $(PROCESSED)/train.zarr --config $(TRAIN_CONFIG) --out $(RUN) \
		--max-minutes $(TRAIN_MINUTES) $(TRAIN_ARGS) $(if $(wildcard $(RUN)/ckpt.pt),--resume,)

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
	for b in generate preprocess heat_solvers loader train; do $(BIN)/python -m bench.$$b || exit 1; done

# `make preprocess DATASET=anny` end to end with this checkout and with the code before issue 16 (a git worktree),
# on the same generated data: bench/results/preprocess_e2e.json (about 15 minutes on 2 cores).
bench-e2e: setup
	$(BIN)/python bench/preprocess_e2e.py

# The accuracy harness: HIPNet variants (the paper's table-6 ladder, our departures) and NASA on the same embedded
# stores and budget; resumable (a rerun skips finished variants). ACCURACY_ARGS="--only fast,nasa" picks variants.
ACCURACY_ARGS ?=
bench-accuracy: setup
	$(BIN)/python -m bench.accuracy $(ACCURACY_ARGS)

# Held-out motion family: train the harness's fast variant without pose family $(FAMILY), score it on that family
# and on the other families' test sequences (bench/results/family_holdout.json).
FAMILY ?= sit
bench-families: setup
	$(BIN)/python -m bench.family_holdout --family $(FAMILY)

# The training mix: the fast preset on random key poses alone, with the pose families, with the DeepMimic clips
# (fetched with pip on first use; research use only), each scored on all three: bench/results/motion_mix.json.
bench-mix: setup
	$(BIN)/python -m bench.motion_mix

# The viewer's mesh update time (interactive and refined resolution) for a checkpoint on store frames:
# bench/results/viewer.json. VIEWER_ARGS="--checkpoint RUN/ckpt.pt --store TEST.zarr" (default: the demo's).
VIEWER_ARGS ?=
bench-viewer: setup
	$(BIN)/python -m bench.viewer $(VIEWER_ARGS)

# Loader frames/s from a store on a local S3 server (moto) through the shard cache, cold and warm, against local
# disk, and the all-of-AMASS estimate: bench/results/s3.json (about 3 minutes on 2 cores).
bench-s3: setup
	$(BIN)/python -m bench.s3

# GPU: `make gpu-prepare` here (wheels for Python 3.12 and small stores into .gpu/), then `make gpu-check` on the
# GPU machine with .gpu carried along (it needs no `make setup`: it uses that machine's torch).
gpu-prepare: setup
	bash bench/gpu_prepare.sh

gpu-check:
	bash bench/gpu_check.sh $(GPU_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
