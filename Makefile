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

# --compile-bytecode: every flow run, worker, server and CLI call is a new interpreter; without
# .pyc files (uv writes none by default, and PYTHONDONTWRITEBYTECODE keeps Python from writing
# them) each one compiles Prefect, pandas, MLflow, Feast and GX from source again (~3x its import).
$(VENV)/.installed: $(UV) pyproject.toml uv.lock
	$(UV) sync --frozen --compile-bytecode --python $(PY_BOOT)
	touch $@

install: $(VENV)/.installed

demo: install
	$(VENV)/bin/python -m driftloop.demo --days $(DEMO_DAYS) --customers $(DEMO_CUSTOMERS)

# two pytest-xdist workers (the slow tests mostly wait on servers and subprocesses), the longest
# modules first (tests/conftest.py); one OpenMP thread per process: two workers' scikit-learn
# fits each spinning threads for every core made training 4x slower.
# `make test TEST_WORKERS=0` runs in one process.
TEST_WORKERS ?= 2
test: install
	OMP_NUM_THREADS=$${OMP_NUM_THREADS:-1} $(VENV)/bin/python -m pytest \
	  -n $(TEST_WORKERS) --dist loadscope --no-loadscope-reorder $(PYTEST_ARGS)

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

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
