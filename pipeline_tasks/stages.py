"""The pipeline's stages as one call each: what a DAG task (or a plain script) runs.

A ``RunSpec`` holds everything a stage needs to know about the run: its identity (dag_id, run_id,
data interval) and its trigger params (declared in ``pipeline_tasks.core.params``). Each stage
takes the spec and the typed results of the stages before it, calls one library function, and
returns that function's small result: a frozen dataclass. Only the Airflow glue converts: it
stores a result as its XCom dict (``to_xcom``) and turns an upstream XCom dict back into the
type the stage takes (``from_xcom``, by argument name: ``XCOM_TYPES``). The Airflow DAG, the
end-to-end benchmark and the chain tests all go through these functions, so the scheduled
pipeline and the in-process pipeline are the same code. (About 460 lines: one function per DAG
task and the map of their typed arguments, kept together so the layer the DAGs call reads in
one place.)
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field, replace
from functools import cached_property
from typing import TYPE_CHECKING, Any

from pipeline_tasks.core import layout
from pipeline_tasks.core import params as schema
from pipeline_tasks.core.allowlists import (
    check_output_conn_id,
    check_source_param,
    check_sql_conn_id,
    check_table_name,
)
from pipeline_tasks.core.config import PipelineConfig, code_version, dataset_name, load_config
from pipeline_tasks.core.errors import (
    BreakingChangeBlocked,
    ConfigError,
    ModelNotPromoted,
    NoLabels,
    RetrainWithheld,
    StageSkipped,
)
from pipeline_tasks.core.schema import SUITE_TAG

log = logging.getLogger(__name__)

if TYPE_CHECKING:  # the stages' typed results; the modules load only when a stage runs
    from pipeline_tasks.data.ingest import IngestResult
    from pipeline_tasks.data.validate import ValidationResult
    from pipeline_tasks.data.versioning import DatasetVersion
    from pipeline_tasks.deploy.records import DeploymentRecord
    from pipeline_tasks.model.evaluate import EvaluationDecision
    from pipeline_tasks.model.registry import RegistrationResult
    from pipeline_tasks.model.train import TrainResult
    from pipeline_tasks.monitoring.drift_check import DriftCheck
    from pipeline_tasks.monitoring.performance import PerformanceCheck
    from pipeline_tasks.monitoring.retrain import RetrainDecision
    from pipeline_tasks.scoring.batch import BatchScoreResult, ScoringModel
    from pipeline_tasks.scoring.sql_export import SqlExportResult

#: The typed result a stage argument takes, by the argument's name, as ``module:Class`` (so
#: parsing a DAG imports none of them). The Airflow glue turns the upstream task's XCom dict
#: into it (``from_xcom``) before the task body calls the stage.
XCOM_TYPES: dict[str, str] = {
    "ingested": "pipeline_tasks.data.ingest:IngestResult",
    "validated": "pipeline_tasks.data.validate:ValidationResult",
    "versioned": "pipeline_tasks.data.versioning:DatasetVersion",
    "trained": "pipeline_tasks.model.train:TrainResult",
    "decision": "pipeline_tasks.model.policy:EvaluationDecision",
    "registered": "pipeline_tasks.model.registry:RegistrationResult",
    "drift": "pipeline_tasks.monitoring.drift_check:DriftCheck",
    "performance": "pipeline_tasks.monitoring.performance:PerformanceCheck",
    "scoring_model": "pipeline_tasks.scoring.batch:ScoringModel",
    "scored": "pipeline_tasks.scoring.batch:BatchScoreResult",
}


def xcom_type(name: str) -> type | None:
    """The result type of the stage argument ``name`` (``XCOM_TYPES``), imported now; None
    for an argument that is not a stage result."""
    from importlib import import_module

    path = XCOM_TYPES.get(name)
    if path is None:
        return None
    module, _, cls = path.partition(":")
    return getattr(import_module(module), cls)


@dataclass(frozen=True)
class RunSpec:
    """Identity and params of one pipeline run. Plain data: no Airflow objects."""

    dag_id: str
    run_id: str
    interval_start: str
    interval_end: str
    logical_date: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    sql_url: str | None = None  # resolved from params["sql_conn_id"] by the caller
    output_sql_url: str | None = None  # resolved from params["output_conn_id"] by the caller
    trigger: dict[str, Any] = field(default_factory=dict)  # the retrain request behind the run

    def param(self, name: str, default: Any = None) -> Any:
        """A trigger param; empty means the given default, else the DAG's default (from the
        param schema, ``pipeline_tasks.core.params``; the config's for a config field)."""
        value = self.params.get(name)
        if not schema.given(value):
            spec = schema.spec_for(self.dag_id, name)
            if default is not None or spec is None:
                value = default
            else:  # a config field's default is the config's: read it only then
                value = spec.default_for(
                    self.config if spec.config_field or spec.default_from else None)
        return None if value == "" else value

    @cached_property
    def config(self) -> PipelineConfig:
        """The config with this run's overrides (the params that name a config field)."""
        return load_config(**{spec.config_field: self.params[name]
                              for name, spec in schema.CONFIG_OVERRIDES.items()
                              if schema.given(self.params.get(name))})

    @property
    def source(self) -> str:
        return str(self.param("source", self.config.demo_source_uri))

    @property
    def target(self) -> str:
        target = self.param("target")
        if not target:
            raise ConfigError("param 'target' is empty: name the label column")
        return str(target)

    @property
    def task_type(self) -> str:
        task_type = str(self.param("task_type"))
        _check(schema.spec_for(schema.TRAINING_DAG, "task_type"), task_type)
        return task_type

    @property
    def dataset_name(self) -> str:
        return dataset_name(self.source, self.target)

    @property
    def model_name(self) -> str:
        name = str(self.param("model_name", self.dataset_name))
        _check(schema.spec_for(schema.ROLLBACK_DAG, "model_name"), name)  # the non-empty form
        return name

    @property
    def slice_columns(self) -> list[str]:
        """The columns this run's gate slices by: the param, else the model's setting."""
        from pipeline_tasks.core.config import column_list

        given = self.param("slice_columns")
        return column_list(given) if given else self.config.slices_for(self.model_name)

    @property
    def sensitive_columns(self) -> list[str]:
        """The columns this run measures fairness over: the param, else the model's setting."""
        from pipeline_tasks.core.config import column_list

        given = self.param("sensitive_columns")
        return column_list(given) if given else self.config.sensitive_for(self.model_name)

    @property
    def run_key(self) -> str:
        return layout.run_partition(self.dag_id, self.run_id, self.interval_end)

    @property
    def approval_required(self) -> bool:
        return self.config.require_approval  # the param overrides the config field

    @property
    def lineage(self) -> dict[str, str]:
        """Tags that tie an MLflow run and a model version back to this Airflow run."""
        return {
            "airflow.dag_id": self.dag_id,
            "airflow.run_id": self.run_id,
            "airflow.logical_date": self.logical_date or "",
            "airflow.data_interval_start": self.interval_start,
            "airflow.data_interval_end": self.interval_end,
            "source": self.source,
            "code_version": code_version(),
            **({"retrain.reason": str(self.trigger.get("reason", "")),
                "retrain.drift_run_id": str(self.trigger.get("drift_run_id", "")),
                "retrain.drifted_columns": ",".join(self.trigger.get("drifted_columns") or [])}
               if self.trigger else {}),
        }

    def to_dict(self) -> dict:
        data = asdict(self)
        data["sql_url"] = "***" if self.sql_url else None  # never log credentials
        data["output_sql_url"] = "***" if self.output_sql_url else None
        return data


def _check(spec: schema.ParamSpec | None, value: Any) -> None:
    message = schema.check_value(spec, value) if spec is not None else None
    if message:
        raise ConfigError(message)


def check_param_values(run: RunSpec, dag_id: str) -> None:
    """Every param of ``dag_id`` the run was given (and every config override) against its
    declared type and bounds: the same schema the trigger form is made from."""
    bad = schema.problems(dag_id, run.params)
    if bad:
        raise ConfigError("; ".join(bad))


def check_params(run: RunSpec) -> None:
    """Refuse bad trigger params before any work: the first task of each DAG calls this, so a
    bad value fails in seconds, not after ingest, validation and training have run. The bounds
    are the trigger form's (both come from ``pipeline_tasks.core.params``). What the run may read
    is bounded by the operator's allow-lists (``allowed_sql_conn_ids``, ``allowed_source_roots``)."""
    # the config checks its fields (the overrides among them), then every param its bounds
    _ = run.config
    check_param_values(run, schema.TRAINING_DAG)
    _ = run.target, run.task_type, run.model_name  # the values in effect, defaults included
    if run.param("sql_conn_id"):  # the source is a query on that connection
        check_sql_conn_id(str(run.param("sql_conn_id")), run.config)
    else:
        check_source_param("source", run.source, run.config)
    if run.param("force_promote") and not str(run.param("force_reason") or "").strip():
        raise ConfigError("param 'force_promote' is on, so 'force_reason' must say who and why")


def ingest(run: RunSpec) -> IngestResult:
    from pipeline_tasks.data.ingest import ingest_interval

    check_params(run)

    ingested = ingest_interval(
        run.source,
        interval_start=run.interval_start,
        interval_end=run.interval_end,
        training_window_days=int(run.param("training_window_days")),
        config=run.config,
        run_key=run.run_key,
        time_column=run.param("time_column"),
        sql_url=run.sql_url,
    )
    if run.param("no_cache") or run.param("force_promote") or run.param("allow_schema_change"):
        return ingested
    # the same batch as a run whose model is judged already: the rest would find only reuses
    from pipeline_tasks.lineage.links import mlflow_run_url
    from pipeline_tasks.model.cache import judged_before

    judged = judged_before(ingested.uri, model_name=run.model_name,
                           dataset_name=run.dataset_name, config=run.config,
                           **_fit_inputs(run, ingested))
    if judged is None:
        return ingested
    log.info("cache hit: key %s; reused MLflow run %s", judged.cache_key,
             mlflow_run_url(run.config, judged.experiment_id, judged.run_id))
    return replace(ingested, nothing_new=judged.reason(run.model_name))


def _fit_inputs(run: RunSpec, ingested: IngestResult) -> dict[str, Any]:
    """The run's training inputs that enter the fit's cache key (``model.cache``)."""
    return {"target": run.target, "task_type": run.task_type,
            "time_column": ingested.time_column,
            "run_search": bool(run.param("hyperparameter_search")),
            # slice and sensitive columns that are not inputs travel with the holdout
            "holdout_extra": [*run.slice_columns, *run.sensitive_columns]}


def _nothing_new(ingested: IngestResult) -> None:
    """The backstop of the stages after ``ingest``: the DAG skips them at once when ingest found
    nothing new; a caller that runs them anyway gets the same skip."""
    if ingested.nothing_new:
        raise StageSkipped(ingested.nothing_new)


def validate(run: RunSpec, ingested: IngestResult) -> ValidationResult:
    """The batch against the model's suite and its champion's inputs (``allow_schema_change``:
    against a suite inferred from the batch, for a run meant to change the model's inputs)."""
    from pipeline_tasks.data.validate import validate_dataset
    from pipeline_tasks.model.registry import champion_contract

    _nothing_new(ingested)
    return validate_dataset(
        ingested.uri,
        model_name=run.model_name,
        target=run.target,
        config=run.config,
        run_key=run.run_key,
        champion=champion_contract(run.model_name, run.config),
        allow_schema_change=bool(run.param("allow_schema_change")),
        dataset_name=run.dataset_name,
        # the same content, suite and champion passed before: that result (no_cache: validate)
        reuse=not run.param("no_cache"),
    )


def version(run: RunSpec, ingested: IngestResult, validated: ValidationResult) -> DatasetVersion:
    from pipeline_tasks.data.versioning import snapshot_dataset

    _nothing_new(ingested)
    snapshot = snapshot_dataset(
        ingested.uri,
        config=run.config,
        run_key=run.run_key,
        source=run.source,
        interval={"window_start": ingested.window_start,
                  "interval_start": ingested.interval_start,
                  "interval_end": ingested.interval_end},
        validation=validated.to_dict(),
        lineage=run.lineage,
    )
    # the suite the data passed travels on to the model version (the next run's suite)
    return replace(snapshot, suite_uri=validated.suite_ref)


def train(run: RunSpec, ingested: IngestResult, versioned: DatasetVersion) -> TrainResult:
    from pipeline_tasks.model.train import train_model

    _nothing_new(ingested)
    trained = train_model(
        versioned.data_uri,
        dataset_version=versioned.version_id,
        model_name=run.model_name,
        config=run.config,
        run_key=run.run_key,
        lineage={**run.lineage, SUITE_TAG: versioned.suite_uri},
        # the same data, code, params and libraries: the earlier run's model (model.cache)
        reuse=not run.param("no_cache"),
        **_fit_inputs(run, ingested),
    )
    if trained.cache_hit:  # the task log links the reused run (the extra link opens it too)
        from pipeline_tasks.lineage.links import mlflow_run_url
        from pipeline_tasks.model.registry import judged_version

        log.info("cache hit: reused MLflow run %s", mlflow_run_url(
            run.config, trained.experiment_id, trained.run_id))
        # already a version judged against this champion: evaluate, register and deploy skip
        version = None if run.param("force_promote") else judged_version(run.model_name,
                                                                         trained.run_id)
        if version is not None:
            trained = replace(trained, nothing_new=(
                f"cache hit (key {trained.cache_key}): the model of run {trained.run_id} is "
                f"{run.model_name} v{version} already, judged against the current champion; "
                "nothing new to evaluate, register or deploy (no_cache fits again)"))
            log.info("%s", trained.nothing_new)
    return replace(trained, suite_uri=versioned.suite_uri)


def evaluate(run: RunSpec, trained: TrainResult) -> EvaluationDecision:
    from pipeline_tasks.core import tracking
    from pipeline_tasks.core.schema import model_contract
    from pipeline_tasks.model.evaluate import evaluate_candidate

    tracking.configure_mlflow(run.config)  # before the candidate's contract is read from it
    if trained.nothing_new:  # a cache hit already judged (the DAG skips this task at once)
        raise StageSkipped(trained.nothing_new)
    return evaluate_candidate(
        model_name=run.model_name,
        candidate_model_uri=trained.model_uri,
        holdout_uri=trained.holdout_uri,
        target=run.target,
        task_type=trained.task_type,
        primary_metric=trained.primary_metric,
        greater_is_better=trained.greater_is_better,
        config=run.config,
        force_promote=bool(run.param("force_promote")),
        force_reason=run.param("force_reason"),
        candidate_contract=model_contract(trained.model_uri, target=run.target,
                                          task_type=trained.task_type),
        slice_columns=run.slice_columns,
        sensitive_columns=run.sensitive_columns,
    )


def register(run: RunSpec, trained: TrainResult,
             decision: EvaluationDecision) -> RegistrationResult:
    """Register the candidate (``registry.register_model``), then write the version's model card
    (``lineage.cards``): what it is, what it was trained on, how it does overall, per slice and
    for whom, why it was (not) promoted, and its lineage."""
    from pipeline_tasks.lineage.cards import build_model_card, write_model_card
    from pipeline_tasks.model.cache import KEY_TAG
    from pipeline_tasks.model.registry import register_model

    lineage = {**run.lineage, "dataset_version": trained.dataset_version,
               SUITE_TAG: trained.suite_uri, KEY_TAG: trained.cache_key}
    registered = register_model(
        model_name=run.model_name,
        run_id=trained.run_id,
        model_uri=trained.model_uri,
        decision=decision,
        lineage=lineage,
        config=run.config,
        hold_promotion=run.approval_required,
        # a concurrent run may move the champion after ``evaluate``: compare again with it
        reevaluate=lambda: evaluate(run, trained),
    )
    card = build_model_card(trained=trained, decision=decision, registered=registered,
                            lineage=lineage, config=run.config)
    write_model_card(card, registered.run_id, run.config)
    return registered


def approval_gate(run: RunSpec, registered: RegistrationResult) -> str:
    """The task to run after ``register``: ``approve`` when a blessed version waits for a human,
    else ``deploy`` (which skips itself when nothing was promoted)."""
    return "approve" if registered.awaiting_approval else "deploy"


def deploy(run: RunSpec, trained: TrainResult,
           registered: RegistrationResult | None) -> DeploymentRecord:
    """Deploy the version ``register`` promoted (or a person approved); any other is not.

    The version is first confirmed as champion (``registry.confirm_champion``): an approved one
    becomes champion now, and a re-run after a failed deploy takes the title back, each only if
    it still beats the current champion. If the deploy is rejected, the title goes back to the
    version that keeps serving, so the registry's champion is always what serves."""
    from pipeline_tasks.model.registry import confirm_champion

    def not_promoted(result: RegistrationResult) -> ModelNotPromoted:
        blocked = result.breaking_change and not result.promoted
        kind = BreakingChangeBlocked if blocked else ModelNotPromoted
        return kind(f"v{result.version} was not promoted, so it is not deployed: "
                    f"{result.reason}", result=result.to_dict())

    if registered is None:  # register skipped itself (a cache hit with nothing new)
        raise StageSkipped("nothing was registered by this run, so nothing is deployed")
    model, version = registered.model_name, str(registered.version)
    awaiting = bool(registered.awaiting_approval)
    breaking = bool(registered.breaking_change)  # forced or approved over it
    if not (awaiting or registered.promoted):
        raise not_promoted(registered)
    reason = registered.reason
    if awaiting:
        reason = "approved by a human: " + reason.removeprefix("awaiting approval: ")
    confirmed = confirm_champion(
        model, version, evaluated_against=registered.previous_champion,
        # the champion may have moved since: compare again with it
        reevaluate=lambda: evaluate(run, trained), reason=reason, config=run.config,
        approved=awaiting)
    if not confirmed.promoted:
        raise not_promoted(confirmed)
    # if the deploy is rejected, the title goes back to the version that keeps serving
    restore_to = (confirmed.previous_champion if confirmed.previous_champion != version
                  else registered.previous_champion)
    approval = confirmed.to_dict() if awaiting else None
    if awaiting:
        registered = confirmed
    from pipeline_tasks.deploy.bluegreen import deploy_version, title_back_on_failure

    # any failure, a rejection or an infrastructure error (whose retry takes the title back by
    # compare-and-set): the title goes back to the version that keeps serving
    with title_back_on_failure(model, version, to=restore_to, config=run.config,
                               what=f"v{version} was not deployed"):
        deployed = deploy_version(
            model_name=model, version=version, holdout_uri=trained.holdout_uri,
            feature_columns=trained.feature_columns, config=run.config,
            reason=registered.reason,
            lineage={**run.lineage, "dataset_version": trained.dataset_version},
            target=run.config.serving_target,
            breaking_change=breaking,
        )
    return deployed.update(approval=approval)


def rollback(run: RunSpec) -> DeploymentRecord:
    """Move ``champion`` of ``model_name`` back to ``version`` (or ``previous``) and redeploy."""
    from pipeline_tasks.deploy.bluegreen import rollback as rollback_to

    check_param_values(run, schema.ROLLBACK_DAG)
    return rollback_to(
        model_name=run.model_name,
        to=str(run.params.get("version") or "previous"),
        config=run.config,
        reason=str(run.params.get("reason") or ""),
        lineage=run.lineage,
    )


def check_monitoring_params(run: RunSpec) -> None:
    """Refuse bad params of a drift-monitoring run before any work. Both first tasks
    (``check_drift``, ``check_performance``) call it, so a bad value fails whichever runs first
    and ``request_retrain`` never runs. ``current`` and ``labels`` must lie under
    ``allowed_source_roots`` (labels from the config, ``model_labels``, are the operator's)."""
    _ = run.config
    check_param_values(run, schema.MONITORING_DAG)
    _ = run.model_name
    check_source_param("current", run.param("current"), run.config)
    check_source_param("labels", run.param("labels"), run.config)


def check_drift(run: RunSpec) -> DriftCheck:
    """The drift check of the run's interval (``monitoring.check_interval``)."""
    from pipeline_tasks.monitoring.drift_check import check_interval

    check_monitoring_params(run)  # bad params fail here, before any work

    return check_interval(
        model_name=run.model_name, interval_start=run.interval_start,
        interval_end=run.interval_end, config=run.config, run_key=run.run_key,
        dag_id=run.dag_id, run_id=run.run_id, current_uri=run.param("current"),
    )


def check_performance(run: RunSpec) -> PerformanceCheck:
    """The served model's real performance ``label_delay_days`` before the run's interval, when
    its true outcomes have landed (``monitoring.check_performance``). A model with no labels
    source (no ``labels`` param, no ``model_labels`` entry) is recorded as ``no_labels`` and the
    task is skipped with that summary: the drift check and the retrain decision go on."""
    from datetime import datetime, timedelta

    from pipeline_tasks.monitoring.performance import check_performance as score
    from pipeline_tasks.monitoring.performance import record_no_labels
    from pipeline_tasks.monitoring.sources import champion_source

    check_monitoring_params(run)
    delay = timedelta(days=run.config.label_delay_days)
    start = (datetime.fromisoformat(run.interval_start) - delay).isoformat()
    end = (datetime.fromisoformat(run.interval_end) - delay).isoformat()
    labels = run.param("labels") or run.config.labels_for(
        run.model_name, source=champion_source(run.model_name, run.config))
    if not labels:
        checked = record_no_labels(model_name=run.model_name, interval_start=start,
                                   interval_end=end, config=run.config, run_key=run.run_key)
        raise NoLabels(checked.reason, result=checked.to_dict())
    return score(model_name=run.model_name, interval_start=start, interval_end=end,
                 labels_uri=str(labels), config=run.config, run_key=run.run_key)


def request_retrain(run: RunSpec, drift: DriftCheck | None,
                    performance: PerformanceCheck | None) -> RetrainDecision:
    """Ask for retraining (the DAG emits the asset event from its ``asset_extra``) or say why
    not (skipped). ``drift``/``performance``: the checks (``None``: skipped)."""
    from pipeline_tasks.monitoring.retrain import decide_retrain

    decision = decide_retrain(model_name=run.model_name, drift=drift, performance=performance,
                              interval_end=run.interval_end, dag_id=run.dag_id,
                              run_id=run.run_id, config=run.config)
    if not decision.retrain and decision.cooldown_until:  # a real cause, held back by the cool-down
        raise RetrainWithheld(f"no retraining: {decision.reason}",
                              result={**decision.to_dict(),
                                      "report_uri": drift.report_uri if drift else None})
    if not decision.retrain:
        raise StageSkipped(f"no retraining: {decision.reason}")
    return decision


def check_batch_params(run: RunSpec) -> tuple[str | None, str] | None:
    """Refuse bad params of a batch-scoring run before any work; returns the output table
    (``(schema, table)``) or None. The source must lie under ``allowed_source_roots`` (or be a
    query on an allowed connection); the output connection must be in
    ``allowed_output_conn_ids``."""
    _ = run.config
    check_param_values(run, schema.BATCH_DAG)
    _ = run.model_name
    if run.param("sql_conn_id"):
        check_sql_conn_id(str(run.param("sql_conn_id")), run.config)
    else:
        check_source_param("source", run.source, run.config)
    conn_id = run.param("output_conn_id")
    check_output_conn_id(conn_id, run.config)
    table = check_table_name("output_table", run.param("output_table"))
    if bool(conn_id) != bool(table):
        raise ConfigError("params 'output_conn_id' and 'output_table' go together: give both "
                          "for a SQL output, or neither")
    return table


def resolve_scoring_model(run: RunSpec) -> ScoringModel:
    """The version ``model_ref`` names when the run starts: every chunk of the run is scored
    with it, even if the alias moves meanwhile."""
    from pipeline_tasks.scoring.batch import resolve_model

    check_batch_params(run)
    return resolve_model(run.model_name, str(run.param("model_ref")), run.config)


def score_batch(run: RunSpec, scoring_model: ScoringModel) -> BatchScoreResult:
    """The run's interval of ``source`` scored with the resolved version and published."""
    from pipeline_tasks.scoring.batch import score_interval

    check_batch_params(run)
    return score_interval(
        run.source, model=scoring_model, interval_start=run.interval_start,
        interval_end=run.interval_end, config=run.config, dag_id=run.dag_id,
        run_id=run.run_id, sql_url=run.sql_url, id_column=run.param("id_column"),
        time_column=run.param("time_column"), chunk_rows=run.config.batch_chunk_rows,
        max_reject_share=run.config.batch_max_reject_share)


def export_scores(run: RunSpec, scored: BatchScoreResult) -> SqlExportResult:
    """The published partition into the output table (skipped when the run names none)."""
    from pipeline_tasks.scoring.sql_export import export_scores as export

    table = check_batch_params(run)
    if table is None:
        raise StageSkipped("no SQL output: the run names no output table")
    if not run.output_sql_url:
        raise ConfigError("param 'output_conn_id' was not resolved to a connection URL")
    return export(scores_uri=scored.scores_uri, model_name=scored.model_name,
                  interval_start=scored.interval_start, interval_end=scored.interval_end,
                  sql_url=run.output_sql_url, table=table)


def run_all(run: RunSpec) -> dict[str, Any]:
    """The training stages in order (``ingest`` to ``register``), in this process: the same calls
    the DAG makes, without Airflow. ``deploy`` is left out: it starts a model server. Returns
    each stage's typed result by stage name; a cache hit whose version is judged already stops
    after ``ingest`` (the same batch as before) or ``train`` (``results["skipped"]`` says why),
    as the DAG skips the rest."""
    results: dict[str, Any] = {}
    results["ingest"] = ingest(run)
    if results["ingest"].nothing_new:
        results["skipped"] = results["ingest"].nothing_new
        return results
    results["validate"] = validate(run, results["ingest"])
    results["version"] = version(run, results["ingest"], results["validate"])
    results["train"] = train(run, results["ingest"], results["version"])
    if results["train"].nothing_new:
        results["skipped"] = results["train"].nothing_new
        return results
    results["evaluate"] = evaluate(run, results["train"])
    results["register"] = register(run, results["train"], results["evaluate"])
    return results
