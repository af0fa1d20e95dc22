# Two commands on a fresh machine: `make demo` and `make test`. Both set up a
# project-local virtual environment first (torch pinned and installed before anything
# that could pull a CUDA build of it).
#
# torch's build: stock PyPI's Linux x86_64 wheel of torch==2.13.0 is the CUDA 13 one
# (with ~20 nvidia-* packages, gigabytes); the CPU build is `2.13.0+cpu`, published on
# PyTorch's own index. So by default the Makefile asks for `torch==2.13.0+cpu`, with that
# index as an extra source for torch alone (its dependencies and everything else come
# from the index pip is configured with; a machine whose pip configuration already has
# the +cpu wheel, like a CI mirror, takes it from there). For a CUDA build:
#   make setup TORCH_VARIANT=cu130   (or cu128, ...: PyTorch's index for that CUDA)
#   make setup TORCH_VARIANT=        (PyPI's default wheel: CUDA 13 on Linux x86_64)
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TORCH_VERSION ?= 2.13.0
TORCH_VARIANT ?= cpu
TORCH_INDEX ?= https://download.pytorch.org/whl/$(TORCH_VARIANT)
TORCH_REQUIREMENT := torch==$(TORCH_VERSION)$(if $(TORCH_VARIANT),+$(TORCH_VARIANT))
STAMP := $(VENV)/.swiftseg-installed

.PHONY: setup test lint demo clean gpu-check gpu-wheels

setup: $(STAMP)

$(STAMP): setup.py setup.cfg package.xml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet --no-deps --retries 1 \
		$(if $(TORCH_VARIANT),--extra-index-url $(TORCH_INDEX)) "$(TORCH_REQUIREMENT)"
	$(BIN)/python -m pip install --quiet "$(TORCH_REQUIREMENT)"
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	$(BIN)/python -m pip install --quiet -e '.[ros]' || echo "make setup: the ros-jazzy \
	wheels (rclpy) did not install; the node's rclpy tests will skip"
	touch $@

lint: setup
	$(BIN)/ruff check .

# The suite on TEST_WORKERS processes (pytest-xdist, from the dev extra), a test module's
# tests on one process, so that a module's shared fixtures (a training run, exported
# graphs) are made once: on CI's 2 cores in about half the serial time. TEST_WORKERS=0
# runs it in this process, as a plain `python -m pytest -q` does. The 15 slowest tests
# are listed at the end.
TEST_WORKERS ?= 2

# The rclpy tests: Fast DDS on this host only (no traffic to or from other machines), and
# each test module picks its own random ROS_DOMAIN_ID (test/ros_helpers.py), so parallel
# runs do not see each other's nodes. They run in a pytest session of their own (the
# last): in worker processes shared with the rest of the suite, a worker died now and then
# ("node down: Not properly terminated") and xdist's loadscope scheduler then stopped on
# an internal error; apart, every session passed every time. Their order is the work's
# order (--no-loadscope-reorder): xdist's loadscope deals each worker two modules in turn
# to start with, so one worker runs the 30-second soak (and the tiny shutdown module) while
# the other runs the two big node modules; the cameras module goes to the first free.
# Training runs (DataLoader worker processes) in fresh processes of their own too: late in
# a long single-process session the process once segfaulted there (fork after other
# libraries' threads is the suspect); their two modules of one training run each go to
# two workers. MAIN_TEST_WORKERS=0 runs the rest in one process.
MAIN_TEST_WORKERS ?= $(TEST_WORKERS)
TRAIN_TESTS := test/test_train_run.py test/test_train_stops.py test/test_train_ddp.py
ROS_TESTS := test/test_soak_ros.py test/test_node_rclpy.py test/test_shutdown.py \
	test/test_node_signals_rclpy.py test/test_node_cameras_rclpy.py

test: setup
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q -n $(MAIN_TEST_WORKERS) --dist loadscope --durations=15 \
		$(addprefix --ignore=,$(ROS_TESTS) $(TRAIN_TESTS))
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadscope --durations=5 $(TRAIN_TESTS)
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadscope --no-loadscope-reorder \
		--durations=5 $(ROS_TESTS)

demo: setup
	$(BIN)/swiftseg-demo

# On a GPU machine: `make gpu-check OUT=folder` (docs/benchmarks.md), with the project's
# .venv when there is one (a CUDA build of torch: make setup TORCH_VARIANT=cu130), else the
# machine's python3 (which must have torch with CUDA; no venv, no registry needed). Wheels
# in gpu-wheels/ (from `make gpu-wheels` on a machine with a registry) are installed
# offline first.
GPU_PYTHON ?= $(if $(wildcard $(BIN)/python),$(BIN)/python,python3)
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
