# Two commands on a fresh machine: `make demo` and `make test`. Both set up a
# project-local virtual environment first (torch pinned and installed before anything
# that could pull a CUDA build of it).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TORCH_VERSION ?= 2.13.0
STAMP := $(VENV)/.swiftseg-installed

.PHONY: setup test lint demo clean gpu-check gpu-wheels

setup: $(STAMP)

$(STAMP): setup.py setup.cfg package.xml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet torch==$(TORCH_VERSION)
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

lint: setup
	$(BIN)/ruff check .

test: setup
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q

demo: setup
	$(BIN)/swiftseg-demo

# On a GPU machine whose python3 has torch with CUDA (no venv, no registry needed):
# `make gpu-check OUT=folder` (docs/benchmarks.md). Wheels in gpu-wheels/ (from
# `make gpu-wheels` on a machine with a registry) are installed offline first.
GPU_PYTHON ?= python3
OUT ?= gpu-check-out
GPU_SITE ?= /tmp/swiftseg-gpu-site
# Packages the GPU machine's Python lacks; none today (it has torch, numpy, OpenCV,
# PyYAML, tqdm, pytest); e.g. GPU_WHEELS="rosbags==0.10.9" for a check that needs more.
GPU_WHEELS ?=

gpu-check:
	@if ls gpu-wheels/*.whl >/dev/null 2>&1; then \
	  $(GPU_PYTHON) -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
	    --upgrade --target $(GPU_SITE) gpu-wheels/*.whl; fi
	PYTHONPATH=$(CURDIR):$(GPU_SITE)$${PYTHONPATH:+:$$PYTHONPATH} PYTHONUNBUFFERED=1 \
	  $(GPU_PYTHON) -m swiftseg_ros.gpucheck --out $(OUT)

gpu-wheels:
	mkdir -p gpu-wheels
	@if [ -n "$(GPU_WHEELS)" ]; then \
	  $(PYTHON) -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
	    --implementation cp --platform manylinux2014_x86_64 --platform manylinux_2_28_x86_64 \
	    -d gpu-wheels $(GPU_WHEELS); \
	else echo "gpu-wheels: nothing to fetch, gpu-check needs only what the GPU machine's Python has"; fi
	@du -sh gpu-wheels

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache
