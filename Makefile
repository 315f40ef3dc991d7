# Every target installs what it needs first; each is safe to run again.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
EXTRAS ?= test,ssl
# The reference implementations the model tests compare with, installed without their
# dependencies: dynamic_network_architectures would pull timm, and timm torchvision (a CUDA
# build on PyPI that does not import beside CPU torch). Its U-Net needs neither.
DNA    := dynamic-network-architectures==0.4.4
TIMM   := timm==1.0.22 einops==0.8.2
# Learned brain masking and real heads, installed without their dependencies: deepbet's wheel
# holds its two TorchScript networks (its GUI toolkit and compiled helpers are not needed to
# run them); pydeface's holds a real mean T1 head with its face mask (nipype is not needed).
LEARNED := deepbet==1.0.2 pydeface==2.1.0
# Human ratings: mriqc-learn's wheel holds MRIQC's metrics of ABIDE and DS030 with their raters'
# verdicts (its learning code and dependencies are not needed to read them).
RATINGS := mriqc-learn==0.0.3
# MRIQC's own metric functions (mriqc.qc.anatomical), the reference of the metric tests: its
# wheel unpacked into .cache, outside the venv (importing mriqc pulls nipype and FSL wrappers).
MRIQC := mriqc==24.0.2
MRIQC_DIR := .cache/mriqc
REAL_MRI := .cache/real-mri

.PHONY: demo test lint check install clean reference real-mri mriqc-reference browser

$(STAMP): pyproject.toml constraints.txt Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[$(EXTRAS)]'
	$(BIN)/python -m pip install -q --no-deps '$(DNA)' $(LEARNED) $(RATINGS)
	touch $@

install: $(STAMP)

## The main job on the embedded default: a synthetic OpenNeuro-like collection,
## curated into ./openmind.
demo: $(STAMP)
	$(BIN)/openmind demo --out openmind --sources openmind-sources --nifti-tree openmind-nifti

## Colin27 from Debian's mricron-data, for the real-head tests (skipped, saying why, without it).
real-mri:
	scripts/fetch_real_mri.sh $(REAL_MRI)

## MRIQC's metric code for the metric tests (skipped, saying why, without it).
mriqc-reference: $(STAMP)
	test -f $(MRIQC_DIR)/mriqc/qc/anatomical.py || $(BIN)/python -m pip install -q --no-deps \
		--target $(MRIQC_DIR) '$(MRIQC)' || echo "warning: $(MRIQC) not fetched: its tests skip" >&2

## Debian's chromium and its driver for the QC browser's tests (skipped, saying why, without).
browser:
	scripts/install_browser.sh

## The whole test suite, lint and type checks included.
test: lint $(STAMP) real-mri mriqc-reference browser
	$(BIN)/python -m pytest

## Primus against dynamic_network_architectures' own (timm in .reference/, outside the venv;
## torchvision stubbed for the import, see tests/reference_models.py).
reference: $(STAMP)
	test -d .reference || $(BIN)/python -m pip install -q --no-deps --target .reference $(TIMM)
	PYTHONPATH=.reference $(BIN)/python -m pytest -m reference tests/test_primus.py

lint: $(STAMP)
	$(BIN)/ruff check openmind_data openmind_ssl tests
	$(BIN)/ruff format --check openmind_data openmind_ssl tests
	$(BIN)/mypy

clean:
	rm -rf $(VENV) .reference openmind openmind-sources openmind-nifti .mypy_cache .ruff_cache .pytest_cache
