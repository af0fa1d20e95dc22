# Two commands on a fresh machine: `make demo` and `make test`. Both set up a
# project-local virtual environment first (torch pinned and installed before anything
# that could pull a CUDA build of it).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TORCH_VERSION ?= 2.13.0
STAMP := $(VENV)/.swiftseg-installed

.PHONY: setup test lint demo clean

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

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache
