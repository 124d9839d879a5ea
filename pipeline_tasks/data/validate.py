"""Validate a batch with Great Expectations; a critical failure quarantines it and stops the run.

The suite belongs to the model being trained (``model_name``), whatever the source path, and is
looked up in this order:

1. the suite the champion's data was validated against (its ``validation.suite_uri`` tag), so a
   contract that changed with a promoted version follows the champion (and a rollback);
2. the reviewed suite versioned in the repo (``config.repo_suites_dir/<model>.json``);
3. a baseline inferred on the model's first run (``config.suites_uri/<model>.json``);
4. a reviewed repo suite of the data it is trained on (``<source name>_<target>.json``, e.g. the
   flights feed's), so a new model on a reviewed feed starts from the reviewed checks, not from a
   baseline inferred from a batch that may itself be bad.

If none exists, a baseline is inferred from this batch and saved as 3. for review. On top of the
suite, every input of the champion's signature must be present with its type (critical): a batch
that lacks, renames or retypes one stops the run before anything is versioned. A run that is
meant to change the model's inputs (``allow_schema_change``) is checked against a suite inferred
from its own batch instead; evaluation then decides whether the change breaks the champion's
clients. Suite files are GX's own ExpectationSuite JSON, so a reviewer can edit them and copy them
into the repo. Each expectation carries GX's native ``severity``: a failed ``critical`` one
quarantines the batch and raises ``DataValidationError``; ``warning`` (and ``info``) failures are
logged and reported while the run goes on.

Data Docs go to ``reports/data_docs/<run_key>/<model>/``, one small site per validation: with an
ephemeral context, rebuilding a shared site would delete the pages of every earlier run.

This module is the entry point; the parts live beside it: ``suites_io`` (finding, reading and
naming suites), ``inference`` (baseline suites, type families, tolerances), ``gx_runner`` (the
checkpoint run and Data Docs) and ``summaries`` (short lines and the JSON report of a result).

Great Expectations and pandas are imported inside the functions: importing this module is cheap.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import re
from dataclasses import dataclass, field

from pipeline_tasks.core import layout, storage
from pipeline_tasks.core.config import PipelineConfig, source_digest
from pipeline_tasks.core.errors import ConfigError, DataValidationError
from pipeline_tasks.core.results import XComResult
from pipeline_tasks.core.schema import ModelContract
from pipeline_tasks.data.gx_runner import DATA_DOCS_SITE, run_checkpoint
from pipeline_tasks.data.inference import (
    FAMILY_LABEL,
    FAMILY_TYPE,
    NUMERIC_TYPES,
    InferenceTolerances,
    champion_input_checks,
    config_tolerances,
    infer_suite,
    target_check,
    type_expectation,
    type_family,
)
from pipeline_tasks.data.suites_io import (
    REPO_REF,
    as_uri,
    find_suite_uri,
    load_suite,
    proposed_suite_uri,
    resolve_suite_ref,
    suite_from_dict,
    suite_ref,
    with_expectations,
)
from pipeline_tasks.data.summaries import failure_line, result_json, schema_failed, summarise

# The names of the parts that callers knew as ``validate.<name>`` stay importable from here.
__all__ = [
    "DATA_DOCS_SITE", "FAMILY_LABEL", "FAMILY_TYPE", "NUMERIC_TYPES", "REPO_REF",
    "InferenceTolerances", "ValidationResult", "find_suite_uri", "infer_suite", "load_suite",
    "proposed_suite_uri", "resolve_suite_ref", "suite_from_dict", "suite_ref",
    "type_expectation", "type_family", "validate_dataset",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ValidationResult(XComResult):
    """What one validation did; ``to_dict()`` is small and JSON-able (for XCom)."""

    success: bool
    suite_name: str
    suite_uri: str
    suite_inferred: bool
    evaluated: int
    failed_critical: list[dict] = field(default_factory=list)
    failed_warning: list[dict] = field(default_factory=list)
    data_docs_uri: str = ""
    result_uri: str = ""
    quarantine_uri: str | None = None
    # what a model version records as its suite (``repo:<file>`` for a reviewed repo suite)
    suite_ref: str = ""
    champion_version: str | None = None  # whose signature the batch was also checked against
    # the run whose passed validation of the same content and suite was reused ("": validated)
    reused_from: str = ""

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def validate_dataset(
    data_uri: str,
    *,
    model_name: str,
    target: str,
    config: PipelineConfig,
    run_key: str,
    champion: ModelContract | None = None,
    allow_schema_change: bool = False,
    dataset_name: str | None = None,
    reuse: bool = False,
) -> ValidationResult:
    """Validate the Parquet batch at ``data_uri`` against the suite of ``model_name``.

    ``champion`` is the contract of the model's champion (``registry.champion_contract``): its
    suite is used, and its signature's inputs are required. With ``allow_schema_change`` the
    batch is checked against a suite inferred from itself (saved content-addressed under
    ``suites/<model>/`` once it passes), so a run may change the model's inputs.

    Writes the full result and the Data Docs under ``config.reports_uri`` (paths from ``run_key``).
    On a critical failure, copies the batch and its result to ``lake/quarantine/<run_key>/`` and
    raises ``DataValidationError`` naming each failed expectation.

    With ``reuse``, a batch whose content, suite, champion contract and validation code are
    those of an earlier passed validation (``validation_key``) gets that result back without
    running Great Expectations again (its report and Data Docs stay the earlier run's).
    """
    if not model_name or not re.fullmatch(r"[A-Za-z0-9._-]+", model_name):
        raise ConfigError(
            f"model_name must be a plain name (letters, digits, ._-), got {model_name!r}"
        )
    if not target:
        raise ConfigError("target must name the label column")
    tolerances = config_tolerances(config)
    df = storage.read_parquet(data_uri)
    log.info(
        "Validating %s (%d rows x %d columns) from %s", model_name, len(df), df.shape[1], data_uri
    )

    suite_uri = None if allow_schema_change else find_suite_uri(model_name, config, champion,
                                                                dataset_name=dataset_name)
    inferred = suite_uri is None
    if inferred:
        suite = infer_suite(
            df,
            dataset_name=model_name,
            target=target,
            max_categories=config.max_categories,
            tolerances=tolerances,
            source={"data_uri": data_uri, "run_key": run_key},
        )
        # Snapshot before GX adds ids to the expectations: the saved file stays clean for review.
        suite_json = suite.to_json_dict()
        suite_uri = (proposed_suite_uri(model_name, suite_json, config) if allow_schema_change
                     else layout.inferred_suite(config, model_name))
        log.info(
            "%s for %s: inferred a baseline of %d expectations",
            "Schema change allowed" if allow_schema_change else "No suite", model_name,
            len(suite.expectations),
        )
    else:
        key = validation_key(df, suite_uri, target=target, champion=champion)
        cached = reused_validation(config, model_name, key) if reuse else None
        if cached is not None:
            return cached
        suite = load_suite(suite_uri, default_name=model_name)
        log.info("Using suite %s (%d expectations)", suite_uri, len(suite.expectations))
    extra = target_check(suite, target)
    if champion is not None and not allow_schema_change:
        extra += champion_input_checks(champion)
    suite = with_expectations(suite, extra)

    docs_uri = layout.data_docs_dir(config, run_key, model_name)
    gx_result, page = run_checkpoint(df, suite, docs_uri=docs_uri, run_key=run_key)
    data_docs_uri = as_uri(storage.join(docs_uri, page))

    failed_critical, failed_warning, lines = summarise(gx_result, df, target)
    success = not failed_critical
    suite_saved = False
    if inferred and success:
        storage.atomic_write_json(suite_uri, suite_json)
        suite_saved = True
        log.warning("Saved an inferred baseline suite for review: %s", suite_uri)
    elif inferred:
        log.error(
            "Inferred baseline for %s not saved: this batch fails it critically", model_name
        )

    result_uri = layout.validation_result(config, run_key, model_name)
    quarantine_uri = None
    if not success:
        quarantine_uri = layout.quarantine_batch(config, run_key)
    result = ValidationResult(
        success=success,
        suite_name=suite.name,
        suite_uri=as_uri(suite_uri),
        suite_inferred=suite_saved,
        evaluated=int(gx_result.statistics.get("evaluated_expectations", len(gx_result.results))),
        failed_critical=failed_critical,
        failed_warning=failed_warning,
        data_docs_uri=data_docs_uri,
        result_uri=result_uri,
        quarantine_uri=quarantine_uri,
        suite_ref=suite_ref(suite_uri, config),
        champion_version=None if champion is None or allow_schema_change else champion.version,
    )
    report = {
        "model_name": model_name,
        "data_uri": data_uri,
        "run_key": run_key,
        "target": target,
        "summary": result.to_dict(),
        "validation_result": result_json(gx_result),
    }
    storage.atomic_write_json(result_uri, report)

    for item in failed_warning:
        log.warning("Validation %s on %s: %s", item["severity"], model_name, failure_line(item))
    if success:
        if not inferred:  # the same content and suite pass again: reused by a later run
            storage.atomic_write_json(layout.validation_cache_entry(config, model_name, key),
                                      {"run_key": run_key, "result": result.to_dict()})
        log.info(
            "Validation of %s passed: %d expectations, %d warning(s). Data Docs: %s",
            model_name,
            result.evaluated,
            len(failed_warning),
            data_docs_uri,
        )
        return result

    storage.copy(data_uri, quarantine_uri)
    storage.atomic_write_json(layout.quarantine_result(config, run_key), report)
    message = (
        f"{model_name}: {len(failed_critical)} critical expectation(s) failed: "
        + "; ".join(lines)
        + f". Batch quarantined at {quarantine_uri}. Data Docs: {data_docs_uri}"
    )
    if inferred:
        message += " (the baseline suite inferred from this batch was not saved)"
    elif schema_failed(failed_critical):
        message += (
            f". The batch does not fit {model_name}'s input contract. If the model's inputs are "
            "meant to change, trigger with 'Allow schema change': a candidate that breaks the "
            "champion's clients is then registered as a blocked challenger"
        )
    raise DataValidationError(message, result=result.to_dict())


#: The modules whose code decides a validation's outcome.
VALIDATION_MODULES = ("validate", "gx_runner", "suites_io", "inference", "summaries")


def validation_key(df, suite_uri: str, *, target: str, champion: ModelContract | None,
                   content: str | None = None) -> str:
    """sha256 of what decides a validation: the batch's content (``versioning.content_hash``,
    or ``content`` when the caller has it already), the suite file's bytes, the target, the
    champion's contract, the validation code and the Great Expectations version. Computed
    without importing Great Expectations."""
    from importlib.metadata import version
    from pathlib import Path

    from pipeline_tasks.data.versioning import content_hash

    code = source_digest(Path(__file__).resolve().parent, VALIDATION_MODULES)
    fs, path = storage.url_to_fs(suite_uri)
    with fs.open(path, "rb") as handle:
        suite = hashlib.sha256(handle.read()).hexdigest()
    parts = {"data": content or content_hash(df), "suite": suite, "target": target, "code": code,
             "champion": dataclasses.asdict(champion) if champion is not None else None,
             "great_expectations": version("great-expectations")}
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def reused_validation(config: PipelineConfig, model_name: str,
                      key: str) -> ValidationResult | None:
    """The earlier passed validation of ``key`` whose report is still there, or None."""
    entry_uri = layout.validation_cache_entry(config, model_name, key)
    if not storage.exists(entry_uri):
        return None
    try:
        entry = storage.read_json(entry_uri)
        result = ValidationResult.from_xcom({**entry["result"], "suite_inferred": False,
                                              "reused_from": str(entry["run_key"])})
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.warning("validation cache entry %s unreadable (%s): validating", entry_uri, exc)
        return None
    if not result.success or not storage.exists(result.result_uri):
        return None
    log.info("Validation cache hit: key %s; the batch's content, the suite and the champion "
             "contract are those run %s validated: its result is reused (%d expectations "
             "passed). Data Docs: %s", key, result.reused_from, result.evaluated,
             result.data_docs_uri)
    return result
