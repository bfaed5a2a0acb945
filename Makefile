# The README's two commands: `make demo` (the whole pipeline on the synthetic dataset) and
# `make test` (lint + tests). Both create the virtual environment on first use.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
CORES ?= 2

.PHONY: setup demo report test lint bench dag clean

setup: $(VENV)/.installed

$(VENV)/.installed: requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements.txt
	$(BIN)/pip install --quiet --no-deps -e .
	touch $@

demo: setup
	$(BIN)/snakemake --cores $(CORES) --rerun-incomplete
	@echo "Done: results/ (metrics in results/gcn/*/metrics.json). Report: make report"

report: setup
	$(BIN)/snakemake --cores $(CORES) --report report.html

lint: setup
	$(BIN)/ruff check .
	$(BIN)/snakefmt --check .
	$(BIN)/snakemake --lint --cores 1

test: lint
	$(BIN)/pytest -q -p no:cacheprovider --durations=10

bench: setup
	$(BIN)/python bench/extract.py

dag: setup
	$(BIN)/snakemake --rulegraph | dot -Tpng > docs/rulegraph.png

clean:
	rm -rf results resources/toy .snakemake report.html
