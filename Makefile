# The two commands a new machine needs: `make serve` and `make test`. Both create the virtual
# environment on first use, with torch pinned by constraints.txt: the build the package index
# serves (on Linux, PyPI's is the CUDA one). For a CPU-only host, first install
# `torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu` into .venv (see README).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: install serve test lint format models models-small models-fashion fashion-data clean

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt -e '.[dev]'
	touch $(STAMP)

serve: install
	$(BIN)/mcdrop serve

test: install lint
	$(BIN)/pytest -q --cov=service --cov-report=term:skip-covered

lint: install
	$(BIN)/ruff check service tests bench scripts examples
	$(BIN)/ruff format --check service tests bench scripts examples
	$(BIN)/mypy
	$(BIN)/lint-imports
	$(BIN)/python scripts/check_sizes.py service
	$(BIN)/hadolint Dockerfile

format: install
	$(BIN)/ruff check --fix service tests bench scripts examples
	$(BIN)/ruff format service tests bench scripts examples

# Reproduce the shipped models (deterministic on the CPU for a given seed). `models-small`
# takes seconds; `models-fashion` trains the convnet (minutes; timing in docs/models.md), with the
# recipe scripts/fashion_select.py chose on validation rows (bench/results/fashion-mnist/selection.json).
# FASHION_SRC: the folder of the Fashion-MNIST idx files; empty: look where Debian's
# dataset-fashion-mnist package puts them (see docs/data.md).
FASHION_SRC ?=
FASHION_DATA := $(if $(FASHION_SRC),--data $(FASHION_SRC))
FASHION_TARGET ?= --target-error 0.03
DATA := build/data

models: models-small models-fashion

models-small: install
	$(BIN)/python scripts/sklearn_data.py diabetes $(DATA)/diabetes.npz
	$(BIN)/python scripts/sklearn_data.py digits $(DATA)/digits.npz
	$(BIN)/mcdrop train $(DATA)/diabetes.npz --task regression --out models/diabetes \
		--hidden 50 --layers 2 --dropout 0.1 --epochs 200 --batch-size 32 --seed 0 --quiet
	$(BIN)/mcdrop train $(DATA)/digits.npz --task classification --out models/digits \
		--hidden 128 --layers 2 --dropout 0.25 --input-dropout 0.1 --input-scale 0.0625 \
		--epochs 60 --batch-size 64 --seed 0 --quiet
	# Calibrate on the rows training held out for validation (val-fraction 0.1, seed 0).
	$(BIN)/python scripts/validation_rows.py $(DATA)/diabetes.npz $(DATA)/diabetes-heldout.npz 0.1 0
	$(BIN)/python scripts/validation_rows.py $(DATA)/digits.npz $(DATA)/digits-heldout.npz 0.1 0
	$(BIN)/mcdrop calibrate diabetes --data $(DATA)/diabetes-heldout.npz \
		--max-referral-rate 0.2 --metric std
	$(BIN)/mcdrop calibrate digits --data $(DATA)/digits-heldout.npz --target-error 0.05

# Checks for the data first (standard library only), so a missing file is reported before any
# install or training.
fashion-data:
	$(PYTHON) scripts/fashion_mnist_split.py --check $(FASHION_DATA)

models-fashion: fashion-data install
	$(BIN)/python scripts/fashion_mnist_split.py $(FASHION_DATA) $(DATA)
	$(BIN)/mcdrop train $(DATA)/fashion-train.npz --task classification --arch convnet \
		--out models/fashion-mnist --channels 16 32 --hidden 128 --layers 2 --dropout 0.25 \
		--length-scale 0.01 --input-scale 0.00392156862745098 --val-fraction 0 --epochs 24 \
		--batch-size 128 --seed 0
	$(BIN)/mcdrop calibrate fashion-mnist --data $(DATA)/fashion-heldout.npz $(FASHION_TARGET)
	$(BIN)/mcdrop evaluate fashion-mnist --data $(DATA)/fashion-test.npz \
		--out bench/results/fashion-mnist

clean:
	rm -rf $(VENV) build .pytest_cache .mypy_cache .ruff_cache
