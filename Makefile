# The two commands a user needs are `make demo` and `make test`; see README.md.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
UV := $(VENV)/bin/uv
UV_VERSION := 0.13.9
STAMP := $(VENV)/.installed
ARGS ?=

.PHONY: setup demo test airflow bench lock lint clean-home browser screenshots

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

# Debian's chromium and chromium-driver for the browser tests (tests/browser); apt, as root.
# Idempotent: does nothing when both are installed. `make test` fails loudly without them.
browser:
	@if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then \
		echo "chromium and chromedriver are installed"; \
	else \
		export DEBIAN_FRONTEND=noninteractive; \
		apt-get install -y --no-install-recommends chromium chromium-driver \
		|| { apt-get update && apt-get install -y --no-install-recommends chromium chromium-driver; }; \
	fi

# Regenerate the UI screenshots in docs/ (the browser tests save them as they go).
screenshots: setup browser
	UI_SCREENSHOTS_DIR=$(CURDIR)/docs $(PY) -m pytest tests/browser -q -p no:cacheprovider

# Any Airflow CLI command against the embedded default, e.g. make airflow ARGS="dags list"
airflow: setup
	$(PY) -m pipeline_tasks airflow $(ARGS)

bench: setup
	$(PY) benchmarks/bench_training_pipeline.py

lint: setup
	$(VENV)/bin/ruff check .

# Re-resolve the pinned lock after editing dependencies in pyproject.toml.
lock: setup
	$(UV) pip compile pyproject.toml --extra dev --python-version 3.11 -o requirements.lock

# Delete all state of the embedded default (Airflow DB, MLflow, lake, reports).
clean-home:
	rm -rf "$${MLOPS_HOME:-.mlops}"
