# Two entry points for a newcomer: `make demo` and `make test`.
# Both create .venv if absent and install what they need.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The CPU wheel of this version is on the build machines' disk (pip's find-links). Elsewhere pip
# fetches torch $(TORCH_VERSION) from PyPI, which on Linux is the CUDA build (several GB of CUDA
# libraries); for the CPU build: make test TORCH_INDEX=https://download.pytorch.org/whl/cpu
TORCH_VERSION ?= 2.13.0
TORCH_INDEX ?=

.PHONY: demo test lint install clean bench-optimum-env report

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet "torch==$(TORCH_VERSION)" $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	$(BIN)/python -m pip install --quiet -e ".[test,hf,tensorboard,plots]"
	touch $@

install: $(VENV)/.installed

demo: $(VENV)/.installed
	$(BIN)/leanbert demo

test: $(VENV)/.installed
	$(BIN)/python -m pytest -q

# The report (report/report.md, report.html, summary.json and the README's headline table): reuses the
# results that are there and runs the missing ones (leanbert report --help lists the expected times).
report: $(VENV)/.installed
	$(BIN)/leanbert report

lint: $(VENV)/.installed
	$(BIN)/ruff check src tests benchmarks experiments

# The anchor of `leanbert bench inference`: transformers' model exported with optimum to ONNX Runtime
# int8. optimum-onnx 0.1.0 needs transformers<4.58 (leanbert's venv has 5.x), so it gets a venv of its own.
OPTIMUM_VENV ?= benchmarks/.venv-optimum
bench-optimum-env: $(OPTIMUM_VENV)/.installed

$(OPTIMUM_VENV)/.installed:
	$(PYTHON) -m venv $(OPTIMUM_VENV)
	$(OPTIMUM_VENV)/bin/python -m pip install --quiet "torch==$(TORCH_VERSION)" "optimum-onnx[onnxruntime]==0.1.0" $(if $(TORCH_INDEX),--extra-index-url $(TORCH_INDEX))
	touch $@

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache build dist src/*.egg-info
