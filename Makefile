# authtrail developer entry points. `make up` runs the demo, `make test` runs every check.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: venv test lint typecheck unit up clean

# The venv is (re)built whenever pyproject.toml changes, so a fresh clone gets one.
$(STAMP): pyproject.toml
	rm -rf $(VENV)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

venv: $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy authtrail stream producers sinks schemas

unit: $(STAMP)
	$(BIN)/python -m pytest tests/unit -q

test: lint typecheck $(STAMP)
	$(BIN)/python -m pytest -q

# The main job: everything on this machine with demo traffic (Ctrl-C stops it).
up: $(STAMP)
	$(BIN)/authtrail up --demo

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
