# The README's two commands: `make demo` (the whole pipeline on the synthetic dataset) and
# `make test` (lint + tests). Both create the virtual environment on first use.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
CORES ?= 2

.PHONY: setup demo report test test-fast test-slurm detectron2 lint bench dag clean

setup: $(VENV)/.installed

PLUGIN := plugins/snakemake-logger-plugin-regiongraph

$(VENV)/.installed: requirements.txt pyproject.toml $(PLUGIN)/pyproject.toml $(PLUGIN)/snakemake_logger_plugin_regiongraph/__init__.py
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements.txt
	$(BIN)/pip install --quiet --no-deps -e .
	# Snakemake finds plugins only when they are installed normally, not in editable mode
	$(BIN)/pip install --quiet --no-deps --force-reinstall ./$(PLUGIN)
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

# the SLURM profile on a real single-node cluster started on this machine (root; Debian's
# slurm-wlm and munge, installed on first use): tests/test_slurm_cluster.py
test-slurm: setup
	bash .ci/slurm/setup.sh
	# a basetemp of its own: pytest removes all but the last three of the shared /tmp/pytest-of-<user>
	@mkdir -p build
	REGIONGRAPH_SLURM_CLUSTER=1 $(BIN)/pytest -q -p no:cacheprovider --durations=10 \
		--basetemp=build/test-slurm tests/test_slurm_cluster.py

# detectron2 built from a source tarball once per machine (wheel cached in WHEELS) into .venv;
# nothing to do where there is no tarball (REGIONGRAPH_VENDOR/detectron2-*.tar.gz or D2_TARBALL)
REGIONGRAPH_VENDOR ?= ../shared/vendor
D2_TARBALL ?= $(firstword $(wildcard $(REGIONGRAPH_VENDOR)/detectron2-*.tar.gz))
WHEELS ?= $(HOME)/.cache/regiongraph/wheels

detectron2: setup
	bash .ci/detectron2.sh "$(D2_TARBALL)" "$(WHEELS)"

# the edit-test loop: everything but the workflow runs and the tests that start Snakemake
test-fast: setup
	$(BIN)/ruff check .
	$(BIN)/pytest -q -p no:cacheprovider -m "not slow and not workflow"

bench: setup
	$(BIN)/python bench/extract.py
	$(BIN)/python bench/decode.py

# drawn into build/ first: a failed draw (no Graphviz) leaves the committed picture as it was
dag: setup
	@mkdir -p build
	$(BIN)/snakemake --quiet all --rulegraph > build/rulegraph.dot
	dot -Tpng build/rulegraph.dot -o build/rulegraph.png
	mv build/rulegraph.png docs/rulegraph.png

clean:
	rm -rf results resources/toy .snakemake report.html
