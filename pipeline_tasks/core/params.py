"""The trigger params of the DAGs, declared once: type, default, bounds, title, description and
the config field each one overrides.

The DAGs' trigger forms (``mlops_airflow.params.dag_params``), the ``RunSpec`` defaults and the
config overrides (``pipeline_tasks.stages``) and the first-task validation (``check_value``) are
all derived from these declarations, so they cannot disagree. Stdlib only: DAG parsing imports it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

TRAINING_DAG = "ml_training_pipeline"
MONITORING_DAG = "ml_drift_monitoring"
ROLLBACK_DAG = "ml_model_rollback"
BATCH_DAG = "ml_batch_scoring"

#: What a model name may be: it names folders and registry entries, so no '..'.
MODEL_NAME_PATTERN = r"^(?!.*\.\.)[A-Za-z0-9][A-Za-z0-9._-]*$"
#: The same, or empty (the form's "derive it" / "the demo model").
OPTIONAL_MODEL_NAME_PATTERN = r"^((?!.*\.\.)[A-Za-z0-9][A-Za-z0-9._-]*)?$"
MODEL_NAME_RULE = ("letters, digits, '.', '_' and '-' (starting with a letter or digit, "
                   "no '..')")
TASK_TYPES = ("auto", "classification", "regression")
SERVING_TARGETS = ("local", "docker")

_PYTHON_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,), "integer": (int,), "number": (int, float), "boolean": (bool,)}
_TYPE_WORDS = {"string": "text", "integer": "a whole number", "number": "a number",
               "boolean": "true or false"}


@dataclass(frozen=True)
class ParamSpec:
    """One trigger param. ``config_field``: the ``PipelineConfig`` field it overrides for one run
    (its default is that field's value); ``default_from``: a config attribute that gives the
    default without being overridden. ``in_form=False``: accepted in a run's conf, not shown."""

    name: str
    type: str  # a JSON-schema type: string | integer | number | boolean
    default: Any = None
    title: str = ""
    description: str = ""
    nullable: bool = False  # the form accepts null, so it does not mark the field required
    minimum: float | None = None
    maximum: float | None = None
    enum: tuple[str, ...] | None = None
    pattern: str | None = None
    pattern_rule: str = ""  # the pattern in words, for the error message
    min_length: int | None = None
    config_field: str | None = None
    default_from: str | None = None
    in_form: bool = True

    def default_for(self, config: Any = None) -> Any:
        """The default value: the config's (``config_field`` / ``default_from``) or the declared."""
        source = self.config_field or self.default_from
        if source and config is not None:
            return getattr(config, source)
        return self.default

    def json_schema(self) -> dict[str, Any]:
        """The JSON-schema keys of the trigger form's field (``airflow.sdk.Param`` kwargs)."""
        schema: dict[str, Any] = {"type": ["null", self.type] if self.nullable else self.type}
        if self.min_length is not None:
            schema["minLength"] = self.min_length
        if self.minimum is not None:
            schema["minimum"] = self.minimum
        if self.maximum is not None:
            schema["maximum"] = self.maximum
        if self.enum is not None:
            schema["enum"] = list(self.enum)
        if self.pattern is not None:
            schema["pattern"] = self.pattern
        schema["title"] = self.title
        return schema

    def problem(self, value: Any) -> str | None:
        """What is wrong with ``value`` for this param (None: nothing). Type and bounds only;
        ``None`` is a value only of a nullable param."""
        if value is None:
            return None if self.nullable else f"must be {_TYPE_WORDS[self.type]}, got None"
        types = _PYTHON_TYPES[self.type]
        if not isinstance(value, types) or (self.type != "boolean" and isinstance(value, bool)):
            return f"must be {self.requirement()}, got {value!r}"
        if self.type in ("integer", "number") and (
                (self.minimum is not None and value < self.minimum)
                or (self.maximum is not None and value > self.maximum)):
            return f"must be {self.requirement()}, got {value!r}"
        if self.enum is not None and value not in self.enum:
            return f"must be one of {self.enum}, got {value!r}"
        if self.min_length is not None and len(value) < self.min_length:
            return f"must be at least {self.min_length} character(s), got {value!r}"
        if self.pattern is not None and not re.search(self.pattern, value):
            return f"must be {self.pattern_rule or 'text matching ' + self.pattern}, got {value!r}"
        return None

    def requirement(self) -> str:
        """The type and numeric bounds in words, e.g. ``a whole number >= 0 and <= 3660``."""
        words = [_TYPE_WORDS[self.type]]
        if self.minimum is not None:
            words.append(f">= {_num(self.minimum)}")
        if self.maximum is not None:
            words.append(("and " if self.minimum is not None else "") + f"<= {_num(self.maximum)}")
        return " ".join(words)


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def _model_name(default: str, description: str, *, title: str = "Registered model name",
                required: bool = False, nullable: bool = False) -> ParamSpec:
    return ParamSpec(
        "model_name", "string", default, title, description, nullable=nullable,
        pattern=MODEL_NAME_PATTERN if required else OPTIONAL_MODEL_NAME_PATTERN,
        pattern_rule=MODEL_NAME_RULE, min_length=1 if required else None)


_OPTIONAL = {"nullable": True}  # optional text: the form must not require it

TRAINING: tuple[ParamSpec, ...] = (
    ParamSpec(
        "source", "string", "", "Source",
        "URI of a CSV or Parquet file, a folder or glob of them (date-partitioned "
        "when file names carry YYYY-MM-DD), or a SQL query when 'SQL connection' is set. "
        "It must lie under the landing folder or a root the operator lists in "
        "allowed_source_roots (MLOPS_ALLOWED_SOURCE_ROOTS); anything else fails the first task. "
        "The default is the demo flights feed.", default_from="demo_source_uri"),
    ParamSpec(
        "sql_conn_id", "string", "", "SQL connection",
        "Airflow connection id to run 'Source' against as a SQL query. The query may "
        "use :window_start, :interval_start and :interval_end. Only connections the operator "
        "lists in allowed_sql_conn_ids (MLOPS_ALLOWED_SQL_CONN_IDS; none by default) are "
        "accepted. Leave empty for files.", **_OPTIONAL),
    ParamSpec("target", "string", "is_late", "Target column", "The label column to predict.",
              min_length=1),
    ParamSpec(
        "task_type", "string", "auto", "Task type",
        "auto infers it from the target: few integer values or text "
        "means classification, otherwise regression.", enum=TASK_TYPES),
    ParamSpec(
        "time_column", "string", "", "Time column",
        "Timestamp column for the time-aware split and the window "
        "filter. Empty: detected (a datetime column, or time_hour, timestamp...).", **_OPTIONAL),
    ParamSpec(
        "training_window_days", "integer", 28, "Training window (days)",
        "Days of data before the interval's end to train "
        "on (date-partitioned sources and SQL).", minimum=0, maximum=3660),
    _model_name("", "Letters, digits, '.', '_' and '-'. Empty: derived from the source and "
                "target, e.g. flights_is_late.", nullable=True),
    ParamSpec(
        "min_baseline_lift", "number", None, "Minimum lift over the trivial baseline",
        "Relative improvement of the primary metric over a "
        "majority-class / mean model that the candidate must reach.",
        minimum=0, maximum=1, config_field="min_baseline_lift"),
    ParamSpec(
        "min_champion_delta", "number", None, "Minimum improvement over the champion",
        "The candidate must beat the champion's primary "
        "metric by more than this (absolute; 0 means strictly better).",
        minimum=0, config_field="min_champion_delta"),
    ParamSpec(
        "min_primary_metric", "number", None, "Absolute primary-metric floor",
        "Optional: a floor (ceiling for error metrics such "
        "as rmse) the candidate must meet.", nullable=True, config_field="min_primary_metric"),
    ParamSpec(
        "no_cache", "boolean", False, "Fit again (no cache)",
        "Off: when the snapshot, the training code, these params and the library versions are "
        "those of an earlier run, its model is reused (no new run, no new version). On: always "
        "fit."),
    ParamSpec(
        "hyperparameter_search", "boolean", False, "Hyperparameter search",
        "Run a randomized search CV within the time budget below."),
    ParamSpec(
        "search_time_budget_s", "number", None, "Search time budget (s)",
        "Upper bound on the hyperparameter search time.", minimum=0,
        config_field="search_time_budget_s"),
    ParamSpec(
        "force_promote", "boolean", False, "Force promotion",
        "Promote even if the gate rejects the candidate. "
        "Recorded on the model version with the reason below."),
    ParamSpec("force_reason", "string", "", "Reason for forcing",
              "Required when 'Force promotion' is on.", **_OPTIONAL),
    ParamSpec(
        "slice_columns", "string", "", "Slice columns",
        "Comma-separated columns the gate also judges slice by slice (categorical by value, "
        "numeric in quantile bins): a candidate worse than the champion on a slice with enough "
        "rows is not blessed. Empty: the model's setting (model_slice_columns, slice_columns; "
        "the demo model: carrier,origin); 'none': no slices.",
        pattern=r"^[^\x00-\x1f]{0,1000}$", pattern_rule="comma-separated column names",
        **_OPTIONAL),
    ParamSpec(
        "sensitive_columns", "string", "", "Sensitive columns",
        "Comma-separated columns fairness is measured over with Fairlearn (inputs or not, when "
        "the source carries them). Empty: the model's setting (model_sensitive_columns, "
        "sensitive_columns).", pattern=r"^[^\x00-\x1f]{0,1000}$",
        pattern_rule="comma-separated column names", **_OPTIONAL),
    ParamSpec(
        "max_slice_regression", "number", None, "Largest slice regression",
        "How much worse than the champion's (a share of its metric on the slice, beyond the "
        "bootstrap interval) a candidate may be on a gated slice.", minimum=0, maximum=1,
        config_field="max_slice_regression"),
    ParamSpec(
        "min_slice_rows", "integer", None, "Smallest gated slice (rows)",
        "Slices with fewer holdout rows are reported, not gated.", minimum=1,
        maximum=1_000_000, config_field="min_slice_rows"),
    ParamSpec(
        "max_fairness_gap", "number", None, "Largest fairness gap",
        "Optional: a candidate whose fairness gap over a sensitive column (demographic parity "
        "or equalized odds difference; the worst-group gap for regression) exceeds this is not "
        "blessed.", nullable=True, minimum=0, config_field="max_fairness_gap"),
    ParamSpec(
        "allow_schema_change", "boolean", False, "Allow schema change",
        "This run may change the model's inputs (another source, renamed or retyped "
        "columns): the batch is validated against a suite inferred from itself instead of the "
        "model's. A candidate whose inputs break the champion's clients is registered as a "
        "blocked challenger; it becomes champion only with 'Force promotion' and a reason, or "
        "through the approval step."),
    ParamSpec(
        "require_approval", "boolean", None, "Require approval before deploying",
        "A blessed model (or one that passes every gate but changes the inputs) "
        "waits at the 'approve' step (Required actions in the UI) and becomes champion and is "
        "deployed only when a person approves it.", config_field="require_approval"),
    ParamSpec(
        "serving_target", "string", None, "Deploy target",
        "Where a new champion is served: a supervised local process, or a Docker "
        "container built from docker/serving.Dockerfile (needs a Docker engine).",
        enum=SERVING_TARGETS, config_field="serving_target"),
    ParamSpec(
        "serving_port", "integer", None, "Serving port",
        "Stable port of the model's endpoint. Several models can share a port: each "
        "answers by name (/models/<name>/predict), and deploying one leaves the others "
        "serving as they were.", minimum=1, maximum=65535,
        config_field="serving_port"),
    # accepted in a run's conf (e.g. a reproducibility check), not shown in the form; the
    # config checks their bounds
    ParamSpec("holdout_fraction", "number", None, "Holdout fraction",
              "Share of rows held out for evaluation.", config_field="holdout_fraction",
              in_form=False),
    ParamSpec("seed", "integer", None, "Seed", "Random seed of the split and the estimator.",
              config_field="seed", in_form=False),
)

MONITORING: tuple[ParamSpec, ...] = (
    _model_name("", "The served model to watch. Empty: the demo model (flights_is_late)."),
    ParamSpec(
        "current", "string", "", "Current data (optional)",
        "URI of a CSV or Parquet file to check instead of the interval's prediction "
        "log (it may have a model_version column; otherwise the champion's snapshot is the "
        "reference). It must lie under the landing folder or a root listed in "
        "allowed_source_roots (MLOPS_ALLOWED_SOURCE_ROOTS)."),
    ParamSpec(
        "labels", "string", "", "True outcomes (optional)",
        "File or folder of outcomes (row_id, event_time, the target column). Empty: "
        "the model's model_labels entry in the config, else labels_uri; the demo model falls "
        "back to the demo's outcome feed. A model with no labels gets 'no_labels'. Like "
        "'Current data', it must lie under allowed_source_roots (MLOPS_ALLOWED_SOURCE_ROOTS)."),
)

ROLLBACK: tuple[ParamSpec, ...] = (
    _model_name("flights_is_late", "Registered model whose served version to roll back.",
                title="Model", required=True),
    ParamSpec(
        "version", "string", "previous", "Version",
        "A version number, or 'previous' for the version that was live before the "
        "current one.", pattern=r"^(previous|[0-9]+)$",
        pattern_rule="a version number or 'previous'"),
    ParamSpec("reason", "string", "", "Reason",
              "Who rolls back and why. Recorded in the deployment history and the registry.",
              min_length=3),
)

def _column(name: str, title: str, description: str) -> ParamSpec:
    """An optional param naming a column of the source (no control characters, at most 128)."""
    return ParamSpec(name, "string", "", title, description, pattern=r"^([^\x00-\x1f]{1,128})?$",
                     pattern_rule="a column name", **_OPTIONAL)


BATCH: tuple[ParamSpec, ...] = (
    _model_name("flights_is_late", "Registered model whose version scores the batch.",
                title="Model", required=True),
    ParamSpec(
        "model_ref", "string", "champion", "Model version or alias",
        "An alias (champion, challenger) or a version number. Resolved once, when the run "
        "starts, and recorded: every row of the run is scored by that version.",
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$",
        pattern_rule="an alias or a version number (letters, digits, '_' and '-')"),
    ParamSpec(
        "source", "string", "", "Source",
        "What to score, in the forms training reads: a CSV or Parquet file, a folder or glob "
        "of them (date-partitioned when file names carry YYYY-MM-DD: only the interval's "
        "partitions are read), or a SQL query when 'SQL connection' is set. It must lie under "
        "the landing folder or a root in allowed_source_roots. The default is the demo feed.",
        default_from="demo_source_uri"),
    ParamSpec(
        "sql_conn_id", "string", "", "SQL connection",
        "Airflow connection id to run 'Source' against as a SQL query (it may use "
        ":interval_start and :interval_end). Only connections in allowed_sql_conn_ids.",
        **_OPTIONAL),
    _column("id_column", "Row id column",
            "Column whose values name the rows (an order or flight id): written with each score "
            "and used to join late outcomes. Empty: <interval>-<row number>."),
    _column("time_column", "Time column",
            "Timestamp column that files rows under their interval (date-partitioned and SQL "
            "sources) and gives the prediction log its event time. Empty: detected."),
    ParamSpec(
        "max_reject_share", "number", None, "Largest share of rejected rows",
        "Rows with a null in a required input or a value the model's suite calls critical go "
        "to the rejects file with a reason; above this share of all rows the run fails and "
        "publishes nothing.", minimum=0, maximum=1, config_field="batch_max_reject_share"),
    ParamSpec(
        "output_conn_id", "string", "", "SQL output connection",
        "Optional: also write the scores to 'Output table' through this Airflow connection, "
        "replacing the interval's rows in one transaction. Only connections in "
        "allowed_output_conn_ids.", **_OPTIONAL),
    ParamSpec(
        "output_table", "string", "", "Output table",
        "Table (or schema.table) for the SQL output; created when missing.",
        pattern=r"^([A-Za-z_][A-Za-z0-9_]{0,62}(\.[A-Za-z_][A-Za-z0-9_]{0,62})?)?$",
        pattern_rule="a table name (letters, digits, '_'; optionally schema.table)", **_OPTIONAL),
    ParamSpec("chunk_rows", "integer", None, "Rows per chunk",
              "Rows read, checked and scored at a time.", minimum=1000, maximum=5_000_000,
              config_field="batch_chunk_rows", in_form=False),
)

#: Each DAG's params, in the order of its trigger form.
SCHEMAS: dict[str, tuple[ParamSpec, ...]] = {
    TRAINING_DAG: TRAINING, MONITORING_DAG: MONITORING, ROLLBACK_DAG: ROLLBACK,
    BATCH_DAG: BATCH}

#: Params that override a config field for one run, in any DAG's run (by param name).
CONFIG_OVERRIDES: dict[str, ParamSpec] = {
    p.name: p for schema in SCHEMAS.values() for p in schema if p.config_field}


def schema_for(dag_id: str) -> tuple[ParamSpec, ...]:
    """The params of ``dag_id``; a run of another DAG id (a script, a test) gets the training
    DAG's."""
    return SCHEMAS.get(dag_id, TRAINING)


def spec_for(dag_id: str, name: str) -> ParamSpec | None:
    """The declaration of param ``name`` of ``dag_id``; else a config override (any DAG's run
    may carry one); else the training DAG's (e.g. ``target``, whose default names the demo
    model of a monitoring run)."""
    for declared in (schema_for(dag_id), CONFIG_OVERRIDES.values(), TRAINING):
        found = next((p for p in declared if p.name == name), None)
        if found is not None:
            return found
    return None


def given(value: Any) -> bool:
    """A param value that was set: empty text and None mean "the default"."""
    return value is not None and value != ""


def check_value(spec: ParamSpec, value: Any) -> str | None:
    """The error message for a bad ``value`` of ``spec`` (naming the param), or None."""
    problem = spec.problem(value)
    return f"param {spec.name!r} {problem}" if problem else None


def problems(dag_id: str, values: dict[str, Any]) -> list[str]:
    """Every given value in ``values`` checked against ``dag_id``'s params and the config
    overrides: one message per bad value."""
    declared = {p.name: p for p in schema_for(dag_id)}
    found = []
    for name, value in values.items():
        spec = declared.get(name) or CONFIG_OVERRIDES.get(name)
        if spec is not None and given(value):
            message = check_value(spec, value)
            if message:
                found.append(message)
    return found
