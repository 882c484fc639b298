# Two commands matter: `make run` (the main job) and `make test` (what CI runs).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint demo bench reliability clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/protrade serve

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

demo: $(STAMP)
	$(BIN)/protrade demo

bench: $(STAMP)
	$(BIN)/python -m benchmarks

reliability: $(STAMP)
	# The issue asks for 30 s of two writers and a reader; `make test` runs the same check for 5 s.
	PROTRADE_RELIABILITY_SECONDS=30 $(BIN)/python -m pytest -q tests/reliability

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
