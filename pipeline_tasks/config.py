"""The one typed, frozen configuration object of the pipeline.

Defaults put every piece of state under ``$MLOPS_HOME`` (``.mlops/`` at the repo root). Each field
can be overridden by an ``MLOPS_<FIELD>`` environment variable, and per run by trigger params
(``PipelineConfig.with_overrides``). Library functions take this object or plain values; they never
read Airflow Variables or Connections.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, get_type_hints

from pipeline_tasks.errors import ConfigError

PROJECT_DIR = Path(__file__).resolve().parent.parent
ENV_PREFIX = "MLOPS_"


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

    home: str = ""
    project_dir: str = str(PROJECT_DIR)
    airflow_home: str = ""
    dags_folder: str = str(PROJECT_DIR / "dags")
    plugins_folder: str = str(PROJECT_DIR / "plugins")
    mlflow_tracking_uri: str = ""
    mlflow_registry_uri: str = ""
    mlflow_artifact_uri: str = ""
    lake_uri: str = ""
    reports_uri: str = ""
    landing_uri: str = ""
    suites_uri: str = ""
    repo_suites_dir: str = str(PROJECT_DIR / "pipeline_tasks" / "suites")
    locks_dir: str = ""
    logs_dir: str = ""
    serving_dir: str = ""
    airflow_host: str = "127.0.0.1"
    airflow_port: int = 8080
    mlflow_host: str = "127.0.0.1"
    mlflow_port: int = 5000
    # Model server (pipeline_tasks.serving); its bearer token is MLOPS_SERVING_TOKEN, never here
    serving_target: str = "local"  # local | docker (pipeline_tasks.deploy)
    serving_host: str = "127.0.0.1"
    serving_docker_mem_limit: str = "1g"  # docker target: memory limit of a model container
    serving_port: int = 8800
    serving_max_rows: int = 10_000
    serving_max_body_bytes: int = 16 * 1024 * 1024
    serving_max_abs_value: float = 1e12
    prediction_log_flush_s: float = 5.0
    prediction_log_max_rows: int = 50_000
    # Training
    seed: int = 42
    holdout_fraction: float = 0.2
    search_time_budget_s: float = 120.0
    search_cv_folds: int = 3
    max_categories: int = 30
    # Gate (data, not literals in code): see pipeline_tasks.evaluate
    min_baseline_lift: float = 0.05
    min_champion_delta: float = 0.0
    min_primary_metric: float | None = None
    # Notifications (pipeline_tasks.notifications): Airflow connection id of a webhook; empty = off
    notify_conn_id: str = ""
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        home = Path(self.home).expanduser().resolve() if self.home else _home()
        object.__setattr__(self, "home", str(home))
        for name, value in _derived_defaults(home).items():
            if not getattr(self, name):
                object.__setattr__(self, name, value)
        if not self.mlflow_registry_uri:
            object.__setattr__(self, "mlflow_registry_uri", self.mlflow_tracking_uri)
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
        for name in ("serving_max_rows", "serving_max_body_bytes", "prediction_log_max_rows"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.serving_target not in ("local", "docker"):
            raise ConfigError(f"serving_target must be 'local' or 'docker', got "
                              f"{self.serving_target!r}")
        if not self.serving_max_abs_value > 0:
            raise ConfigError(f"serving_max_abs_value must be > 0, got {self.serving_max_abs_value}")
        if not self.prediction_log_flush_s > 0:
            raise ConfigError(
                f"prediction_log_flush_s must be > 0, got {self.prediction_log_flush_s}")
        if self.min_baseline_lift < 0:
            raise ConfigError(f"min_baseline_lift must be >= 0, got {self.min_baseline_lift}")

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
        return self.lake_uri.rstrip("/") + "/predictions"

    @property
    def demo_source_uri(self) -> str:
        return self.landing_uri.rstrip("/") + "/flights/"

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
        return dataclasses.replace(self, **clean)

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["airflow_url"] = self.airflow_url
        data["mlflow_ui_url"] = self.mlflow_ui_url
        data["serving_url"] = self.serving_url
        data["predictions_uri"] = self.predictions_uri
        data["demo_source_uri"] = self.demo_source_uri
        return data


def _coerce(name: str, value: Any, hint: Any) -> Any:
    """Turn an env-var string or a JSON param into the field's type, or say which field is bad."""
    text = str(hint)
    try:
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
    return PipelineConfig(**from_env).with_overrides(**overrides)


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
