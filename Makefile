# The two commands a new machine needs: `make serve` and `make test`. Both create the virtual
# environment on first use, installing with torch pinned by constraints.txt (CPU wheel).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: install serve test lint format models clean

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt -e '.[dev]'
	touch $(STAMP)

serve: install
	$(BIN)/mcdrop serve

test: install lint
	$(BIN)/pytest -q

lint: install
	$(BIN)/ruff check service tests bench scripts
	$(BIN)/ruff format --check service tests bench scripts
	$(BIN)/mypy
	$(BIN)/hadolint Dockerfile

format: install
	$(BIN)/ruff check --fix service tests bench scripts
	$(BIN)/ruff format service tests bench scripts

# Reproduce the shipped models (deterministic on the CPU for a given seed).
models: install
	$(BIN)/python scripts/sklearn_data.py diabetes build/data/diabetes.npz
	$(BIN)/python scripts/sklearn_data.py digits build/data/digits.npz
	$(BIN)/mcdrop train build/data/diabetes.npz --task regression --out models/diabetes \
		--hidden 50 --layers 2 --dropout 0.1 --epochs 200 --batch-size 32 --seed 0 --quiet
	$(BIN)/mcdrop train build/data/digits.npz --task classification --out models/digits \
		--hidden 128 --layers 2 --dropout 0.25 --input-dropout 0.1 --input-scale 0.0625 \
		--epochs 60 --batch-size 64 --seed 0 --quiet

clean:
	rm -rf $(VENV) build .pytest_cache .mypy_cache .ruff_cache
