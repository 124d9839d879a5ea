# The two commands a user needs are `make demo` and `make test`; see README.md.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
UV := $(VENV)/bin/uv
UV_VERSION := 0.13.9
STAMP := $(VENV)/.installed
ARGS ?=

.PHONY: setup demo test airflow bench bench-drift lock lint clean-home

# Install from the lock into .venv. Idempotent: does nothing when the lock and pyproject are unchanged.
setup: $(STAMP)

# --compile-bytecode writes the .pyc files at install time: every Airflow task is a new process,
# and without them each one compiles sklearn/mlflow/GX from source again when the environment sets
# PYTHONDONTWRITEBYTECODE (seconds per task).
$(STAMP): requirements.lock pyproject.toml Makefile
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@test -x $(UV) || $(PY) -m pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)
	$(UV) pip sync --python $(PY) --compile-bytecode requirements.lock
	$(UV) pip install --python $(PY) --no-deps -e .
	@touch $(STAMP)

# Start Airflow + the MLflow UI, land the demo data, train once, keep serving until Ctrl-C.
demo: setup
	$(PY) -m pipeline_tasks demo

test: setup
	$(PY) -m pytest

# Any Airflow CLI command against the embedded default, e.g. make airflow ARGS="dags list"
airflow: setup
	$(PY) -m pipeline_tasks airflow $(ARGS)

bench: setup
	$(PY) benchmarks/bench_training_pipeline.py

# Drift check on 1M vs 1M rows x 20 columns: ours (sampled) vs Evidently's default on all rows.
bench-drift: setup
	$(PY) benchmarks/bench_drift.py $(ARGS)

lint: setup
	$(VENV)/bin/ruff check .

# Re-resolve the pinned lock after editing dependencies in pyproject.toml.
lock: setup
	$(UV) pip compile pyproject.toml --extra dev --python-version 3.11 -o requirements.lock

# Delete all state of the embedded default (Airflow DB, MLflow, lake, reports).
clean-home:
	rm -rf "$${MLOPS_HOME:-.mlops}"
