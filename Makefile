# authtrail developer entry points. `make up` runs the demo, `make test` runs every check.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: venv test lint typecheck unit up bench faults clean json-schema

# The venv is (re)built whenever a pyproject.toml changes, so a fresh clone gets one. Both
# distributions are installed from this tree (producers/ holds the SDK's, authtrail-producer),
# so pip never looks for authtrail-producer on an index.
$(STAMP): pyproject.toml producers/pyproject.toml hatch_build.py authtrail/_speedups.c authtrail/_hashing.c authtrail/_native_rows.c
	rm -rf $(VENV)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ./producers -e '.[test]'
	touch $(STAMP)

venv: $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy authtrail

unit: $(STAMP)
	$(BIN)/python -m pytest tests/unit -q

test: lint typecheck $(STAMP)
	$(BIN)/python -m pytest -q

# The auth event's JSON Schema, generated from schemas/auth_event.avsc (a unit test checks it).
json-schema: $(STAMP)
	$(BIN)/python -m authtrail.schemas.json_schema > schemas/auth_event.schema.json

# The main job: everything on this machine with demo traffic (Ctrl-C stops it).
up: $(STAMP)
	$(BIN)/authtrail up --demo

# Benchmarks: JSON, Markdown summary and PNG plots into benchmarks/results/ (docs/PERFORMANCE.md).
BENCH_STAMP := $(VENV)/.bench-installed
$(BENCH_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -e ./producers -e '.[test,bench]'
	touch $(BENCH_STAMP)

bench: $(BENCH_STAMP)
	$(BIN)/python -m benchmarks

# The long, seeded fault-injection run; rewrites the table in docs/RELIABILITY.md.
FAULT_ITERATIONS ?= 10
FAULT_SEED ?= 1
faults: $(STAMP)
	$(BIN)/python -m tests.faults --iterations $(FAULT_ITERATIONS) --seed $(FAULT_SEED) --report docs/RELIABILITY.md

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
