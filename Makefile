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

# a catalog dataset name: the Indian Pines cube shipped in the package
DEMO_CUBE := indian_pines
DEMO_CKPT := s2mamba:indian_pines_dase

demo: $(VENV)/.installed
	$(BIN)/geolesf predict $(DEMO_CUBE) --model s2mamba --checkpoint $(DEMO_CKPT) --out demo_out/indian_pines_s2mamba.tif --overwrite
	$(BIN)/geolesf evaluate --checkpoint $(DEMO_CKPT) --out demo_out/evaluation.json --overwrite
	$(BIN)/geolesf export demo_out/indian_pines_s2mamba.tif --gpkg demo_out/indian_pines_s2mamba.gpkg --overwrite
	@echo "demo outputs in demo_out/: class map (.tif + .qml), preview (.png), GeoPackage, evaluation.json"

test: $(VENV)/.installed
	$(BIN)/python -m pytest -q

bench: $(VENV)/.installed
	$(BIN)/python -m pip install -q -e ".[bench]"
	$(BIN)/python benchmarks/bench_cli_startup.py
	$(BIN)/python benchmarks/bench_predict_imports.py
	$(BIN)/python benchmarks/bench_scan.py
	$(BIN)/python benchmarks/bench_baselines.py
	$(BIN)/python benchmarks/bench_s2mamba.py
	$(BIN)/python benchmarks/bench_predict.py
	$(BIN)/python benchmarks/bench_distributed.py
	$(BIN)/python benchmarks/report.py

clean:
	rm -rf demo_out runs .pytest_cache
