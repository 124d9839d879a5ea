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

Great Expectations and pandas are imported inside the functions: importing this module is cheap.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import math
import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline_tasks.core import storage
from pipeline_tasks.core.config import PipelineConfig
from pipeline_tasks.core.errors import ConfigError, DataValidationError
from pipeline_tasks.core.schema import ModelContract

if TYPE_CHECKING:
    import pandas as pd
    from great_expectations.core.expectation_validation_result import (
        ExpectationSuiteValidationResult,
    )
    from great_expectations.expectations.expectation import Expectation

log = logging.getLogger(__name__)

# Not "local_site": the ephemeral context already has a site of that name in a random tmp dir.
DATA_DOCS_SITE = "pipeline_data_docs"

# Type families. Numeric lists every numpy and pandas-nullable int/float dtype, plus the Python
# int/float checked value by value when a column has object dtype (so text in a numeric column
# fails, and an int column that became float64 because of nulls passes).
# fmt: off
NUMERIC_TYPES = [
    "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
    "float16", "float32", "float64",
    "Int8Dtype", "Int16Dtype", "Int32Dtype", "Int64Dtype",
    "UInt8Dtype", "UInt16Dtype", "UInt32Dtype", "UInt64Dtype", "Float32Dtype", "Float64Dtype",
    "int", "float",
]
# fmt: on
# ExpectColumnValuesToBeOfType compares the dtype's scalar type: "str" matches object columns
# holding str values and both StringDtype storages; "Timestamp" is a tz-aware datetime column
# (ExpectColumnValuesToBeInTypeList cannot match DatetimeTZDtype); "datetime64" a naive one.
FAMILY_TYPE = {
    "string": "str",
    "bool": "bool",
    "datetime_tz": "Timestamp",
    "datetime": "datetime64",
    "category": "CategoricalDtypeType",
}
FAMILY_LABEL = {
    "numeric": "a numeric type (int/float)",
    "string": "text (str)",
    "bool": "bool",
    "datetime_tz": "a tz-aware timestamp",
    "datetime": "a naive datetime64",
    "category": "category",
}


@dataclass(frozen=True)
class InferenceTolerances:
    """How loose an inferred baseline is. Override with ``config.extra["validation"]``."""

    target_max_null: float = 0.10  # critical: at least this share of nulls is always allowed
    null_slack: float = 0.05  # warning: allowed null share = observed + max(slack, observed)
    range_slack: float = 0.10  # warning: numeric range widened by this share of its span
    range_mostly: float = 0.99
    value_set_mostly: float = 0.95
    max_value_set_share: float = 0.5  # a column is categorical if distinct <= share * non-null


@dataclass(frozen=True)
class ValidationResult:
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
) -> ValidationResult:
    """Validate the Parquet batch at ``data_uri`` against the suite of ``model_name``.

    ``champion`` is the contract of the model's champion (``registry.champion_contract``): its
    suite is used, and its signature's inputs are required. With ``allow_schema_change`` the
    batch is checked against a suite inferred from itself (saved content-addressed under
    ``suites/<model>/`` once it passes), so a run may change the model's inputs.

    Writes the full result and the Data Docs under ``config.reports_uri`` (paths from ``run_key``).
    On a critical failure, copies the batch and its result to ``lake/quarantine/<run_key>/`` and
    raises ``DataValidationError`` naming each failed expectation.
    """
    if not model_name or not re.fullmatch(r"[A-Za-z0-9._-]+", model_name):
        raise ConfigError(
            f"model_name must be a plain name (letters, digits, ._-), got {model_name!r}"
        )
    if not target:
        raise ConfigError("target must name the label column")
    tolerances = _tolerances(config)
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
                     else storage.join(config.suites_uri, f"{model_name}.json"))
        log.info(
            "%s for %s: inferred a baseline of %d expectations",
            "Schema change allowed" if allow_schema_change else "No suite", model_name,
            len(suite.expectations),
        )
    else:
        suite = load_suite(suite_uri, default_name=model_name)
        log.info("Using suite %s (%d expectations)", suite_uri, len(suite.expectations))
    extra = _target_check(suite, target)
    if champion is not None and not allow_schema_change:
        extra += _champion_input_checks(champion)
    suite = _with_expectations(suite, extra)

    docs_uri = storage.join(config.reports_uri, "data_docs", run_key, model_name)
    gx_result, page = _run_checkpoint(df, suite, docs_uri=docs_uri, run_key=run_key)
    data_docs_uri = _as_uri(storage.join(docs_uri, page))

    failed_critical, failed_warning, lines = _summarise(gx_result, df, target)
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

    result_uri = storage.join(
        config.reports_uri, "validation", run_key, model_name, "validation_result.json"
    )
    quarantine_uri = None
    if not success:
        quarantine_uri = storage.join(config.lake_uri, "quarantine", run_key, "part.parquet")
    result = ValidationResult(
        success=success,
        suite_name=suite.name,
        suite_uri=_as_uri(suite_uri),
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
        "validation_result": _result_json(gx_result),
    }
    storage.atomic_write_json(result_uri, report)

    for item in failed_warning:
        log.warning("Validation %s on %s: %s", item["severity"], model_name, _line(item))
    if success:
        log.info(
            "Validation of %s passed: %d expectations, %d warning(s). Data Docs: %s",
            model_name,
            result.evaluated,
            len(failed_warning),
            data_docs_uri,
        )
        return result

    storage.copy(data_uri, quarantine_uri)
    storage.atomic_write_json(
        storage.join(quarantine_uri.rpartition("/")[0], "validation_result.json"), report
    )
    message = (
        f"{model_name}: {len(failed_critical)} critical expectation(s) failed: "
        + "; ".join(lines)
        + f". Batch quarantined at {quarantine_uri}. Data Docs: {data_docs_uri}"
    )
    if inferred:
        message += " (the baseline suite inferred from this batch was not saved)"
    elif _schema_failed(failed_critical):
        message += (
            f". The batch does not fit {model_name}'s input contract. If the model's inputs are "
            "meant to change, trigger with 'Allow schema change': a candidate that breaks the "
            "champion's clients is then registered as a blocked challenger"
        )
    raise DataValidationError(message, result=result.to_dict())


# --- suites -----------------------------------------------------------------------------------

#: ``suite_ref`` prefix of a reviewed suite in the repo (its path differs between checkouts).
REPO_REF = "repo:"


def find_suite_uri(model_name: str, config: PipelineConfig,
                   champion: ModelContract | None = None,
                   dataset_name: str | None = None) -> str | None:
    """The champion's suite, else the model's reviewed repo suite, else one inferred on its
    first run, else the reviewed repo suite of its dataset, else ``None``. A champion whose
    recorded suite is gone is an error, not a silent fallback."""
    if champion is not None and champion.suite_uri:
        uri = resolve_suite_ref(champion.suite_uri, config)
        if not storage.exists(uri):
            raise ConfigError(
                f"champion v{champion.version} of {model_name} was validated against the suite "
                f"{uri}, which no longer exists: restore it, or re-run with 'Allow schema change'"
            )
        return uri
    candidates = [(config.repo_suites_dir, model_name), (config.suites_uri, model_name)]
    if dataset_name and dataset_name != model_name:
        candidates.append((config.repo_suites_dir, dataset_name))
    for base, name in candidates:
        uri = storage.join(base, f"{name}.json")
        if storage.exists(uri):
            return uri
    return None


def suite_ref(uri: str, config: PipelineConfig) -> str:
    """How a model version names its suite: ``repo:<file>`` for a reviewed repo suite."""
    repo = storage.join(config.repo_suites_dir, "")
    if uri.startswith(repo):
        return REPO_REF + uri[len(repo):]
    return _as_uri(uri)


def resolve_suite_ref(ref: str, config: PipelineConfig) -> str:
    if ref.startswith(REPO_REF):
        return storage.join(config.repo_suites_dir, ref[len(REPO_REF):])
    return ref


def proposed_suite_uri(model_name: str, suite_json: dict, config: PipelineConfig) -> str:
    """Where a suite inferred for a schema change is kept: named by its content, so versions
    that record it keep finding the same file."""
    import hashlib
    import json

    digest = hashlib.sha256(json.dumps(suite_json, sort_keys=True, default=str).encode())
    return storage.join(config.suites_uri, model_name, f"{digest.hexdigest()[:16]}.json")


#: MLflow signature types -> the type family the batch's column must have.
_SIGNATURE_FAMILY = {"long": "numeric", "integer": "numeric", "double": "numeric",
                     "float": "numeric", "string": "string", "boolean": "bool"}


def _champion_input_checks(champion: ModelContract) -> list:
    """Every input of the champion's signature must be in the batch, with its type (critical):
    the suite alone may not name them all (a reviewed suite, or one the champion predates)."""
    import great_expectations.expectations as gxe

    why = f"Input of champion v{champion.version}: its clients send this column."
    checks = []
    for column, spec in champion.inputs.items():
        checks.append(gxe.ExpectColumnToExist(column=column, severity="critical",
                                              meta={"why": why}))
        family = _SIGNATURE_FAMILY.get(spec.get("type"))
        if family:
            checks.append(type_expectation(column, family, why=why))
    return checks


def _with_expectations(suite, extra: list):
    """``suite`` plus the run-time checks it does not already hold. A new suite object: adding
    to a loaded one would need a GX data context to store it in."""
    if not extra:
        return suite
    gx = _import_gx()
    kept = list(suite.expectations)
    for exp in extra:
        if not any(type(suite)._expectations_are_equalish(exp, old) for old in kept):
            kept.append(exp)
    return gx.ExpectationSuite(name=suite.name, expectations=kept,
                               suite_parameters=suite.suite_parameters or None,
                               meta=suite.meta or None, notes=suite.notes)


def _schema_failed(failed: list[dict]) -> bool:
    kinds = {"expect_table_columns_to_match_set", "expect_column_to_exist", *_TYPE_EXPECTATIONS}
    return any(item["expectation"] in kinds for item in failed)


# Keys of an expectation in GX's suite JSON that we pass on; "id" and "rendered_content" belong to
# a stored context and are dropped so that an edited or copied file loads anywhere.
_EXPECTATION_KEYS = ("type", "kwargs", "meta", "notes", "description", "severity")


def load_suite(uri: str, *, default_name: str):
    """Read an ExpectationSuite JSON file (``suite.to_json_dict()`` format) and check every entry.

    GX silently drops an expectation it cannot build; here a bad entry is a ``ConfigError`` that
    says which one, so a typo in a reviewed suite cannot switch a check off.
    """
    try:
        data = storage.read_json(uri)
    except ValueError as exc:
        raise ConfigError(f"suite {uri} is not valid JSON: {exc}") from exc
    return suite_from_dict(data, default_name=default_name, source=uri)


def suite_from_dict(data: Any, *, default_name: str, source: str = "suite"):
    gx = _import_gx()
    from great_expectations.expectations.expectation_configuration import (
        ExpectationConfiguration,
    )

    if not isinstance(data, dict) or not isinstance(data.get("expectations", []), list):
        raise ConfigError(f"{source}: expected a JSON object with an 'expectations' list")
    expectations = []
    for index, raw in enumerate(data.get("expectations") or []):
        if not isinstance(raw, dict):
            raise ConfigError(f"{source}: expectation #{index} is not an object")
        entry = dict(raw)
        if "type" not in entry and "expectation_type" in entry:  # GX 0.x files
            entry["type"] = entry.pop("expectation_type")
        entry = {key: entry[key] for key in _EXPECTATION_KEYS if entry.get(key) is not None}
        entry.setdefault("kwargs", {})
        try:
            expectations.append(ExpectationConfiguration(**entry).to_domain_obj())
        except Exception as exc:  # GX raises several types here; re-raised with the entry named
            raise ConfigError(
                f"{source}: expectation #{index} ({entry.get('type')}) is not valid: {exc}"
            ) from exc
    return gx.ExpectationSuite(
        name=str(data.get("name") or default_name),
        expectations=expectations,
        suite_parameters=data.get("suite_parameters") or None,
        meta=data.get("meta") or None,
        notes=data.get("notes"),
    )


def _target_check(suite, target: str) -> list:
    """Every run checks that its target column exists, whatever the suite says."""
    import great_expectations.expectations as gxe

    for exp in suite.expectations:
        if (
            exp.expectation_type == "expect_column_to_exist"
            and getattr(exp, "column", None) == target
        ):
            return []
    return [
        gxe.ExpectColumnToExist(
            column=target,
            severity="critical",
            meta={"why": "Added at run time: the target of this run must be a column of the data."},
        )
    ]


def infer_suite(
    df: pd.DataFrame,
    *,
    dataset_name: str,
    target: str,
    max_categories: int = 30,
    tolerances: InferenceTolerances | None = None,
    source: dict | None = None,
):
    """A baseline suite from one batch: schema and target are critical, distributions warnings."""
    gx = _import_gx()
    import great_expectations.expectations as gxe

    tol = tolerances or InferenceTolerances()
    n_rows = len(df)
    exps: list[Expectation] = [
        gxe.ExpectTableColumnsToMatchSet(
            column_set=[str(c) for c in df.columns],
            exact_match=True,
            severity="critical",
            meta={"why": "Schema: downstream steps expect exactly these columns."},
        ),
        gxe.ExpectTableRowCountToBeBetween(
            min_value=1, severity="critical", meta={"why": "An empty batch cannot be used."}
        ),
    ]
    for column in df.columns:
        series = df[column]
        name = str(column)
        family = type_family(series)
        is_target = name == target
        if family:
            exps.append(
                type_expectation(
                    name, family, why=f"Schema: the column was {family} when inferred."
                )
            )
        null_share = float(series.isna().mean()) if n_rows else 0.0
        non_null = series.dropna()
        if is_target:
            exps.append(
                gxe.ExpectColumnToExist(
                    column=name, severity="critical", meta={"why": "Target: the label column."}
                )
            )
            allowed = min(0.99, max(tol.target_max_null, 2 * null_share))
            exps.append(
                gxe.ExpectColumnValuesToNotBeNull(
                    column=name,
                    mostly=_round_down(1 - allowed),
                    severity="critical",
                    meta={
                        "why": f"Target: at most {allowed:.0%} of labels may be missing "
                        f"({null_share:.1%} when inferred)."
                    },
                )
            )
            values = _low_cardinality_values(non_null, max_categories, tol, force=True)
            if values is not None:
                exps.append(
                    gxe.ExpectColumnValuesToBeInSet(
                        column=name,
                        value_set=values,
                        severity="critical",
                        meta={"why": "Target: the label takes only these values."},
                    )
                )
                continue
        else:
            allowed = null_share + max(tol.null_slack, null_share)
            if allowed < 1:
                exps.append(
                    gxe.ExpectColumnValuesToNotBeNull(
                        column=name,
                        mostly=_round_down(1 - allowed),
                        severity="warning",
                        meta={"why": f"Null rate was {null_share:.1%} when inferred."},
                    )
                )
        if family == "numeric" and len(non_null):
            bounds = _slack_range(non_null, tol.range_slack)
            if bounds:
                exps.append(
                    gxe.ExpectColumnValuesToBeBetween(
                        column=name,
                        min_value=bounds[0],
                        max_value=bounds[1],
                        mostly=tol.range_mostly,
                        severity="warning",
                        meta={
                            "why": f"Range {_num(non_null.min())}..{_num(non_null.max())} when "
                            f"inferred, widened by {tol.range_slack:.0%} of its span."
                        },
                    )
                )
        elif family in ("string", "category") and not is_target:
            values = _low_cardinality_values(non_null, max_categories, tol)
            if values is not None:
                exps.append(
                    gxe.ExpectColumnValuesToBeInSet(
                        column=name,
                        value_set=values,
                        mostly=tol.value_set_mostly,
                        severity="warning",
                        meta={"why": f"Categorical: {len(values)} values seen when inferred."},
                    )
                )
    meta = {
        "pipeline": {
            "status": "inferred baseline: review it, then copy it to pipeline_tasks/data/suites/",
            "target": target,
            "rows": n_rows,
            **(source or {}),
        }
    }
    return gx.ExpectationSuite(name=dataset_name, expectations=exps, meta=meta)


def type_family(series: pd.Series) -> str | None:
    """numeric / string / bool / datetime(_tz) / category, or ``None`` when no type check fits."""
    import pandas as pd
    from pandas.api import types as ptypes

    dtype = series.dtype
    if isinstance(dtype, pd.CategoricalDtype):
        return "category"
    if ptypes.is_bool_dtype(dtype):
        return "bool"
    if ptypes.is_numeric_dtype(dtype):
        return "numeric"
    if isinstance(dtype, pd.DatetimeTZDtype):
        return "datetime_tz"
    if ptypes.is_datetime64_dtype(dtype):
        return "datetime"
    if ptypes.is_string_dtype(dtype) or dtype == object:
        inferred = pd.api.types.infer_dtype(series, skipna=True)
        return {
            "string": "string",
            "integer": "numeric",
            "floating": "numeric",
            "mixed-integer-float": "numeric",
            "boolean": "bool",
        }.get(inferred)
    return None


def type_expectation(column: str, family: str, *, why: str, severity: str = "critical"):
    """The GX expectation that checks a column's type family (see NUMERIC_TYPES, FAMILY_TYPE)."""
    import great_expectations.expectations as gxe

    if family == "numeric":
        return gxe.ExpectColumnValuesToBeInTypeList(
            column=column, type_list=list(NUMERIC_TYPES), severity=severity, meta={"why": why}
        )
    return gxe.ExpectColumnValuesToBeOfType(
        column=column, type_=FAMILY_TYPE[family], severity=severity, meta={"why": why}
    )


def _low_cardinality_values(non_null, max_categories: int, tol: InferenceTolerances, force=False):
    try:
        distinct = non_null.unique()
    except TypeError:  # unhashable values (lists, dicts)
        return None
    if not len(distinct) or len(distinct) > max_categories:
        return None
    if not force and len(distinct) > tol.max_value_set_share * len(non_null):
        return None
    values = [_plain(v) for v in distinct]
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        if set(values) <= {0, 1}:  # a binary label seen with one class only still allows both
            values = [0, 1]
        return sorted(values)
    return sorted(values, key=str)


def _slack_range(non_null, slack: float) -> tuple[float, float] | None:
    lo, hi = float(non_null.min()), float(non_null.max())
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return None
    span = hi - lo or abs(hi) or 1.0
    new_lo, new_hi = lo - slack * span, hi + slack * span
    if lo >= 0:
        new_lo = max(0.0, new_lo)
    from pandas.api import types as ptypes

    if ptypes.is_integer_dtype(non_null.dtype):
        return float(math.floor(new_lo)), float(math.ceil(new_hi))
    return _round_sig(new_lo, math.floor), _round_sig(new_hi, math.ceil)


def _round_sig(value: float, rounding) -> float:
    """Round outward to 4 significant digits, so the suite stays readable."""
    if value == 0:
        return 0.0
    scale = 10 ** (math.floor(math.log10(abs(value))) - 3)
    return float(rounding(value / scale) * scale)


def _round_down(value: float) -> float:
    return max(0.0, math.floor(value * 1000) / 1000)


def _tolerances(config: PipelineConfig) -> InferenceTolerances:
    overrides = (config.extra or {}).get("validation") or {}
    known = {f.name for f in dataclasses.fields(InferenceTolerances)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ConfigError(f"unknown extra.validation setting(s): {', '.join(unknown)}")
    return InferenceTolerances(**{k: float(v) for k, v in overrides.items()})


# --- running GX -------------------------------------------------------------------------------


def _import_gx():
    """Import GX quietly: no usage statistics, no INFO flood, no progress bars."""
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    for name in ("great_expectations", "great_expectations._docs_decorators"):
        logger = logging.getLogger(name)
        if logger.level == logging.NOTSET:  # leave a level someone chose alone
            logger.setLevel(logging.WARNING)
    import great_expectations as gx

    # This module sets itself to INFO on import and then logs each ephemeral context it makes.
    noisy = logging.getLogger("great_expectations.data_context.types.base")
    if noisy.level == logging.INFO:
        noisy.setLevel(logging.WARNING)
    return gx


def _run_checkpoint(
    df: pd.DataFrame, suite, *, docs_uri: str, run_key: str
) -> tuple[ExpectationSuiteValidationResult, str]:
    """Validate ``df`` once with a checkpoint that also renders Data Docs into ``docs_uri``.

    The site is built in a local temporary folder and then copied file by file with atomic writes,
    so the same code serves ``file://`` and remote report stores. Returns the GX result and the
    validation page's path relative to the site.
    """
    gx = _import_gx()
    from great_expectations.checkpoint import UpdateDataDocsAction
    from great_expectations.core.run_identifier import RunIdentifier
    from great_expectations.data_context.types.base import ProgressBarsConfig

    with tempfile.TemporaryDirectory(prefix="gx-docs-") as build_dir:
        context = gx.get_context(mode="ephemeral")
        context.variables.progress_bars = ProgressBarsConfig(globally=False)
        context.add_data_docs_site(
            site_name=DATA_DOCS_SITE,
            site_config={
                "class_name": "SiteBuilder",
                "show_how_to_buttons": False,
                "store_backend": {
                    "class_name": "TupleFilesystemStoreBackend",
                    "base_directory": build_dir,
                },
                "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
            },
        )
        asset = context.data_sources.add_pandas("pipeline").add_dataframe_asset("batch")
        batch_definition = asset.add_batch_definition_whole_dataframe("whole_batch")
        suite = context.suites.add(suite)
        definition = context.validation_definitions.add(
            gx.ValidationDefinition(
                name=f"{suite.name}-validation", data=batch_definition, suite=suite
            )
        )
        checkpoint = context.checkpoints.add(
            gx.Checkpoint(
                name=f"{suite.name}-checkpoint",
                validation_definitions=[definition],
                actions=[
                    UpdateDataDocsAction(name="update_data_docs", site_names=[DATA_DOCS_SITE])
                ],
                result_format="SUMMARY",
            )
        )
        run_id = RunIdentifier(run_name=_run_name(run_key), run_time=_run_time(run_key))
        checkpoint_result = checkpoint.run(batch_parameters={"dataframe": df}, run_id=run_id)
        ((identifier, gx_result),) = checkpoint_result.run_results.items()
        page = "/".join(("validations", *identifier.to_tuple())) + ".html"
        if not (Path(build_dir) / page).is_file():
            page = "index.html"  # rendering failed (GX logs why); the index still lists the run
        for path in sorted(Path(build_dir).rglob("*")):
            if path.is_file():
                rel = path.relative_to(build_dir).as_posix()
                storage.atomic_write_bytes(storage.join(docs_uri, rel), path.read_bytes())
    return gx_result, page


def _run_name(run_key: str) -> str:
    last = run_key.rstrip("/").rpartition("/")[2]
    return re.sub(r"[^A-Za-z0-9._=-]+", "_", last.removeprefix("run_id=")) or "run"


def _run_time(run_key: str) -> dt.datetime:
    """The data interval's end when the run key has one, so a retry writes the same page."""
    match = re.search(r"interval_end=(\d{4}-\d{2}-\d{2})", run_key)
    if match:
        return dt.datetime.fromisoformat(match.group(1)).replace(tzinfo=dt.UTC)
    return dt.datetime.now(dt.UTC)


def _result_json(gx_result) -> dict:
    data = gx_result.to_json_dict()
    meta = data.get("meta") or {}
    params = meta.get("batch_parameters")
    if isinstance(params, dict) and "dataframe" in params:  # never serialise the data itself
        meta["batch_parameters"] = {**params, "dataframe": "<in-memory DataFrame>"}
    return data


def _as_uri(uri: str) -> str:
    """Plain local paths become ``file://`` URIs; URIs are returned as they are."""
    if "://" in uri:
        return uri
    return Path(uri).resolve().as_uri()


# --- turning GX results into short, human lines -----------------------------------------------


_TYPE_EXPECTATIONS = (
    "expect_column_values_to_be_in_type_list",
    "expect_column_values_to_be_of_type",
)


def _summarise(
    gx_result, df: pd.DataFrame, target: str
) -> tuple[list[dict], list[dict], list[str]]:
    """Failed expectations split by severity, plus one message line per critical problem."""
    critical: list[dict] = []
    warning: list[dict] = []
    columns = {str(c) for c in df.columns}
    reported_missing: set[str] = set()
    for item in gx_result.results:
        if item.success:
            continue
        config = item.expectation_config
        severity = _severity(config)
        column = config.kwargs.get("column")
        entry = {
            "expectation": config.type,
            "column": column,
            "severity": severity,
            "observed": _observed(item, df, target),
        }
        if severity == "critical":
            critical.append(entry)
            if config.type == "expect_table_columns_to_match_set":
                reported_missing |= set(_mismatch(item).get("missing") or [])
        elif severity == "warning":
            warning.append(entry)
        else:
            log.info("Validation info: %s", _line(entry))
    # A missing or wrongly typed column makes its other checks fail too: name the cause once.
    type_failed = {
        e["column"] for e in critical if e["expectation"] in _TYPE_EXPECTATIONS and e["column"]
    }
    lines: list[str] = []
    for entry in critical:
        column = entry["column"]
        if column is not None and column not in columns and column in reported_missing:
            continue  # already named in "missing columns: [...]"
        if column in type_failed and entry["expectation"] not in _TYPE_EXPECTATIONS:
            continue
        line = _line(entry)
        if line not in lines:
            lines.append(line)
    return critical, warning, lines


def _line(entry: dict) -> str:
    if entry["column"] is None:
        return entry["observed"]
    return f"column {entry['column']!r}: {entry['observed']}"


def _severity(config) -> str:
    value = getattr(config, "severity", None) or "critical"
    return str(getattr(value, "value", value))


def _mismatch(item) -> dict:
    return ((item.result or {}).get("details") or {}).get("mismatched") or {}


def _observed(item, df: pd.DataFrame, target: str) -> str:
    """One short phrase saying what was expected and what was found."""
    config = item.expectation_config
    kind = config.type
    kwargs = config.kwargs
    result = item.result or {}
    column = kwargs.get("column")
    if column is not None and column not in df.columns:
        role = " (the target of this run)" if column == target else ""
        return f"column is missing from the data{role}"
    error = _exception_message(item)
    if error and "element_count" not in result and "observed_value" not in result:
        return f"could not be evaluated: {error}"
    mostly = kwargs.get("mostly")
    bad_share = _share(result)
    examples = _examples(result)

    if kind == "expect_table_columns_to_match_set":
        mismatch = _mismatch(item)
        parts = []
        if mismatch.get("missing"):
            parts.append(f"missing columns: {sorted(mismatch['missing'])}")
        if mismatch.get("unexpected"):
            parts.append(f"unexpected columns: {sorted(mismatch['unexpected'])}")
        return "; ".join(parts) or f"columns {result.get('observed_value')}"
    if kind in _TYPE_EXPECTATIONS:
        expected = kwargs.get("type_list") or [kwargs.get("type_")]
        label = (
            FAMILY_LABEL["numeric"]
            if expected == NUMERIC_TYPES
            else next(
                (FAMILY_LABEL[f] for f, t in FAMILY_TYPE.items() if [t] == expected),
                f"type in {expected}",
            )
        )
        found = str(df[column].dtype)
        text = f"expected {label}, found {found}"
        if bad_share is not None and found == "object":
            text += f" ({bad_share:.0%} of values{examples})"
        return text
    if kind == "expect_column_values_to_not_be_null":
        allowed = 1 - (mostly if mostly is not None else 1.0)
        null_share = bad_share if bad_share is not None else 1.0
        return f"{_pct(null_share)} null, at most {_pct(allowed)} allowed"
    if kind == "expect_column_values_to_be_in_set":
        allowed = _values(kwargs.get("value_set"))
        return f"{_pct(bad_share)} of values not in {allowed}{examples}{_mostly(mostly)}"
    if kind == "expect_column_values_to_not_be_in_set":
        return f"{_pct(bad_share)} of values in the forbidden set{examples}"
    if kind == "expect_column_values_to_be_between":
        return f"{_pct(bad_share)} of values {_outside(kwargs)}{examples}{_mostly(mostly)}"
    if kind == "expect_column_to_exist":
        return "column is missing from the data"
    if kind in ("expect_table_row_count_to_be_between", "expect_table_row_count_to_equal"):
        return f"{result.get('observed_value')} rows, expected {_bounds(kwargs, 'value')}"
    if "observed_value" in result and ("min_value" in kwargs or "max_value" in kwargs):
        return f"observed {_num(result['observed_value'])}, expected {_bounds(kwargs)}"
    if "observed_value" in result:
        return f"observed {result['observed_value']!s:.120}"
    if bad_share is not None:
        return f"{_pct(bad_share)} of values unexpected{examples}{_mostly(mostly)}"
    return f"could not be evaluated: {error}" if error else "failed"


def _share(result: dict) -> float | None:
    """Share of the non-null rows that failed (what GX compares ``mostly`` with)."""
    count, total = result.get("unexpected_count"), result.get("element_count")
    if count is None or not total:
        return None
    nonmissing = total - (result.get("missing_count") or 0)
    return count / (nonmissing or total)


def _examples(result: dict) -> str:
    counts = result.get("partial_unexpected_counts") or []
    values = [c.get("value") for c in counts[:3]] or (result.get("partial_unexpected_list") or [])[
        :3
    ]
    values = [v for v in values if v is not None]
    return f", e.g. {', '.join(repr(_plain(v)) for v in values)}" if values else ""


def _values(values: Any) -> str:
    values = list(values or [])
    shown = ", ".join(str(_plain(v)) for v in values[:8])
    return "{" + shown + (", ..." if len(values) > 8 else "") + "}"


def _bounds(kwargs: dict, prefix: str = "") -> str:
    lo = kwargs.get("min_value" if not prefix else f"min_{prefix}")
    hi = kwargs.get("max_value" if not prefix else f"max_{prefix}")
    lo_op = ">" if kwargs.get("strict_min") else ">="
    hi_op = "<" if kwargs.get("strict_max") else "<="
    if lo is not None and hi is not None:
        return f"[{_num(lo)}, {_num(hi)}]"
    if lo is not None:
        return f"{lo_op} {_num(lo)}"
    return f"{hi_op} {_num(hi)}"


def _outside(kwargs: dict) -> str:
    lo, hi = kwargs.get("min_value"), kwargs.get("max_value")
    if lo is not None and hi is not None:
        return f"outside {_bounds(kwargs)}"
    if lo is not None:
        return f"{'at or below' if kwargs.get('strict_min') else 'below'} {_num(lo)}"
    return f"{'at or above' if kwargs.get('strict_max') else 'above'} {_num(hi)}"


def _mostly(mostly: float | None) -> str:
    return f" (at most {_pct(1 - mostly)} allowed)" if mostly is not None and mostly < 1 else ""


def _pct(share: float | None) -> str:
    if share is None:
        return "some"
    pct = share * 100
    return f"{pct:.0f}%" if pct >= 1 or pct == 0 else f"{pct:.2g}%"


def _num(value: Any) -> str:
    value = _plain(value)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _plain(value: Any) -> Any:
    """numpy scalars to Python ones, so they print and serialise plainly."""
    return value.item() if hasattr(value, "item") and not isinstance(value, (str, bytes)) else value


def _exception_message(item) -> str:
    info = item.exception_info or {}
    candidates = [info] + [v for v in info.values() if isinstance(v, dict)]
    for entry in candidates:
        message = entry.get("exception_message")
        if message:
            return str(message).strip().splitlines()[0][:200]
    return ""
