# Two commands matter: `make run` (the main job) and `make test` (what CI runs).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The oldest DuckDB the analysts' catalog must open (tests/storage/test_storage_engines.py),
# in its own venv: the product's venv has the current DuckDB.
OLD_DUCKDB := 1.1.0
OLD_VENV := .venv-duckdb-old
OLD_STAMP := $(OLD_VENV)/.installed-$(OLD_DUCKDB)
export PROTRADE_OLD_DUCKDB_PYTHON := $(CURDIR)/$(OLD_VENV)/bin/python
# tests/flows/test_report_browser.py opens the daily report in headless Chromium (Debian's
# package; installing it needs root, as CI runs). The test fails, never skips, without it.
CHROMIUM_STAMP := $(VENV)/.chromium
# PostgreSQL's server binaries for Prefect's database in tests/cluster and `make cluster`: from the
# system (Debian's package, installed here if missing; root, as CI runs). Prefect's migrations
# need its pg_trgm extension, which PyPI's bundled PostgreSQL (pgserver) lacks.
POSTGRES_STAMP := $(VENV)/.postgresql

.PHONY: run test lint demo bench reliability cluster clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

$(OLD_STAMP):
	rm -rf $(OLD_VENV)
	$(PY) -m venv $(OLD_VENV)
	# pytz: DuckDB hands TIMESTAMPTZ values to Python through it.
	$(OLD_VENV)/bin/python -m pip install --quiet duckdb==$(OLD_DUCKDB) pytz
	touch $@

$(POSTGRES_STAMP): | $(STAMP)
	command -v initdb || ls /usr/lib/postgresql/*/bin/initdb || (apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y postgresql)
	touch $@

$(CHROMIUM_STAMP): | $(STAMP)
	command -v chromium || (apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y chromium)
	touch $@

run: $(STAMP)
	$(BIN)/protrade serve

# pytest-xdist: two worker processes, each test file whole on one of them (its module fixtures,
# emulators and servers stay together). On 2 cores the suite took 12:45-13:41 in one process
# and 9:32 in two: much of it waits on servers, subprocesses and schedules (the cluster test
# alone is ~3.5 min). `make test PYTEST_WORKERS=0` runs it in one process.
PYTEST_WORKERS ?= 2

test: $(STAMP) $(OLD_STAMP) $(CHROMIUM_STAMP) $(POSTGRES_STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q -n $(PYTEST_WORKERS) --dist loadfile

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

demo: $(STAMP)
	$(BIN)/protrade demo

bench: $(STAMP)
	$(BIN)/python -m benchmarks

reliability: $(STAMP) $(OLD_STAMP)
	# The issue asks for 30 s of two writers and a reader; `make test` runs the same check for 5 s.
	PROTRADE_RELIABILITY_SECONDS=30 $(BIN)/python -m pytest -q tests/reliability

# Several hosts on one machine (deployments/cluster/__main__.py): SeaweedFS, PostgreSQL, a Prefect
# server on it and two workers run the snapshot schedule for a few minutes, then it prints who ran
# which slot and stops everything. Options: make cluster CLUSTER_ARGS="--minutes 5 --every 20".
cluster: $(STAMP) $(POSTGRES_STAMP)
	$(BIN)/python -m deployments.cluster $(CLUSTER_ARGS)

clean:
	rm -rf $(VENV) $(OLD_VENV) .pytest_cache .ruff_cache
