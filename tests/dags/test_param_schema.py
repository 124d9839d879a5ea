"""One param schema: the trigger form's ``Param``s, the ``RunSpec`` defaults and the first-task
validation are derived from ``pipeline_tasks.core.params`` and agree, param by param.

For every param of every DAG, values at and beyond each bound the schema declares (minimum,
maximum, enum, pattern, length, type) are offered to the form's ``Param`` and to the stage's
validation (the config's own checks included): both accept or both refuse. Runs in a fresh
interpreter on a throwaway Airflow home, like the other DAG tests.
"""

from __future__ import annotations

PROBE = r"""
import json
from mlops_airflow.params import dag_params
from pipeline_tasks import stages
from pipeline_tasks.core import params as schema
from pipeline_tasks.core.config import load_config
from pipeline_tasks.core.errors import ConfigError

INTERVAL = ("2013-03-01T00:00:00+00:00", "2013-03-02T00:00:00+00:00")


def run(dag_id, **params):
    return stages.RunSpec(dag_id=dag_id, run_id="manual__schema", interval_start=INTERVAL[0],
                          interval_end=INTERVAL[1], params=params)


def probes(spec):
    # values at and beyond each declared bound (empty values mean "the default": not probed)
    values = {"boolean": [True, False, 1], "string": [5]}.get(spec.type, ["text", True])
    if spec.type in ("integer", "number"):
        for bound in (spec.minimum, spec.maximum):
            if bound is not None:
                values += [bound - 1, bound, bound + 1]
        values += [3] if spec.type == "integer" else [0.5, 3]
    for member in spec.enum or ():
        values += [member, member.upper()]
    if spec.type == "string":
        values += ["x", "abc", "flights_is_late", "not a name!", "../etc", "a..b", "a/b",
                   ".hidden", "previous", "7", "v7; rm", "x" * 40]
    return values


config = load_config()
out = {}
for dag_id, declared in schema.SCHEMAS.items():
    form = dag_params(dag_id, config)
    out[dag_id] = {"form": list(form), "declared": [s.name for s in declared if s.in_form],
                   "params": {}}
    for spec in declared:
        if not spec.in_form:
            continue
        param = form[spec.name]
        form_default, default = param.value, run(dag_id).param(spec.name)
        cases = []
        for value in probes(spec):
            try:
                param.resolve(value=value)
                by_form = True
            except Exception:
                by_form = False
            probe = run(dag_id, **{spec.name: value})
            try:
                _ = probe.config  # the config's own checks of a field the param overrides
                stages.check_param_values(probe, dag_id)
                by_stage, why = True, ""
            except ConfigError as exc:
                by_stage, why = False, str(exc)
            cases.append({"value": value, "form": by_form, "stage": by_stage, "why": why})
        out[dag_id]["params"][spec.name] = {
            "form_default": form_default, "runspec_default": default, "cases": cases}
    # the form's defaults, submitted as they are, pass the first task's checks
    defaults = {name: p.value for name, p in dag_params(dag_id, config).items()}
    check = {"ml_training_pipeline": stages.check_params,
             "ml_drift_monitoring": stages.check_monitoring_params,
             "ml_model_rollback": lambda r: stages.check_param_values(r, "ml_model_rollback"),
             "ml_batch_scoring": stages.check_batch_params}
    check[dag_id](run(dag_id, **defaults))
print(json.dumps(out))
"""


def test_form_runspec_defaults_and_first_task_checks_agree(tmp_path, run_probe):
    (tmp_path / "landing" / "flights").mkdir(parents=True)
    dags = run_probe(PROBE)
    assert set(dags) == {"ml_training_pipeline", "ml_drift_monitoring", "ml_model_rollback",
                         "ml_batch_scoring"}
    for dag_id, dag in dags.items():
        assert dag["form"] == dag["declared"], dag_id  # every declared param, in order
        for name, param in dag["params"].items():
            where = f"{dag_id}:{name}"
            # an empty text default means "none" to the stages
            form_default = None if param["form_default"] == "" else param["form_default"]
            assert param["runspec_default"] == form_default, where
            for case in param["cases"]:
                assert case["form"] == case["stage"], (where, case)
                if not case["stage"]:
                    assert name in case["why"], (where, case)  # the message names the param
            assert any(not c["stage"] for c in param["cases"]) or name in (
                "source", "sql_conn_id", "time_column", "force_reason", "current", "labels",
                "output_conn_id",
            ), f"{where}: no probe was refused"


def test_every_bound_of_the_old_forms_is_kept():
    """The stricter bound wins where the form and the stages disagreed (issue 13)."""
    from pipeline_tasks.core import params as schema

    training = {p.name: p for p in schema.TRAINING}
    assert (training["training_window_days"].minimum, training["training_window_days"].maximum) \
        == (0, 3660)
    assert (training["serving_port"].minimum, training["serving_port"].maximum) == (1, 65535)
    assert training["min_baseline_lift"].maximum == 1 and training["min_champion_delta"].minimum == 0
    assert training["task_type"].enum == ("auto", "classification", "regression")
    assert {p.name for p in schema.CONFIG_OVERRIDES.values()} == {
        "min_baseline_lift", "min_champion_delta", "min_primary_metric", "search_time_budget_s",
        "holdout_fraction", "seed", "serving_target", "serving_port", "require_approval",
        "max_reject_share", "chunk_rows", "max_slice_regression", "min_slice_rows",
        "max_fairness_gap"}


XCOM_PROBE = r"""
import json
from dataclasses import dataclass, field
from mlops_airflow.runtime import to_xcom


@dataclass(frozen=True)
class Decision:
    retrain: bool
    asset_extra: dict = field(default_factory=dict)

    def to_dict(self):
        return {"retrain": self.retrain, "asset_extra": dict(self.asset_extra)}


@dataclass(frozen=True)
class Plain:
    uri: str


print(json.dumps([to_xcom(Decision(True, {"drift_run_id": "r1"})), to_xcom(Plain("file:///x")),
                  to_xcom({"rows": 3}), to_xcom("deploy")]))
"""


def test_the_glue_stores_a_typed_result_as_its_xcom_dict(run_probe):
    assert run_probe(XCOM_PROBE) == [
        {"retrain": True, "asset_extra": {"drift_run_id": "r1"}}, {"uri": "file:///x"},
        {"rows": 3}, "deploy"]
