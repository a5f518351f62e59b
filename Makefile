# driftloop — every target installs what it needs first (idempotent).
SHELL := /bin/bash
PY_BOOT ?= python3
UV_VERSION := 0.13.8
TOOLS := .driftloop/tools
UV := $(TOOLS)/bin/uv
VENV := .venv
export DO_NOT_TRACK := true
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export GX_ANALYTICS_ENABLED := false
export MLFLOW_DISABLE_TELEMETRY := true
export UV_PROJECT_ENVIRONMENT := $(VENV)

DEMO_DAYS ?= 60
DEMO_CUSTOMERS ?= 2000
# `make up PREFECT_PORT=4300 MLFLOW_PORT=5300` (another free port is taken when one is busy)
PREFECT_PORT ?= 4200
MLFLOW_PORT ?= 5000

.PHONY: install demo test lint bench up down status clean

$(UV):
	$(PY_BOOT) -m venv $(TOOLS)
	$(TOOLS)/bin/pip install --quiet uv==$(UV_VERSION)

$(VENV)/.installed: $(UV) pyproject.toml uv.lock
	$(UV) sync --frozen --python $(PY_BOOT)
	touch $@

install: $(VENV)/.installed

demo: install
	$(VENV)/bin/python -m driftloop.demo --days $(DEMO_DAYS) --customers $(DEMO_CUSTOMERS)

test: install
	$(VENV)/bin/python -m pytest $(PYTEST_ARGS)

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

up: install
	$(VENV)/bin/driftloop up --prefect-port $(PREFECT_PORT) --mlflow-port $(MLFLOW_PORT)

down: install
	$(VENV)/bin/driftloop down

status: install
	$(VENV)/bin/driftloop status

bench: install
	$(VENV)/bin/python bench/run_all.py

clean:
	rm -rf data .driftloop/prefect reports
