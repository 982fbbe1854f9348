# geolesf: two commands for a fresh machine (only Python needed).
#   make demo   creates .venv if missing, installs geolesf, maps Indian Pines into demo_out/
#   make test   creates .venv if missing, installs geolesf[dev], runs the test suite

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
GEOLESF_DATA ?= $(abspath ../shared/data)
export GEOLESF_DATA

.PHONY: demo test venv bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $@

venv: $(VENV)/.installed

demo: $(VENV)/.installed
	$(BIN)/geolesf demo --out demo_out

test: $(VENV)/.installed
	$(BIN)/python -m pytest -q

bench: $(VENV)/.installed
	$(BIN)/python -m pip install -q -e ".[bench]"
	$(BIN)/python benchmarks/run_all.py

clean:
	rm -rf demo_out runs .pytest_cache
