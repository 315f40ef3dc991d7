# Every target installs what it needs first; each is safe to run again.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
EXTRAS ?= test,ssl

.PHONY: demo test lint check install clean

$(STAMP): pyproject.toml constraints.txt Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[$(EXTRAS)]'
	touch $@

install: $(STAMP)

## The main job on the embedded default: a synthetic OpenNeuro-like collection,
## curated into ./openmind.
demo: $(STAMP)
	$(BIN)/openmind demo --out openmind --sources openmind-sources --nifti-tree openmind-nifti

## The whole test suite, lint and type checks included.
test: lint $(STAMP)
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check openmind_data openmind_ssl tests
	$(BIN)/ruff format --check openmind_data openmind_ssl tests
	$(BIN)/mypy

clean:
	rm -rf $(VENV) openmind openmind-sources openmind-nifti .mypy_cache .ruff_cache .pytest_cache
