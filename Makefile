# Two entry points for a newcomer: `make demo` and `make test`.
# Both create .venv if absent and install what they need.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The CPU wheel of this version is on the build machines' disk; a looser pin pulls a multi-GB CUDA build.
TORCH_VERSION ?= 2.13.0

.PHONY: demo test lint install clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet "torch==$(TORCH_VERSION)"
	$(BIN)/python -m pip install --quiet -e ".[test,hf,tensorboard,plots]"
	touch $@

install: $(VENV)/.installed

demo: $(VENV)/.installed
	$(BIN)/leanbert demo

test: $(VENV)/.installed
	$(BIN)/python -m pytest -q

lint: $(VENV)/.installed
	$(BIN)/ruff check src tests benchmarks experiments

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache build dist src/*.egg-info
