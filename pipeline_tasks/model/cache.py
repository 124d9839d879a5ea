"""Content-keyed caching of training: the same data, code, params and libraries make the same model.

``training_key`` hashes what decides the fitted model:

- the snapshot's content id (``dataset_version``: the sha256 of the snapshot's rows);
- the source of the modules that fit and record the model (``TRAINING_MODULES``), not the
  repository's commit: a change anywhere else keeps the key;
- the effective training inputs (target, task type, time column, search on or off, excluded and
  carried columns) and the config fields the fit reads (``FIT_CONFIG_FIELDS``);
- the versions of the libraries that make the model (``MODEL_LIBRARIES``).

A finished training run records its key (run tag ``mlops.cache_key``, the parts in
``cache_key.json``) and its result (``train_result.json``). ``find_cached_run`` returns that
result for a key seen before, so the train stage reuses the run and its model instead of fitting
again (``no_cache`` forces a fit). The reproduce command (``ops.reproduce``) checks a version's
recorded code key and libraries against today's with the same functions.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from pipeline_tasks.core import storage, tracking
from pipeline_tasks.core.config import PipelineConfig, source_digest

log = logging.getLogger(__name__)

#: The modules whose source decides the fitted model and what its run records.
TRAINING_MODULES = ("train", "features", "split", "estimator", "mlflow_run", "metrics", "plots")
#: Config fields the fit reads; the search's own only when a search runs.
FIT_CONFIG_FIELDS = ("seed", "holdout_fraction", "max_categories")
SEARCH_CONFIG_FIELDS = ("search_time_budget_s", "search_cv_folds")
#: Libraries whose versions decide the fitted model.
MODEL_LIBRARIES = ("scikit-learn", "numpy", "scipy", "pandas")

KEY_TAG = "mlops.cache_key"
CODE_TAG = "mlops.code_key"
LIBRARIES_TAG = "mlops.libraries"
KEY_FILE = "cache_key.json"
RESULT_FILE = "train_result.json"


@dataclass(frozen=True)
class TrainingKey:
    """The cache key of one fit and the parts it was computed from."""

    key: str
    code: str
    parts: dict[str, Any] = field(compare=False)

    def tags(self) -> dict[str, str]:
        """What the training run carries as tags (the reproduce command reads them back)."""
        return {KEY_TAG: self.key, CODE_TAG: self.code,
                LIBRARIES_TAG: json.dumps(self.parts["libraries"], sort_keys=True)}


def code_key() -> str:
    """sha256 over the source of ``TRAINING_MODULES`` (``config.source_digest``)."""
    return source_digest(Path(__file__).resolve().parent, TRAINING_MODULES)


def library_versions() -> dict[str, str]:
    """The installed versions of ``MODEL_LIBRARIES`` ("missing" for one that is not installed)."""
    found = {}
    for dist in MODEL_LIBRARIES:
        try:
            found[dist] = version(dist)
        except PackageNotFoundError:
            found[dist] = "missing"
    return found


def training_key(*, dataset_version: str, target: str, task_type: str, time_column: str | None,
                 run_search: bool, exclude_columns=(), holdout_extra=(),
                 config: PipelineConfig) -> TrainingKey:
    """The key of a fit with these inputs, this code and these libraries."""
    fields = FIT_CONFIG_FIELDS + (SEARCH_CONFIG_FIELDS if run_search else ())
    parts = {
        "dataset_version": dataset_version,
        "code": code_key(),
        "params": {"target": target, "task_type": task_type, "time_column": time_column or "",
                   "hyperparameter_search": bool(run_search),
                   "exclude_columns": sorted(dict.fromkeys(exclude_columns)),
                   "holdout_extra": sorted(dict.fromkeys(holdout_extra))},
        "config": {name: getattr(config, name) for name in fields},
        "libraries": library_versions(),
    }
    blob = json.dumps(parts, sort_keys=True, separators=(",", ":"), default=str)
    return TrainingKey(key=hashlib.sha256(blob.encode()).hexdigest(), code=parts["code"],
                       parts=parts)


def record_result(run_id: str, key: TrainingKey, result: dict[str, Any]) -> None:
    """Store the key's parts and the stage's result on the finished run: the run becomes a cache
    entry only once both are there (a fit killed before this is never reused)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    client.log_dict(run_id, key.parts, KEY_FILE)
    client.log_dict(run_id, result, RESULT_FILE)


def find_cached_run(model_name: str, key: TrainingKey,
                    config: PipelineConfig) -> dict[str, Any] | None:
    """The stored result of the newest finished run of ``model_name`` with this key whose
    holdout file is still there; None when there is none (a miss)."""
    import mlflow
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    tracking.configure_mlflow(config)
    client = MlflowClient()
    experiment = client.get_experiment_by_name(model_name)
    if experiment is None:
        return None
    # the key is hex digits: safe inside the filter's quotes
    runs = client.search_runs(
        [experiment.experiment_id],
        filter_string=f"tags.`{KEY_TAG}` = '{key.key}' and attributes.status = 'FINISHED'",
        order_by=["attributes.start_time DESC"], max_results=10)
    for run in runs:
        try:
            result = mlflow.artifacts.load_dict(f"{run.info.artifact_uri}/{RESULT_FILE}")
        except (MlflowException, OSError) as exc:
            log.info("run %s has key %s but no stored result (%s): not reused",
                     run.info.run_id, key.key[:12], type(exc).__name__)
            continue
        if result.get("run_id") != run.info.run_id:
            log.warning("run %s: its stored result names run %s: not reused", run.info.run_id,
                        result.get("run_id"))
            continue
        if not (result.get("holdout_uri") and storage.exists(result["holdout_uri"])):
            log.info("run %s has key %s but its holdout %s is gone: not reused",
                     run.info.run_id, key.key[:12], result.get("holdout_uri"))
            continue
        return result
    return None


@dataclass(frozen=True)
class JudgedBefore:
    """An earlier run already did all that a run on this batch would do: its validation passed
    for the same content and suite, its snapshot holds the same rows, and the model trained on it
    under today's cache key is a version judged against the current champion."""

    content_id: str  # the batch's content id: the snapshot's version id
    validated_in: str  # run key of the reused validation
    cache_key: str
    run_id: str
    experiment_id: str
    version: str

    def reason(self, model_name: str) -> str:
        return (f"cache hit (key {self.cache_key}): this batch is dataset version "
                f"{self.content_id[:12]}, validated by run {self.validated_in}, and the model "
                f"trained on it (run {self.run_id}) is {model_name} v{self.version} already, "
                "judged against the current champion; nothing new to validate, version, train, "
                "evaluate, register or deploy (no_cache runs them all)")


def judged_before(batch_uri: str, *, model_name: str, dataset_name: str, target: str,
                  task_type: str, time_column: str | None, run_search: bool,
                  holdout_extra=(), config: PipelineConfig) -> JudgedBefore | None:
    """What the rest of a training run on the raw batch at ``batch_uri`` would find, checked
    before it starts: the same answers ``validate`` (a reused passed result), ``version`` (an
    intact snapshot of the same content) and ``train`` (a cache hit whose version is judged
    against the current champion, ``registry.judged_version``) would give. None when any of
    them would do something new: the run then goes on as usual. The keys are those the stages
    compute (``validate.validation_key``, ``training_key``), so the two never disagree."""
    from pipeline_tasks.core import layout
    from pipeline_tasks.data.suites_io import find_suite_uri
    from pipeline_tasks.data.validate import reused_validation, validation_key
    from pipeline_tasks.data.versioning import (
        CorruptSnapshotError,
        content_hash,
        verify_snapshot_file,
    )
    from pipeline_tasks.model.registry import champion_contract, judged_version

    champion = champion_contract(model_name, config)
    suite_uri = find_suite_uri(model_name, config, champion, dataset_name=dataset_name)
    if suite_uri is None:  # the first run infers a suite: always validated
        return None
    df = storage.read_parquet(batch_uri)
    content = content_hash(df)
    validated = reused_validation(config, model_name, validation_key(
        df, suite_uri, target=target, champion=champion, content=content))
    if validated is None:
        return None
    if not storage.exists(layout.snapshot_manifest(config, content)):
        return None
    try:  # ``version`` would rewrite a damaged snapshot from this batch: let it
        verify_snapshot_file(layout.snapshot_data(config, content), content)
    except (CorruptSnapshotError, OSError) as exc:
        log.warning("dataset version %s: %s; the run goes on and rewrites it", content[:12], exc)
        return None
    key = training_key(dataset_version=content, target=target, task_type=task_type,
                       time_column=time_column, run_search=run_search,
                       holdout_extra=holdout_extra, config=config)
    cached = find_cached_run(model_name, key, config)
    if cached is None:
        return None
    judged = judged_version(model_name, cached["run_id"])
    if judged is None:
        return None
    return JudgedBefore(content_id=content, validated_in=validated.reused_from or "",
                        cache_key=key.key, run_id=cached["run_id"],
                        experiment_id=str(cached.get("experiment_id", "")), version=judged)
