# The two commands of the quick start are `make run` and `make test`; both set up
# the virtual environment first when it is missing or out of date.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DATE ?=

.PHONY: setup run test unit bench bench-mocks clean
SCALE ?= 1.0

setup: $(STAMP)

# Re-installs only when a file that decides the environment changes.
$(STAMP): requirements.txt constraints.txt pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements.txt -c constraints.txt
	$(BIN)/pip install --quiet --disable-pip-version-check --no-deps -e .
	@$(BIN)/python -c "from osms.keys import ensure_dev_keypair; p, q = ensure_dev_keypair(); print('development signing key:', p)"
	@touch $(STAMP)

run: setup
	$(BIN)/osms run $(if $(DATE),--date $(DATE))

test: setup
	$(BIN)/pytest

unit: setup
	$(BIN)/pytest -m unit

# Figures for every stage at a size that finishes in minutes on 2 cores; the
# national-scale runs are `make bench-mocks SCALE=1.0` and BENCH_ROWS=13000000.
BENCH_ROWS ?= 2000000
bench: setup
	@echo "== IIN checks";            $(BIN)/python benchmarks/bench_iin.py
	@echo "== extract (HTTP -> Parquet)"; $(BIN)/python benchmarks/bench_extract.py --rows $(BENCH_ROWS)
	@echo "== validation (GX)";       $(BIN)/python benchmarks/bench_quality.py --rows $(BENCH_ROWS)
	@echo "== package (DuckDB)";      $(BIN)/python benchmarks/bench_package.py --rows $(BENCH_ROWS)

bench-mocks: setup
	$(BIN)/python benchmarks/bench_mocks.py --scale $(SCALE)

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis
