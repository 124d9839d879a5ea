"""Rebuild a registered version from its lineage alone and check that it predicts the same.

``python -m pipeline_tasks reproduce MODEL VERSION`` (``make reproduce``):

1. reads what the version's training run recorded: the snapshot (URI and content id), the
   holdout, the target, task type, time column, search setting, the columns it excluded and
   carried, the config fields the fit read (seed included), the training code's key and the
   library versions (``model.cache``);
2. checks that the snapshot still hashes to its content id and that the holdout is there; a
   gone or changed input is an error that names it (exit 2);
3. fits again with those inputs into the scratch experiment ``<model>-reproduce``: no
   registration, no alias moves;
4. scores the holdout with the registered version and with the rebuilt model and compares the
   outputs (class probabilities and labels, or the regression values) exactly: ``identical``
   (exit 0) or ``differs`` with the share of rows that differ and the largest difference
   (exit 1). A training code key or a library version that is not today's is reported beside.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np

from pipeline_tasks.core import storage, tracking
from pipeline_tasks.core.config import PipelineConfig
from pipeline_tasks.core.errors import PipelineInputError
from pipeline_tasks.model import cache

log = logging.getLogger(__name__)

#: exit codes of the command
IDENTICAL, DIFFERS, INPUT_GONE = 0, 1, 2


class LineageInputGone(PipelineInputError):
    """Something the version's lineage names (the version, its run, snapshot or holdout) is gone
    or no longer the recorded content: the version cannot be rebuilt from it."""


@dataclass(frozen=True)
class Reproduction:
    """The outcome of one rebuild."""

    model_name: str
    version: str
    run_id: str
    rebuilt_run_id: str
    experiment: str
    dataset_version: str
    rows: int
    differing_rows: int
    max_difference: float
    compared: str  # what was compared: "predict_proba + predict" or "predict"
    code_key_recorded: str
    code_key_now: str
    libraries_recorded: dict[str, str] = field(default_factory=dict)
    libraries_now: dict[str, str] = field(default_factory=dict)

    @property
    def identical(self) -> bool:
        return self.differing_rows == 0

    @property
    def differing_share(self) -> float:
        return self.differing_rows / self.rows if self.rows else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "identical": self.identical,
                "differing_share": self.differing_share}

    def text(self) -> str:
        lines = [(f"{self.model_name} v{self.version} (run {self.run_id}, data "
                 f"{self.dataset_version[:12]}) rebuilt as run {self.rebuilt_run_id} in "
                 f"experiment {self.experiment}")]
        if self.identical:
            lines.append(f"identical: {self.rows} holdout rows, {self.compared} equal")
        else:
            lines.append(f"differs: {self.differing_rows} of {self.rows} holdout rows "
                         f"({self.differing_share:.2%}); largest difference "
                         f"{self.max_difference:.6g} ({self.compared})")
        if self.code_key_recorded and self.code_key_recorded != self.code_key_now:
            lines.append(f"note: the training code changed since (key {self.code_key_recorded[:12]}"
                         f" then, {self.code_key_now[:12]} now)")
        changed = {name: (then, self.libraries_now.get(name))
                   for name, then in self.libraries_recorded.items()
                   if self.libraries_now.get(name) != then}
        for name, (then, now) in sorted(changed.items()):
            lines.append(f"note: {name} {then} then, {now} now")
        return "\n".join(lines)


def reproduce(model_name: str, version: str, config: PipelineConfig) -> Reproduction:
    """Rebuild ``model_name`` v``version`` from its lineage and compare it on its holdout."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    from pipeline_tasks.core import model_artifacts
    from pipeline_tasks.data.versioning import CorruptSnapshotError, verify_snapshot_file
    from pipeline_tasks.model.features import normalize_features
    from pipeline_tasks.model.train import train_model

    tracking.configure_mlflow(config)
    tracking.quiet_telemetry()
    client = MlflowClient()
    try:
        run_id = client.get_model_version(model_name, str(version)).run_id
        run = client.get_run(run_id)
    except MlflowException as exc:
        raise LineageInputGone(f"{model_name} v{version}: the version or its training run is "
                               f"not in the registry ({exc.error_code})") from exc
    tags, params = run.data.tags, run.data.params
    recorded = _recorded_inputs(run, params)
    dataset_version = tags.get("dataset_version", "")
    snapshot_uri, holdout_uri = tags.get("snapshot_uri", ""), tags.get("holdout_uri", "")
    for what, uri in (("snapshot", snapshot_uri), ("holdout", holdout_uri)):
        if not uri or not storage.exists(uri):
            raise LineageInputGone(f"{model_name} v{version}: its {what} {uri or '(not recorded)'}"
                                   " is gone, so the version cannot be rebuilt from its lineage")
    try:
        verify_snapshot_file(snapshot_uri, dataset_version)
    except CorruptSnapshotError as exc:
        raise LineageInputGone(f"{model_name} v{version}: {exc}") from exc

    experiment = f"{model_name}-reproduce"
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    rebuilt = train_model(
        snapshot_uri, dataset_version=dataset_version, target=recorded["target"],
        model_name=model_name, experiment_name=experiment,
        config=config.with_overrides(**recorded["config"]),
        run_key=f"reproduce-{model_name}-v{version}-{stamp}",
        task_type=recorded["task_type"], time_column=recorded["time_column"] or None,
        run_search=recorded["hyperparameter_search"],
        exclude_columns=recorded["exclude_columns"], holdout_extra=recorded["holdout_extra"],
        lineage={"mlops.reproduces": f"{model_name}/{version}", "mlops.reproduces_run": run_id},
    )

    original = model_artifacts.load_verified(f"models:/{model_name}/{version}").model
    again = model_artifacts.load_verified(rebuilt.model_uri).model
    features = _feature_columns(run, original)
    holdout = storage.read_parquet(holdout_uri)
    missing = [c for c in features if c not in holdout.columns]
    if missing:
        raise LineageInputGone(f"{model_name} v{version}: its holdout {holdout_uri} lacks the "
                               f"input column(s) {', '.join(missing[:5])}")
    X = normalize_features(holdout[features])
    differing, largest, compared = compare_predictions(original, again, X)
    return Reproduction(
        model_name=model_name, version=str(version), run_id=run_id,
        rebuilt_run_id=rebuilt.run_id, experiment=experiment, dataset_version=dataset_version,
        rows=len(X), differing_rows=differing, max_difference=largest, compared=compared,
        code_key_recorded=tags.get(cache.CODE_TAG, ""), code_key_now=cache.code_key(),
        libraries_recorded=json.loads(tags.get(cache.LIBRARIES_TAG) or "{}"),
        libraries_now=cache.library_versions(),
    )


def compare_predictions(first, second, X) -> tuple[int, float, str]:
    """``(rows that differ, largest absolute difference, what was compared)`` between two
    fitted models on ``X``: class probabilities and labels when both have ``predict_proba``,
    else ``predict`` (numeric outputs by value, others by equality)."""
    rows = len(X)
    differs = np.zeros(rows, dtype=bool)
    largest = 0.0
    compared = "predict"
    if hasattr(first, "predict_proba") and hasattr(second, "predict_proba"):
        p1 = np.asarray(first.predict_proba(X), dtype="float64")
        p2 = np.asarray(second.predict_proba(X), dtype="float64")
        if p1.shape != p2.shape:  # other classes: every row differs
            return rows, float("inf"), "predict_proba (different classes)"
        gap = np.abs(p1 - p2)
        differs |= ~np.all((p1 == p2) | (np.isnan(p1) & np.isnan(p2)), axis=1)
        largest = float(np.nanmax(gap)) if gap.size else 0.0
        compared = "predict_proba + predict"
    y1, y2 = np.asarray(first.predict(X)), np.asarray(second.predict(X))
    if y1.dtype.kind in "fiub" and y2.dtype.kind in "fiub":
        a, b = y1.astype("float64"), y2.astype("float64")
        differs |= ~((a == b) | (np.isnan(a) & np.isnan(b)))
        if a.size:
            largest = max(largest, float(np.nanmax(np.abs(a - b))))
    else:
        label_differs = y1 != y2
        differs |= label_differs
        if label_differs.any():
            largest = max(largest, 1.0)
    return int(differs.sum()), largest, compared


def _recorded_inputs(run, params: dict[str, str]) -> dict[str, Any]:
    """The fit's inputs as the run recorded them: its ``cache_key.json`` (runs made since the
    cache exists), else its params (older runs: the resolved task type and time column)."""
    import mlflow
    from mlflow.exceptions import MlflowException

    try:
        parts = mlflow.artifacts.load_dict(f"{run.info.artifact_uri}/{cache.KEY_FILE}")
    except (MlflowException, OSError):
        parts = None
    if parts:
        return {**parts["params"], "config": dict(parts["config"])}
    config = {"seed": int(params["seed"]), "holdout_fraction": float(params["holdout_fraction"]),
              "max_categories": int(params["max_categories"])}
    search = params.get("search.enabled") == "True"
    if search:
        config["search_time_budget_s"] = float(params.get("search.budget_s", 0))
        if params.get("search.folds"):
            config["search_cv_folds"] = int(params["search.folds"])
    return {"target": params["target"], "task_type": params["task_type"],
            "time_column": params.get("time_column", ""), "hyperparameter_search": search,
            "exclude_columns": [], "holdout_extra": [], "config": config}


def _feature_columns(run, model) -> list[str]:
    """The version's input columns: its run's ``feature_columns.json``, else the model's own."""
    import mlflow
    from mlflow.exceptions import MlflowException

    try:
        return list(mlflow.artifacts.load_dict(
            f"{run.info.artifact_uri}/feature_columns.json")["features"])
    except (MlflowException, OSError, KeyError):
        return [str(c) for c in getattr(model, "feature_names_in_", [])]
