# videoattn: two commands do all set-up on a fresh machine.
#   make demo   synthetic data -> torchrun training (2 CPU processes) -> evaluation -> features -> predict
#   make test   the test suite
# The virtual environment is cached under ~/.cache/videoattn, keyed by the dependency files,
# so CI and repeated runs reuse it; VENV=... overrides the location.
SHELL := /bin/bash
PYTHON ?= python3
DEPS_HASH := $(shell cat setup.cfg pyproject.toml requirements-references.txt | sha1sum | cut -c1-12)
VENV ?= $(HOME)/.cache/videoattn/venv-$(DEPS_HASH)
PY := $(VENV)/bin/python
TORCHRUN := $(VENV)/bin/torchrun
STAMP := $(VENV)/.installed
DEMO_CFG ?= configs/synthetic/I3D_NL_CBAM_R18.yaml
DEMO_OUT ?= output/demo
DEMO_DATA ?= data/synthetic
NPROC ?= 2
PYTEST_ARGS ?=
# pytest-xdist workers for `make test` (a file's tests stay on one worker, see tests/conftest.py);
# PYTEST_WORKERS=0 runs the suite in this one process.
PYTEST_WORKERS ?= 2
# glibc malloc arenas per decode thread fragment memory over long runs; 2 keeps loader RSS flat
# (measured by tools/benchmark.py data; figures in docs/benchmarks.md).
export MALLOC_ARENA_MAX ?= 2

.PHONY: venv test demo clean

# No prerequisites on purpose: the venv path already encodes the dependency files' hash.
$(STAMP):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -U pip setuptools wheel
	$(PY) -m pip install -q -e '.[test,export]'
	$(PY) -m pip install -q --no-deps -r requirements-references.txt
	$(PY) -c "import av, slowfast.datasets.kinetics, mmaction.datasets.transforms; print('references: pyslowfast, mmaction2')"
	$(PY) -c "import torch, torchvision, decord, av, pytorchvideo.models; print('torch', torch.__version__, 'torchvision', torchvision.__version__)"
	touch $@

# decord2, a maintained fork of decord with the same `import decord` package, for the decoder
# comparison (tools/benchmark.py data, tests/data/test_decoder_exactness.py): it cannot share
# site-packages with the venv's decord 0.6, so it gets a folder of its own inside the venv.
DECORD2 ?= decord2==3.4.0
DECORD2_STAMP := $(VENV)/decord2/.installed
$(DECORD2_STAMP): $(STAMP)
	$(PY) -m pip install -q --no-deps --target $(VENV)/decord2 $(DECORD2)
	touch $@

# Point the (possibly shared) cached venv at this checkout.
venv: $(STAMP) $(DECORD2_STAMP)
	@$(PY) -m pip install -q --no-deps --no-build-isolation -e . >/dev/null 2>&1 || \
		$(PY) -m pip install --no-deps --no-build-isolation -e .

# ruff (lint + format, configured in pyproject.toml) first: a style slip fails in seconds, not after the suite
test: venv
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .
	$(PY) -m pytest tests -n $(PYTEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

demo: venv
	$(PY) tools/make_synthetic_dataset.py --output $(DEMO_DATA) --train-per-class 60 --val-per-class 20
	$(TORCHRUN) --standalone --nproc_per_node=$(NPROC) tools/train_net.py --config $(DEMO_CFG) \
		data.root=$(DEMO_DATA) output_dir=$(DEMO_OUT)
	$(TORCHRUN) --standalone --nproc_per_node=$(NPROC) tools/test_net.py --config $(DEMO_CFG) \
		--checkpoint $(DEMO_OUT)/checkpoints/checkpoint_best.pyth data.root=$(DEMO_DATA) output_dir=$(DEMO_OUT)
	$(TORCHRUN) --standalone --nproc_per_node=$(NPROC) tools/extract_features.py --config $(DEMO_CFG) \
		--checkpoint $(DEMO_OUT)/checkpoints/checkpoint_best.pyth --input $(DEMO_DATA)/val.csv \
		--output $(DEMO_OUT)/features data.root=$(DEMO_DATA)
	$(PY) tools/visualize_attention.py --config $(DEMO_CFG) --checkpoint $(DEMO_OUT)/checkpoints/checkpoint_best.pyth \
		--video "$$(ls $(DEMO_DATA)/val/* | head -n 1)" --output $(DEMO_OUT)/attention.png data.root=$(DEMO_DATA)
	$(PY) tools/predict.py --config $(DEMO_CFG) --checkpoint $(DEMO_OUT)/checkpoints/checkpoint_best.pyth \
		--input "$$(ls $(DEMO_DATA)/val/* | head -n 1)" --output $(DEMO_OUT)/predict --render data.root=$(DEMO_DATA)
	@echo "metrics:      $(DEMO_OUT)/metrics.jsonl, $(DEMO_OUT)/test/metrics.json"
	@echo "tensorboard:  $(VENV)/bin/tensorboard --logdir $(DEMO_OUT)/tensorboard"
	@echo "features:     $(DEMO_OUT)/features/index.csv"
	@echo "pictures:     $(DEMO_OUT)/attention.png, $(DEMO_OUT)/attention.channels.png (+ attention.json), $(DEMO_OUT)/test/confusion_matrix.png"
	@echo "predictions:  $(DEMO_OUT)/predict/predictions.csv, labelled video and timeline strip in $(DEMO_OUT)/predict"

clean:
	rm -rf output data/synthetic
