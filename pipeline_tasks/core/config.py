"""The one typed, frozen configuration object of the pipeline.

Defaults put every piece of state under ``$MLOPS_HOME`` (``.mlops/`` at the repo root). Each field
can be overridden by an ``MLOPS_<FIELD>`` environment variable, and per run by trigger params
(``PipelineConfig.with_overrides``). Library functions take this object or plain values; they never
read Airflow Variables or Connections.

A little over 400 lines because the class lists every setting with the comment that documents it
(``docs/configuration.md`` is generated from them); the allow-list checks are ``allowlists``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, get_type_hints

from pipeline_tasks.core import layout, storage
from pipeline_tasks.core.allowlists import CONN_ID_PATTERN, root_problem
from pipeline_tasks.core.errors import ConfigError
from pipeline_tasks.core.http import redact_url, strip_userinfo

PROJECT_DIR = Path(__file__).resolve().parents[2]
ENV_PREFIX = "MLOPS_"
#: The demo's model (the flights feed, target is_late): the model the demo defaults apply to.
DEMO_MODEL = "flights_is_late"
#: What the demo model is sliced by (``slices_for``).
DEMO_SLICES = "carrier,origin"


def column_list(text: str | None) -> list[str]:
    """Comma-separated column names as a list; empty or "none" gives none."""
    if not text or text.strip().lower() == "none":
        return []
    return [c.strip() for c in text.split(",") if c.strip()]


def _home() -> Path:
    return Path(os.environ.get("MLOPS_HOME") or PROJECT_DIR / ".mlops").expanduser().resolve()


def _derived_defaults(home: Path) -> dict[str, str]:
    """Where each piece of state lives when only ``home`` is given."""
    return {
        "airflow_home": str(home / "airflow"),
        "mlflow_tracking_uri": f"sqlite:///{home / 'mlflow' / 'mlflow.db'}",
        "mlflow_artifact_uri": (home / "mlflow" / "artifacts").as_uri(),
        "lake_uri": (home / "lake").as_uri(),
        "reports_uri": (home / "reports").as_uri(),
        "landing_uri": (home / "landing").as_uri(),
        "suites_uri": (home / "suites").as_uri(),
        "locks_dir": str(home / "locks"),
        "logs_dir": str(home / "logs"),
        "serving_dir": str(home / "serving"),
    }


@dataclass(frozen=True)
class PipelineConfig:
    """Resolved settings. Paths are absolute; URIs are fsspec URIs (``file://`` by default)."""

    # Each field's comment (on its line, else the lines right above it) is its description in
    # docs/configuration.md (make docs); a "# --- Title ---" line heads a group of fields.
    # --- Where state lives: every path and URI below follows home unless it is set ---
    home: str = ""  # the root of all state (MLOPS_HOME); default: .mlops/ at the repo root
    project_dir: str = str(PROJECT_DIR)  # the checkout: DAGs, plugin, reviewed suites
    airflow_home: str = ""  # AIRFLOW_HOME: the SQLite DB, airflow.cfg, task logs
    dags_folder: str = str(PROJECT_DIR / "dags")  # the DAG files Airflow parses
    plugins_folder: str = str(PROJECT_DIR / "plugins")  # the Airflow plugin (mlops_airflow)
    mlflow_tracking_uri: str = ""  # MLflow runs: a store URI, or http:// of an MLflow server
    mlflow_registry_uri: str = ""  # the MLflow model registry; default: the tracking URI
    mlflow_artifact_uri: str = ""  # where MLflow keeps run and model files
    lake_uri: str = ""  # raw partitions, snapshots, quarantine, predictions, deployments
    reports_uri: str = ""  # Data Docs and validation results
    landing_uri: str = ""  # where source files land; trigger params may read under it
    suites_uri: str = ""  # suites inferred on a model's first run, waiting for review
    # reviewed Great Expectations suites, versioned in the repo (<model>.json)
    repo_suites_dir: str = str(PROJECT_DIR / "pipeline_tasks" / "data" / "suites")
    locks_dir: str = ""  # file locks of the embedded default (registry, serving supervisor)
    logs_dir: str = ""  # logs of the processes the stack starts
    serving_dir: str = ""  # serving supervisors' and model servers' logs, verified model files
    # --- The web UIs the stack starts ---
    airflow_host: str = "127.0.0.1"  # Airflow api-server address (login off: loopback only)
    airflow_port: int = 8080  # Airflow api-server port
    mlflow_host: str = "127.0.0.1"  # MLflow UI (or server) address
    mlflow_port: int = 5000  # MLflow UI (or server) port
    # --- Production profile (docs/production.md) ---
    # The store of the MLflow server the stack starts (default: the tracking URI, when that is a
    # store and not http://).
    mlflow_backend_store_uri: str = ""
    # A postgresql:// URL: the registry's compare-and-set lock is a PostgreSQL advisory lock
    # every worker shares; empty: a file lock under locks_dir (one machine).
    registry_lock_url: str = ""
    celery_workers: int = 2  # workers the stack starts when the executor is CeleryExecutor
    training_pool: str = "training"  # Airflow pool of the train task, made by the stack
    training_pool_slots: int = 2  # slots of that pool: at most this many fits run at once
    # --- Model server (docs/serving.md); its bearer token is MLOPS_SERVING_TOKEN, never here ---
    serving_target: str = "local"  # local | docker (pipeline_tasks.deploy.bluegreen)
    serving_host: str = "127.0.0.1"  # address of the stable endpoint
    serving_docker_mem_limit: str = "1g"  # docker target: memory limit of a model container
    serving_port: int = 8800  # the stable port of the endpoint (its models answer by name)
    serving_max_rows: int = 10_000  # rows per /predict request (more: 413)
    serving_max_body_bytes: int = 16 * 1024 * 1024  # bytes per request body, 16 MiB (more: 413)
    serving_max_abs_value: float = 1e12  # a number beyond this in a request: 422
    prediction_log_flush_s: float = 5.0  # the prediction log is written at least this often
    prediction_log_max_rows: int = 50_000  # or sooner, at this many buffered rows
    # at most this many rows wait for the writer; beyond, a request's rows are dropped and counted
    # (mlops_serving_prediction_log_dropped_rows), never waited for
    prediction_log_queue_rows: int = 500_000
    # --- Monitoring (pipeline_tasks.monitoring, dags/ml_drift_monitoring.py; docs/monitoring.md) ---
    training_schedule: str = "0 0 * * *"  # cron of ml_training_pipeline; "none": asset runs only
    drift_schedule: str = "30 0 * * *"  # cron of ml_drift_monitoring; "none": triggered runs only
    retrain_cooldown_days: float = 7.0  # at most one monitoring-triggered retrain per this period
    performance_max_drop: float = 0.05  # served primary metric below offline by more: retrain
    performance_min_rows: int = 200  # fewer labelled predictions: "insufficient_labels"
    label_delay_days: int = 1  # the performance check scores the interval this many days back
    label_lookahead_days: int = 3  # outcome files dated up to this long after an interval
    # True outcomes (row_id, event_time, target) per model: {"model": "file:///.../outcomes/"}
    # (MLOPS_MODEL_LABELS as JSON). A model with no entry uses labels_uri when it is set; else
    # only the demo model has labels (the demo's outcome feed), and the others get "no_labels".
    model_labels: dict = field(default_factory=dict)
    labels_uri: str = ""  # true outcomes of every model without a model_labels entry
    require_approval: bool = False  # a blessed model waits for a human before it is deployed
    # how long it waits (unanswered by then: the run fails and the champion keeps serving)
    approval_timeout_hours: float = 24.0
    # training runs at once (one per model in practice): a run waiting for approval blocks no
    # other model's nightly run
    training_max_active_runs: int = 8
    # --- Batch scoring (pipeline_tasks.scoring, dags/ml_batch_scoring.py; docs/batch.md) ---
    batch_scoring_schedule: str = "0 3 * * *"  # cron of ml_batch_scoring; "none": triggered only
    batch_chunk_rows: int = 100_000  # rows read, checked and scored at a time (bounds memory)
    batch_part_rows: int = 1_000_000  # rows per Parquet part of a scores partition
    # a run whose rejected rows (nulls in required inputs, values the suite calls critical) exceed
    # this share of its rows fails and publishes nothing; below it, they go to _rejects.parquet
    batch_max_reject_share: float = 0.05
    # Airflow connections a batch run may write scores to (MLOPS_ALLOWED_OUTPUT_CONN_IDS, a JSON
    # list or comma-separated). None by default; these need a role that may create, delete from
    # and insert into the output table, so they are kept apart from the read-only source list.
    allowed_output_conn_ids: tuple[str, ...] = ()
    # --- Training (pipeline_tasks.model.train) ---
    seed: int = 42  # seed of the split, the estimator and the search
    holdout_fraction: float = 0.2  # the last part by time (else a seeded sample) held out
    search_time_budget_s: float = 120.0  # time budget of the randomized hyperparameter search
    search_cv_folds: int = 3  # cross-validation folds of that search
    max_categories: int = 30  # one-hot categories per column; an inferred suite's category sets
    # --- Drift check (pipeline_tasks.monitoring.drift) ---
    # A check counts as drift when drifted columns / compared columns >= drift_share_threshold
    # (each column by Evidently's own per-column test at its default threshold).
    # 0.25 makes 3 drifted of 10 columns drift (and 1 of 4) while 2 of 10 stay "no drift":
    # Evidently's own default of 0.5 would wait until half the features moved, long after the
    # model has degraded; a lower value lets one noisy column in ten trigger a retrain.
    drift_share_threshold: float = 0.25
    # Fewer current (or reference) rows than this: "insufficient_data", neither drift nor error.
    # 500 keeps a day of the demo's flights (about 900) checkable.
    drift_min_rows: int = 500
    # Each side above this many rows is compared on a seeded uniform sample of this size (the
    # same tests and thresholds as on all rows; see the calibration tests). 0: compare all rows.
    drift_sample_rows: int = 50_000
    # Monitoring leaves out categorical features with more distinct training values than this
    # (ids such as tail numbers): at a day's traffic, Jensen-Shannon reads their sampling noise as
    # drift. They are listed in drift.json's skipped_columns.
    drift_max_categories: int = 50
    # Comma-separated inputs the drift check leaves out on purpose, e.g. "month,day": calendar
    # columns always differ from a training window, so they drift by construction.
    drift_ignore_columns: str = ""
    # --- Gate (data, not literals in code): see pipeline_tasks.model.policy ---
    min_baseline_lift: float = 0.05  # relative lift over the trivial baseline's metric (0..1)
    min_champion_delta: float = 0.0  # a candidate must beat the champion by more than this
    min_primary_metric: float | None = None  # absolute floor (a ceiling for RMSE); None: none
    # --- Slices and fairness (pipeline_tasks.model.slices, model.fairness; docs/fairness.md) ---
    # Inputs the gate also judges slice by slice: categorical columns by value, numeric ones in
    # slice_bins quantile bins (comma-separated; "none": no slices). Per model in
    # model_slice_columns (MLOPS_MODEL_SLICE_COLUMNS as JSON: {"model": "carrier,origin"}); the
    # demo model slices by carrier and origin unless told otherwise.
    slice_columns: str = ""  # the columns every model is sliced by (unless it has its own)
    model_slice_columns: dict = field(default_factory=dict)  # per model: {"model": "a,b"}
    slice_bins: int = 4  # quantile bins of a numeric slice column
    min_slice_rows: int = 100  # a slice with fewer holdout rows is reported, not gated
    # a gated slice whose candidate metric is worse than the champion's by more than this, beyond
    # the bootstrap confidence interval, blocks the candidate even if it wins overall
    max_slice_regression: float = 0.05
    slice_bootstrap_rounds: int = 200  # bootstrap resamples of each slice's confidence interval
    slice_confidence: float = 0.95  # the level of that interval
    # Columns fairness is measured over (Fairlearn), inputs or not, when the source carries them
    # (comma-separated); per model in model_sensitive_columns (JSON, like model_slice_columns).
    sensitive_columns: str = ""  # fairness columns of every model (unless it has its own)
    model_sensitive_columns: dict = field(default_factory=dict)  # per model: {"model": "a,b"}
    # optional: a candidate whose fairness gap (max of demographic parity and equalized odds
    # differences; the worst-group metric gap for regression) exceeds this is not blessed
    max_fairness_gap: float | None = None
    # --- Credentials from Airflow Connections (docs/production.md); operator-set, not params ---
    # Airflow connection of the MLflow tracking server (any secrets backend: AIRFLOW_CONN_*, the
    # metadata DB, Vault...). When it exists it wins over mlflow_tracking_uri: its host (or extra
    # "tracking_uri", "registry_uri"), its login/password or extra "token" (MLflow's
    # MLFLOW_TRACKING_* variables, set in the task and UI processes only). Absent: the
    # MLOPS_MLFLOW_* settings as they are. Empty: never looked up.
    mlflow_conn_id: str = "mlflow_default"
    # Airflow connection of the lake's object store: when it exists, its extra (JSON) replaces
    # lake_storage_options (login/password become key/secret for s3://). Empty: never looked up.
    lake_conn_id: str = "mlops_lake"
    # fsspec options of the lake's object store (MLOPS_LAKE_STORAGE_OPTIONS as JSON, e.g.
    # {"key": ..., "secret": ..., "client_kwargs": {"endpoint_url": ...}} for s3://), used for
    # every URI of the lake's protocol. Secret values are masked in task logs and never printed.
    lake_storage_options: dict = field(default_factory=dict)
    # --- Notifications (pipeline_tasks.ops.notifications) ---
    notify_conn_id: str = ""  # Airflow connection id of a webhook; empty = off
    # --- What trigger params may reach (docs/security.md); trigger params cannot change these ---
    # A param naming data (the training DAG's source, the drift DAG's current and labels) must lie
    # under landing_uri or one of these roots (MLOPS_ALLOWED_SOURCE_ROOTS: a JSON list or
    # comma-separated). Local paths are compared after resolving symlinks and '..'; other schemes
    # (s3://bucket/prefix/, https://host/path/) are reachable only when listed here.
    allowed_source_roots: tuple[str, ...] = ()
    # Airflow connections a run's sql_conn_id may name (MLOPS_ALLOWED_SQL_CONN_IDS, same format).
    # None by default: list only connections whose database role is read-only (docs/security.md).
    allowed_sql_conn_ids: tuple[str, ...] = ()
    # Settings read by name (MLOPS_EXTRA as JSON): "train_threads", the OpenMP threads of a fit
    # (default 1); "validation", how loose an inferred suite's bounds are
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        home = Path(self.home).expanduser().resolve() if self.home else _home()
        object.__setattr__(self, "home", str(home))
        for name, value in _derived_defaults(home).items():
            if not getattr(self, name):
                object.__setattr__(self, name, value)
        if not self.mlflow_registry_uri:
            object.__setattr__(self, "mlflow_registry_uri", self.mlflow_tracking_uri)
        if not self.mlflow_backend_store_uri and not self.mlflow_tracking_uri.startswith("http"):
            object.__setattr__(self, "mlflow_backend_store_uri", self.mlflow_tracking_uri)
        # a list or text given for a tuple field is coerced by load_config / with_overrides
        self._check()

    def _check(self) -> None:
        if not 0.0 < self.holdout_fraction < 0.9:
            raise ConfigError(f"holdout_fraction must be in (0, 0.9), got {self.holdout_fraction}")
        if self.search_time_budget_s < 0:
            raise ConfigError(
                f"search_time_budget_s must be >= 0, got {self.search_time_budget_s}"
            )
        if self.search_cv_folds < 2:
            raise ConfigError(f"search_cv_folds must be >= 2, got {self.search_cv_folds}")
        if not 0.0 <= self.batch_max_reject_share <= 1.0:
            raise ConfigError(f"batch_max_reject_share must be in [0, 1] (a share of the rows), "
                              f"got {self.batch_max_reject_share}")
        for name in ("serving_max_rows", "serving_max_body_bytes", "prediction_log_max_rows",
                     "prediction_log_queue_rows",
                     "batch_chunk_rows", "batch_part_rows"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.training_pool_slots < 1 or self.celery_workers < 0:
            raise ConfigError(f"training_pool_slots must be >= 1 and celery_workers >= 0, got "
                              f"{self.training_pool_slots} and {self.celery_workers}")
        if self.registry_lock_url and not self.registry_lock_url.startswith("postgresql"):
            raise ConfigError(f"registry_lock_url must be a postgresql:// URL (or empty for a "
                              f"file lock), got {self.registry_lock_url.split('://')[0]}://...")
        if self.serving_target not in ("local", "docker"):
            raise ConfigError(f"serving_target must be 'local' or 'docker', got "
                              f"{self.serving_target!r}")
        if not self.serving_max_abs_value > 0:
            raise ConfigError(f"serving_max_abs_value must be > 0, got {self.serving_max_abs_value}")
        if not self.prediction_log_flush_s > 0:
            raise ConfigError(
                f"prediction_log_flush_s must be > 0, got {self.prediction_log_flush_s}")
        for name in ("retrain_cooldown_days", "performance_max_drop", "label_delay_days",
                     "label_lookahead_days", "performance_min_rows"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be >= 0, got {getattr(self, name)}")
        if not self.approval_timeout_hours > 0:
            raise ConfigError(
                f"approval_timeout_hours must be > 0, got {self.approval_timeout_hours}")
        if not 0.0 <= self.min_baseline_lift <= 1.0:
            raise ConfigError(f"min_baseline_lift must be in [0, 1] (a relative lift), got "
                              f"{self.min_baseline_lift}")
        if self.min_champion_delta < 0:
            raise ConfigError(f"min_champion_delta must be >= 0 (a worse model is never "
                              f"promoted), got {self.min_champion_delta}")
        if self.training_max_active_runs < 1:
            raise ConfigError(f"training_max_active_runs must be >= 1, got "
                              f"{self.training_max_active_runs}")
        for name in ("model_slice_columns", "model_sensitive_columns"):
            value = getattr(self, name)
            if not isinstance(value, dict) or not all(
                    isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
                raise ConfigError(f"{name} must map model names to comma-separated column "
                                  "names (JSON object of strings)")
        if self.slice_bins < 2 or self.min_slice_rows < 1 or self.slice_bootstrap_rounds < 10:
            raise ConfigError(f"slice_bins must be >= 2, min_slice_rows >= 1 and "
                              f"slice_bootstrap_rounds >= 10, got {self.slice_bins}, "
                              f"{self.min_slice_rows} and {self.slice_bootstrap_rounds}")
        if not 0.5 <= self.slice_confidence < 1.0:
            raise ConfigError(f"slice_confidence must be in [0.5, 1), got {self.slice_confidence}")
        if self.max_slice_regression < 0 or (self.max_fairness_gap is not None
                                             and self.max_fairness_gap < 0):
            raise ConfigError("max_slice_regression and max_fairness_gap must be >= 0")
        if not isinstance(self.model_labels, dict) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in self.model_labels.items()):
            raise ConfigError("model_labels must map model names to labels URIs (JSON object "
                              "of strings)")
        for root in self.allowed_source_roots:
            problem = root_problem(root)
            if problem:
                raise ConfigError(f"allowed_source_roots (MLOPS_ALLOWED_SOURCE_ROOTS): {root!r} "
                                  f"{problem}")
        for field_name in ("mlflow_conn_id", "lake_conn_id"):
            conn_id = getattr(self, field_name)
            if conn_id and not re.fullmatch(CONN_ID_PATTERN, conn_id):
                raise ConfigError(f"{field_name} (MLOPS_{field_name.upper()}): {conn_id!r} is not "
                                  f"an Airflow connection id (letters, digits, '_', '-', '.')")
        if not isinstance(self.lake_storage_options, dict):
            raise ConfigError("lake_storage_options (MLOPS_LAKE_STORAGE_OPTIONS) must be a JSON "
                              "object of fsspec options")
        for field_name in ("allowed_sql_conn_ids", "allowed_output_conn_ids"):
            for conn_id in getattr(self, field_name):
                if not re.fullmatch(CONN_ID_PATTERN, conn_id):
                    raise ConfigError(f"{field_name} (MLOPS_{field_name.upper()}): {conn_id!r} "
                                      f"is not an Airflow connection id (letters, digits, '_', "
                                      f"'-', '.')")

    @property
    def source_roots(self) -> tuple[str, ...]:
        """Where trigger params may point: ``landing_uri``, then ``allowed_source_roots``."""
        return (self.landing_uri, *self.allowed_source_roots)

    @property
    def drift_ignored(self) -> set[str]:
        """``drift_ignore_columns`` as a set of column names."""
        return {c.strip() for c in self.drift_ignore_columns.split(",") if c.strip()}

    @property
    def airflow_url(self) -> str:
        return f"http://{self.airflow_host}:{self.airflow_port}"

    @property
    def mlflow_ui_url(self) -> str:
        return f"http://{self.mlflow_host}:{self.mlflow_port}"

    @property
    def serving_url(self) -> str:
        return f"http://{self.serving_host}:{self.serving_port}"

    @property
    def predictions_uri(self) -> str:
        return layout.predictions_root(self)  # the owner of lake paths

    @property
    def demo_source_uri(self) -> str:
        return self.landing_uri.rstrip("/") + "/flights/"

    @property
    def outcomes_uri(self) -> str:
        """Where the demo model's true outcomes land: ``labels_uri``, else the demo feed's."""
        return self.labels_uri or self.landing_uri.rstrip("/") + "/flights_outcomes/"

    def labels_for(self, model_name: str, source: str | None = None) -> str | None:
        """Where ``model_name``'s true outcomes land: its ``model_labels`` entry, else
        ``labels_uri``, else the demo's outcome feed for a demo model only (the demo model, or
        one trained on the demo feed, ``source``); None: the model has no labels."""
        if self.model_labels.get(model_name):
            return self.model_labels[model_name]
        if self.labels_uri:
            return self.labels_uri
        demo_feed = bool(source) and source.rstrip("/") == self.demo_source_uri.rstrip("/")
        return self.outcomes_uri if model_name == DEMO_MODEL or demo_feed else None

    def slices_for(self, model_name: str) -> list[str]:
        """The columns ``model_name`` is sliced by: its ``model_slice_columns`` entry, else
        ``slice_columns``, else carrier and origin for the demo model; "none": no slices."""
        text = self.model_slice_columns.get(model_name) or self.slice_columns or (
            DEMO_SLICES if model_name == DEMO_MODEL else "")
        return column_list(text)

    def sensitive_for(self, model_name: str) -> list[str]:
        """The columns fairness is measured over for ``model_name``."""
        return column_list(self.model_sensitive_columns.get(model_name)
                           or self.sensitive_columns)

    def with_overrides(self, **overrides: Any) -> PipelineConfig:
        """A copy with the given fields replaced (``None`` values are ignored), type-checked."""
        known = {f.name for f in fields(self)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise ConfigError(f"unknown configuration field(s): {', '.join(unknown)}")
        hints = get_type_hints(PipelineConfig)
        clean = {
            name: _coerce(name, value, hints[name])
            for name, value in overrides.items()
            if value is not None
        }
        if "home" in clean and clean["home"] != self.home:
            # Paths derived from the old home follow the new one; explicit ones stay.
            old = _derived_defaults(Path(self.home))
            for name, value in old.items():
                if name not in clean and getattr(self, name) == value:
                    clean[name] = ""
            if "mlflow_registry_uri" not in clean and (
                self.mlflow_registry_uri == self.mlflow_tracking_uri
            ):
                clean["mlflow_registry_uri"] = ""
            if "mlflow_backend_store_uri" not in clean and (
                self.mlflow_backend_store_uri == self.mlflow_tracking_uri
            ):
                clean["mlflow_backend_store_uri"] = ""
        if clean.get("mlflow_tracking_uri", self.mlflow_tracking_uri) != self.mlflow_tracking_uri:
            for name in ("mlflow_registry_uri", "mlflow_backend_store_uri"):  # they followed it
                if name not in clean and getattr(self, name) == self.mlflow_tracking_uri:
                    clean[name] = ""
        return dataclasses.replace(self, **clean)

    def to_dict(self) -> dict[str, Any]:
        """The settings as JSON-able values, never with a password held in a URL."""
        data = {name: list(value) if isinstance(value, tuple) else value
                for name, value in dataclasses.asdict(self).items()}
        for name, key, text in url_values(self):
            if key is None:
                data[name] = redact_url(text)
            elif isinstance(getattr(self, name), tuple):  # a listed root: without any userinfo
                data[name][key] = strip_userinfo(text)
            else:
                data[name][key] = redact_url(text)
        data["lake_storage_options"] = redact_options(self.lake_storage_options)
        data["airflow_url"] = self.airflow_url
        data["mlflow_ui_url"] = self.mlflow_ui_url
        data["serving_url"] = self.serving_url
        data["predictions_uri"] = self.predictions_uri
        data["demo_source_uri"] = self.demo_source_uri
        data["outcomes_uri"] = self.outcomes_uri
        return data


def url_values(config: PipelineConfig) -> Iterator[tuple[str, str | int | None, str]]:
    """Every text of ``config`` that may be a URL holding a password, as ``(field, key, text)``:
    a text field (key None), a text value of a mapping field (its key), an item of a list field
    (its index). What ``to_dict`` redacts and the Airflow glue masks in task logs."""
    for f in fields(config):
        value = getattr(config, f.name)
        if isinstance(value, str):
            yield f.name, None, value
        elif isinstance(value, dict):
            yield from ((f.name, k, v) for k, v in value.items() if isinstance(v, str))
        elif isinstance(value, tuple):
            yield from ((f.name, i, v) for i, v in enumerate(value) if isinstance(v, str))


#: Option names whose values are secrets (fsspec's key/secret/token, Azure's account_key...).
SECRET_OPTION = re.compile(r"(?i)(key|secret|token|password|passwd|credential|sas|signature)")


def secret_option_values(options: Any, secret: bool = False) -> Iterator[str]:
    """Every text of ``options`` (nested dicts and lists) held under a secret-sounding name."""
    if isinstance(options, dict):
        for key, value in options.items():
            yield from secret_option_values(value, secret or bool(SECRET_OPTION.search(str(key))))
    elif isinstance(options, (list, tuple)):
        for value in options:
            yield from secret_option_values(value, secret)
    elif secret and isinstance(options, str) and options:
        yield options


def redact_options(options: Any, secret: bool = False) -> Any:
    """``options`` with every value under a secret-sounding name shown as ``***``."""
    if isinstance(options, dict):
        return {key: redact_options(value, secret or bool(SECRET_OPTION.search(str(key))))
                for key, value in options.items()}
    if isinstance(options, (list, tuple)):
        return [redact_options(value, secret) for value in options]
    return "***" if secret and options not in (None, "") else options


def _coerce(name: str, value: Any, hint: Any) -> Any:
    """Turn an env-var string or a JSON param into the field's type, or say which field is bad."""
    text = str(hint)
    try:
        if "tuple" in text:  # a list: a JSON array, or comma-separated text
            if value is None:
                return None
            items = value
            if isinstance(value, str):
                items = json.loads(value) if value.strip().startswith("[") else value.split(",")
            if isinstance(items, str) or not all(isinstance(i, str) for i in items):
                raise TypeError("expected a list of strings")
            return tuple(i.strip() for i in items if i.strip())
        if value is None or value == "":
            return None if "None" in text else value
        if hint is bool:
            if isinstance(value, str):
                return value.strip().lower() in {"1", "true", "yes", "on"}
            return bool(value)
        if hint is int:
            return int(value)
        if hint is float or "float" in text:
            return float(value)
        if hint is dict:
            return json.loads(value) if isinstance(value, str) else dict(value)
        return str(value)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"configuration field {name!r}: cannot use {value!r} ({exc})") from exc


def load_config(**overrides: Any) -> PipelineConfig:
    """Defaults, then ``MLOPS_*`` environment variables, then ``overrides``."""
    hints = get_type_hints(PipelineConfig)
    from_env: dict[str, Any] = {}
    for f in fields(PipelineConfig):
        env_name = ENV_PREFIX + f.name.upper()
        if env_name in os.environ:
            from_env[f.name] = _coerce(f.name, os.environ[env_name], hints[f.name])
    config = PipelineConfig(**from_env).with_overrides(**overrides)
    storage.configure(config)  # the process-wide fsspec options follow the loaded config
    return config


def dataset_name(source: str, target: str) -> str:
    """A stable, readable name for a (source, target) pair: the default model and suite name.

    ``file:///x/landing/flights/`` with target ``is_late`` gives ``flights_is_late``; a SQL query
    gives ``sql_<short hash>_<target>``.
    """
    import hashlib
    import re

    text = source.strip()
    if re.match(r"(?is)^\s*(select|with)\b", text):
        stem = "sql_" + hashlib.sha256(text.encode()).hexdigest()[:8]
    else:
        path = re.sub(r"[*?\[].*$", "", text.split("://", 1)[-1]).rstrip("/")
        stem = path.rsplit("/", 1)[-1] or "dataset"
        stem = re.sub(r"(\.csv\.gz|\.csv|\.parquet|\.pq)$", "", stem, flags=re.IGNORECASE)
    name = re.sub(r"[^A-Za-z0-9]+", "_", f"{stem}_{target}").strip("_").lower()
    return name or "dataset"


def source_digest(package_dir: str | Path, modules: tuple[str, ...]) -> str:
    """sha256 over the source of ``modules`` (names without ``.py``) of one package folder, name
    and bytes of each in order, line endings normalised: the code key of one step."""
    import hashlib

    digest = hashlib.sha256()
    for name in modules:
        digest.update(name.encode() + b"\0")
        digest.update((Path(package_dir) / f"{name}.py").read_bytes().replace(b"\r\n", b"\n"))
        digest.update(b"\0")
    return digest.hexdigest()


def code_version() -> str:
    """Package version plus the git commit of the checkout, when there is one (no subprocess)."""
    from pipeline_tasks import __version__

    git = PROJECT_DIR / ".git"
    try:
        head = (git / "HEAD").read_text().strip()
        if head.startswith("ref: "):
            ref = head[5:]
            ref_file = git / ref
            if ref_file.exists():
                head = ref_file.read_text().strip()
            else:
                packed = (git / "packed-refs").read_text()
                head = next(line.split()[0] for line in packed.splitlines() if line.endswith(ref))
        return f"{__version__}+g{head[:12]}"
    except (OSError, StopIteration):
        return __version__
