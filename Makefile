# The two commands a user needs are `make demo` and `make test`; see README.md.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
UV := $(VENV)/bin/uv
# uv itself comes from the lock too: its `uv==` entry and hashes (pip's hash-checking mode)
UV_FROM_LOCK := awk '/^uv==/ {p = 1; print; next} p && /^ +--hash=/ {print; next} {p = 0}' requirements.lock
STAMP := $(VENV)/.installed
ARGS ?=
# PROFILE=production.env: export that env file's variables first (the production profile:
# PostgreSQL, Celery workers, MLflow server; see docker/production.env.example and docs/production.md)
PROFILE ?=
WITH_PROFILE := $(if $(PROFILE),set -a && . "$(abspath $(PROFILE))" && set +a &&,)

.PHONY: setup demo demo-monitoring test test-integration test-faults replay airflow bench \
	bench-backfill bench-serving bench-serving-log bench-serving-venv bench-cache reproduce bench-drift bench-batch bench-evaluate bench-parse lock lint clean-home production-env production-db compose-env \
	image-wheels browser screenshots test-deps docs

# Install from the lock into .venv. Idempotent: does nothing when the lock and pyproject are unchanged.
setup: $(STAMP)

# --compile-bytecode writes the .pyc files at install time: every Airflow task is a new process,
# and without them each one compiles sklearn/mlflow/GX from source again when the environment sets
# PYTHONDONTWRITEBYTECODE (seconds per task).
# --require-hashes: every file installed must match one of the lock's sha256 hashes (a pin
# without hashes, or a download that differs, is an error); the bootstrap uv is checked the same way.
$(STAMP): requirements.lock pyproject.toml Makefile
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@test -x $(UV) || $(PY) -m pip install --quiet --disable-pip-version-check --no-deps \
		--require-hashes -r <($(UV_FROM_LOCK))
	$(UV) pip sync --python $(PY) --compile-bytecode --require-hashes requirements.lock
	$(UV) pip install --python $(PY) --no-deps -e .
	@touch $(STAMP)

# Start Airflow + the MLflow UI, land the demo data, train once, keep serving until Ctrl-C.
demo: setup
	$(WITH_PROFILE) $(PY) -m pipeline_tasks demo

# Everything the suite needs is set up here: the venv, the system packages (test-deps), the
# Docker engine and the local base image (docker/engine.sh, docker/base-image.sh).
test: setup test-deps
	@echo "==> the Docker engine and the local base image"
	@engine="$$(docker/engine.sh)" || { echo "make test needs a Docker engine: start one, or run" \
		"make test as root (Debian: it installs and starts docker.io)" >&2; exit 1; }; \
		eval "$$engine" && docker/base-image.sh >/dev/null && \
		echo "==> the whole test suite (unit, DAGs, end to end, faults, integration, browser; ~25 min)" && \
		$(PY) -m pytest

# Train on January, replay the following months, watch drift trigger retraining (docs/monitoring.md)
demo-monitoring: setup
	$(PY) -m pipeline_tasks demo-monitoring $(ARGS)

# Send days of demo flights to the served model, e.g. make replay ARGS="--from 2013-02-01 --to 2013-02-28"
replay: setup
	$(PY) -m pipeline_tasks replay $(ARGS)

# The fault-injection campaign: more trials per fault than `make test` runs (tests/faults/),
# e.g. make test-faults TRIALS=25 (seeded: FAULT_SEED replays a campaign)
TRIALS ?= 10
test-faults: setup
	@echo "==> fault injection, $(TRIALS) trials per fault (prints each trial and its outcome)"
	FAULT_TRIALS=$(TRIALS) $(PY) -m pytest tests/faults tests/e2e/test_scheduler_crash.py \
		-p no:cacheprovider -rA -s

# The production profile on throwaway PostgreSQL and Redis servers the tests start and remove.
test-integration: setup test-deps
	@echo "==> the production profile on PostgreSQL and Redis, and the compose file"
	$(PY) -m pytest tests/integration

# The system packages the tests need, from Debian's archive when missing (apt, as root):
# chromium + chromium-driver (tests/browser), a compose CLI (tests/integration/test_compose.py),
# the PostgreSQL and Redis server binaries (the throwaway servers of tests/conftest.py; the
# tests never use what listens on 5432 or 6379). Idempotent: does nothing when all are there.
# Not root, or no apt: stops at once and names the command to run.
APT := apt-get -o DPkg::Lock::Timeout=600
test-deps:
	@missing=""; \
	command -v chromium >/dev/null || missing="$$missing chromium"; \
	command -v chromedriver >/dev/null || missing="$$missing chromium-driver"; \
	{ docker compose version >/dev/null 2>&1 || command -v docker-compose >/dev/null; } \
		|| missing="$$missing docker-compose"; \
	{ ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1 || command -v pg_ctl >/dev/null; } \
		|| missing="$$missing postgresql"; \
	command -v redis-server >/dev/null || missing="$$missing redis-server"; \
	if [ -z "$$missing" ]; then echo "==> the tests' system packages are installed"; exit 0; fi; \
	if [ "$$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then \
		echo "make test needs:$$missing. Install them as root: sudo make test-deps" \
			"(Debian; elsewhere your system's packages of the same names)" >&2; exit 1; fi; \
	echo "==> installing$$missing from Debian's packages"; \
	export DEBIAN_FRONTEND=noninteractive; \
	$(APT) install -y --no-install-recommends $$missing \
		|| { $(APT) update && $(APT) install -y --no-install-recommends $$missing; }

# Only the browser's part of test-deps (for make screenshots).
browser:
	@if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then \
		echo "chromium and chromedriver are installed"; \
	else \
		export DEBIAN_FRONTEND=noninteractive; \
		$(APT) install -y --no-install-recommends chromium chromium-driver \
		|| { $(APT) update && $(APT) install -y --no-install-recommends chromium chromium-driver; }; \
	fi

# Regenerate the UI screenshots in docs/ (the browser tests save them as they go).
screenshots: setup browser
	UI_SCREENSHOTS_DIR=$(CURDIR)/docs $(PY) -m pytest tests/browser -q -p no:cacheprovider

# Any Airflow CLI command against the embedded default, e.g. make airflow ARGS="dags list"
airflow: setup
	$(WITH_PROFILE) $(PY) -m pipeline_tasks airflow $(ARGS)

# production.env from docker/production.env.example, with fresh secrets (never committed)
production-env: setup
	$(PY) -m pipeline_tasks production-env --out production.env

# docker/.env (secrets of docker/docker-compose.yaml) from docker/.env.example
compose-env: setup
	$(PY) -m pipeline_tasks production-env --template docker/.env.example --out docker/.env

# requirements.lock's wheels into docker/wheels/: docker/airflow.Dockerfile then builds offline
image-wheels: setup
	@echo "==> downloading requirements.lock's wheels into docker/wheels/"
	$(PY) -m pipeline_tasks image-wheels

# Create the databases the profile names, e.g. make production-db PROFILE=production.env
production-db: setup
	$(WITH_PROFILE) $(PY) -m pipeline_tasks create-databases

bench: setup
	@echo "==> benchmark: the DAG through the scheduler vs the same stages in one process (minutes)"
	$(PY) benchmarks/bench_training_pipeline.py

# Our model server vs mlflow models serve and MLServer 1.7.1, side by side (minutes); MLServer
# from its own venv (make bench-serving-venv), with the model libraries of our lock
MLSERVER_VENV ?= .venv-mlserver
bench-serving: setup bench-serving-venv
	$(PY) benchmarks/bench_serving.py --mlserver-venv $(MLSERVER_VENV) $(ARGS)

# only what the prediction log costs: the server with the log on and off, paired bursts (24 per
# scenario: on a shared machine a pair's ratio spreads by +-30 %, and their median needs that many
# to land within a few per cent), and at c=1 against the log-off server of the day that goal was
# set (~30 min)
LOG_ROUNDS ?= 24
bench-serving-log: setup
	$(PY) benchmarks/bench_serving.py --log-cost-only --log-rounds $(LOG_ROUNDS) $(ARGS)

bench-serving-venv:
	@test -x $(MLSERVER_VENV)/bin/mlserver || { python3 -m venv $(MLSERVER_VENV) && \
		$(MLSERVER_VENV)/bin/pip install -q "mlserver==1.7.1" "mlserver-mlflow==1.7.1" \
		"uvloop==0.21.0" $$(grep -oE '^(mlflow|skops|pandas|scikit-learn|numpy|scipy)==[^ ]+' \
		requirements.lock); }

# 7-day backfill: embedded default vs the production profile (needs PostgreSQL and Redis)
bench-backfill: setup
	@echo "==> benchmark: a 7-day backfill, embedded default vs production profile (minutes)"
	$(PY) benchmarks/bench_backfill.py

# Drift check on 1M vs 1M rows x 20 columns: ours (sampled) vs Evidently's default on all rows.
# DAG parsing, this checkout vs another, e.g. make bench-parse ARGS="--vs /tmp/base"
# (git worktree add /tmp/base <ref>)
bench-parse: setup
	@echo "==> benchmark: parsing the DAG files, side by side (seconds)"
	$(PY) benchmarks/bench_dag_parse.py $(ARGS)

bench-drift: setup
	@echo "==> benchmark: the drift check on 1M x 20, ours vs Evidently's default (minutes)"
	$(PY) benchmarks/bench_drift.py $(ARGS)

# The evaluate task with slices vs before them, e.g. make bench-evaluate ARGS="--before /tmp/before"
# (git worktree add /tmp/before <the commit before "Fairness and slices, step 1">)
bench-evaluate: setup
	@echo "==> benchmark: the evaluate task with slices and fairness vs before them (minutes)"
	$(PY) benchmarks/bench_evaluate.py $(ARGS)

# Batch scoring of 1M and 10M rows: ours vs mlflow models predict vs the obvious pandas script.
# A nightly run on unchanged data with the training cache vs without it (no_cache), scheduler
bench-cache: setup
	@echo "==> benchmark: nightly run on unchanged data, cached vs full (minutes)"
	$(PY) benchmarks/bench_cache.py $(ARGS)

# Rebuild a registered version from its lineage and compare its predictions (exit 1: differs),
# e.g. make reproduce MODEL=flights_is_late VERSION=1
reproduce: setup
	$(PY) -m pipeline_tasks reproduce "$(MODEL)" "$(VERSION)"

bench-batch: setup
	@echo "==> benchmark: batch scoring 1M and 10M rows, ours vs mlflow models predict (minutes)"
	$(PY) benchmarks/bench_batch_scoring.py $(ARGS)

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports

# Regenerate the configuration table in docs/configuration.md from PipelineConfig (a test
# fails when it is stale).
docs: setup
	$(PY) -m pipeline_tasks.ops.config_docs

# Re-resolve the pinned lock after editing dependencies in pyproject.toml. Existing pins are kept
# (uv prefers the versions already in the -o file); every pin gets the sha256 of its files.
lock: setup
	$(UV) pip compile pyproject.toml --extra dev --python-version 3.11 --generate-hashes \
		-o requirements.lock

# Delete all state of the embedded default (Airflow DB, MLflow, lake, reports).
clean-home:
	rm -rf "$${MLOPS_HOME:-.mlops}"
