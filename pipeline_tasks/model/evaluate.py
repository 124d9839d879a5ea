"""The evaluation stage: score the candidate, the trivial baseline and the champion on one holdout,
then ask the promotion policy (``pipeline_tasks.model.policy``, a pure function of those metrics
and the config's thresholds) for the verdict.

The gate's rule is in ``policy``. On top of it, the contract part: the candidate's input
contract is compared with the champion's (``schema.compare_contracts``): a removed, renamed or
retyped input, a new required input, or another target or task type would break the champion's
clients. Such a candidate is never blessed on its own (``breaking_change``); it waits for a
person (the approval step) or a ``force_promote`` with a reason. The champion is then not
scored: it cannot take the new inputs. A champion that should score the holdout and cannot is an
error (``EvaluationError``), never a silent reason to skip the comparison.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

from pipeline_tasks.core import model_artifacts, storage, tracking
from pipeline_tasks.core.config import PipelineConfig
from pipeline_tasks.core.errors import ConfigError, EvaluationError
from pipeline_tasks.core.schema import ModelContract, SchemaDiff
from pipeline_tasks.model import policy
from pipeline_tasks.model.estimator import limit_threads
from pipeline_tasks.model.features import normalize_features, normalize_target
from pipeline_tasks.model.metrics import TASK_TYPES, baseline_metrics
from pipeline_tasks.model.policy import RULE, EvaluationDecision
from pipeline_tasks.model.transient import is_transient

log = logging.getLogger(__name__)

__all__ = ["CHAMPION_ADVICE", "RULE", "EvaluationDecision", "evaluate_candidate"]

#: What to do when the champion cannot be compared with the candidate.
CHAMPION_ADVICE = ("Roll the champion back to a sound version (ml_model_rollback), or promote "
                   "this candidate with 'Force promotion' and a reason.")
#: What to do when the model store did not answer (the task is retried).
RETRY_ADVICE = "The MLflow server or its artifact store did not answer; the task is retried."


class _SchemaMismatch(Exception):
    """A model cannot take the holdout as input (internal: becomes part of the reason)."""


def evaluate_candidate(
    *,
    model_name: str,
    candidate_model_uri: str,
    holdout_uri: str,
    target: str,
    task_type: str,
    primary_metric: str,
    greater_is_better: bool,
    config: PipelineConfig,
    force_promote: bool = False,
    force_reason: str | None = None,
    candidate_contract: ModelContract | None = None,
    slice_columns: list[str] | None = None,
    sensitive_columns: list[str] | None = None,
) -> EvaluationDecision:
    """Decide whether the candidate may become champion.

    Blessed iff (1) its primary metric beats the trivial baseline by ``min_baseline_lift``
    relative to ``|baseline|`` and respects ``min_primary_metric`` (floor; ceiling when lower is
    better), and (2) if a champion can score the holdout, it beats the champion by at least
    ``min_champion_delta`` (strictly when that is 0): equal or worse models are never blessed.

    (3) ``candidate_contract`` (its inputs, target and task type) must not break the champion's
    (see the module doc); a breaking candidate is not blessed and not compared with the champion.

    (4) No slice of ``slice_columns`` (default: ``config.slices_for(model_name)``) with enough
    rows may regress against the champion beyond its bootstrap interval (``model.slices``), and
    with ``max_fairness_gap`` set, the candidate's fairness gap over each of
    ``sensitive_columns`` (default: ``config.sensitive_for``; Fairlearn, ``model.fairness``) must
    stay within it. Every slice and fairness result is recorded in the decision, gated or not.

    ``force_promote`` blesses regardless of the gate; it needs a non-empty ``force_reason``, and
    the decision records both the override and what the gate would have said.
    """
    if task_type not in TASK_TYPES:
        raise ConfigError(f"task_type must be one of {', '.join(TASK_TYPES)}; got {task_type!r}")
    if force_promote and not (force_reason or "").strip():
        raise ConfigError("force_promote=True needs a non-empty force_reason (who/why)")
    tracking.configure_mlflow(config)
    holdout = storage.read_parquet(holdout_uri)
    if target not in holdout.columns:
        raise EvaluationError(f"target column {target!r} is not in the holdout {holdout_uri}")
    y = normalize_target(holdout[target], task_type)

    # checked against the sha256 training recorded, skops with trusted types only
    candidate = model_artifacts.load_verified(candidate_model_uri).model
    slice_columns = config.slices_for(model_name) if slice_columns is None else slice_columns
    sensitive = config.sensitive_for(model_name) if sensitive_columns is None \
        else sensitive_columns
    log.info("evaluating %s on %d holdout rows; slices: %s; sensitive columns: %s", model_name,
             len(holdout), ", ".join(slice_columns) or "none", ", ".join(sensitive) or "none")
    with limit_threads(config):
        try:
            candidate_output = _output(candidate, _model_input(candidate, holdout), task_type)
        except _SchemaMismatch as exc:
            raise EvaluationError(f"the candidate cannot score its own holdout: {exc}") from exc
        candidate_metrics = _metrics(candidate_output, y, task_type)
        if primary_metric not in candidate_metrics:  # the caller mixed up metric and task
            raise ValueError(
                f"primary metric {primary_metric!r} is not computed for this task "
                f"(available: {', '.join(sorted(candidate_metrics))})"
            )
        base = baseline_metrics(y, task_type)
        champion_version, diff = _contract_change(model_name, candidate_contract)
        champion_metrics, champion_note, champion_output = None, None, None
        if champion_version is None:
            champion_note = "no champion yet"
        elif diff is not None and diff.breaking:
            champion_note = (f"{diff.summary()}: its clients would break, so champion "
                             f"v{champion_version} is not compared")
        else:
            champion_metrics, champion_output = _score_champion(
                model_name, champion_version, holdout, y, task_type, primary_metric)
    slices = _slices(holdout, y, slice_columns, primary_metric, greater_is_better, task_type,
                     candidate_output, champion_output, config)
    fairness = _fairness(holdout, y, sensitive, task_type, candidate_output, config)

    verdict = _verdict(
        metric=primary_metric,
        greater_is_better=greater_is_better,
        candidate=candidate_metrics,
        baseline=base,
        champion=champion_metrics,
        champion_version=champion_version,
        champion_note=champion_note,
        config=config,
        slices=slices,
        fairness=fairness,
    )
    breaking = bool(diff is not None and diff.breaking)
    forced = bool(force_promote)
    blessed, reason = policy.with_overrides(
        verdict,
        breaking_change=diff.summary() if breaking else None,
        force_reason=force_reason if forced else None,
    )
    log.info("evaluation of %s: %s", candidate_model_uri, reason)

    deltas = policy.deltas(candidate_metrics, base, champion_metrics)
    return EvaluationDecision(
        blessed=blessed,
        reason=reason,
        primary_metric=primary_metric,
        greater_is_better=greater_is_better,
        candidate_metrics=candidate_metrics,
        baseline_metrics=base,
        champion_metrics=champion_metrics,
        champion_version=champion_version,
        deltas=deltas,
        thresholds={**dataclasses.asdict(_thresholds(config)), "rule": RULE},
        forced=forced,
        force_reason=force_reason.strip() if forced else None,
        gate_passed=verdict.blessed,
        breaking_change=breaking,
        schema_change=diff.to_dict() if diff is not None and diff.changed else None,
        slices=[sl.to_dict() for sl in slices],
        fairness=fairness,
    )


def _contract_change(model_name: str, candidate: ModelContract | None
                     ) -> tuple[str | None, SchemaDiff | None]:
    """The champion's version and how the candidate's contract differs from its contract (None
    when there is no champion, or either side records no signature)."""
    from pipeline_tasks.core.schema import compare_contracts, version_contract
    from pipeline_tasks.model.registry import current_champion

    version = current_champion(model_name)
    if version is None or candidate is None or not candidate.inputs:
        return version, None
    try:
        champion = version_contract(model_name, version)
    except (OSError, ValueError) as exc:
        retry = is_transient(exc)  # the store did not answer: the files may be fine
        raise EvaluationError(
            f"champion v{version} of {model_name}: its model files cannot be read ({exc})",
            advice=RETRY_ADVICE if retry else CHAMPION_ADVICE, retryable=retry) from exc
    if not champion.inputs:
        return version, None
    return version, compare_contracts(champion, candidate)


def _model_input(model: Any, holdout):
    """The holdout columns the model was fitted on, normalised as in training."""
    expected = [str(c) for c in getattr(model, "feature_names_in_", [])]
    if not expected:
        raise _SchemaMismatch("the model does not record its input columns")
    missing = [c for c in expected if c not in holdout.columns]
    if missing:
        raise _SchemaMismatch(f"holdout lacks its input column(s) {', '.join(missing)}")
    return normalize_features(holdout[expected])


def _score_champion(model_name: str, version: str, holdout, y, task_type: str, metric: str):
    """The champion's metrics on the candidate's holdout. Its contract was found compatible, so
    a champion that cannot score it is an error (``EvaluationError``), never a reason to skip
    the comparison."""
    from sklearn.base import is_classifier

    try:
        # Load the version number, not the alias: the alias may move while we score. Its files
        # must match the sha256 recorded at registration and be skops of trusted types.
        champion = model_artifacts.load_verified(f"models:/{model_name}/{version}").model
    except model_artifacts.ModelRefused as exc:
        retry = is_transient(exc)  # e.g. the registry did not answer when asked for the digest
        raise EvaluationError(f"champion v{version} of {model_name} is refused: {exc}",
                              advice=RETRY_ADVICE if retry else CHAMPION_ADVICE,
                              retryable=retry) from exc
    except Exception as exc:  # an unreadable model: zip, skops and OS errors alike
        retry = is_transient(exc)  # ... or a download the server did not answer: retried
        raise EvaluationError(f"champion v{version} of {model_name} cannot be loaded "
                              f"({type(exc).__name__}: {exc})",
                              advice=RETRY_ADVICE if retry else CHAMPION_ADVICE,
                              retryable=retry) from exc
    if is_classifier(champion) != (task_type == "classification"):
        kind = "classifier" if is_classifier(champion) else "regressor"
        raise EvaluationError(f"champion v{version} is a {kind} and cannot score a {task_type} "
                              "holdout, and its signature does not record its task type",
                              advice=CHAMPION_ADVICE)
    try:
        output = _output(champion, _model_input(champion, holdout), task_type)
        metrics = _metrics(output, y, task_type)
    except (_SchemaMismatch, ValueError, TypeError, KeyError) as exc:
        raise EvaluationError(f"champion v{version} cannot score the candidate's holdout ({exc})",
                              advice=CHAMPION_ADVICE) from exc
    if metric not in metrics:
        raise EvaluationError(f"champion v{version} has no {metric} on this holdout",
                              advice=CHAMPION_ADVICE)
    return metrics, output


def _output(model: Any, X, task_type: str):
    """What a model says about the holdout, computed once for the metrics, the slices and the
    fairness report: ``(proba, classes)`` for a classifier, predicted values for a regressor."""
    if task_type == "classification":
        if not hasattr(model, "predict_proba"):
            raise TypeError(f"{type(model).__name__} has no predict_proba: not a classifier")
        return model.predict_proba(X), list(model.classes_)
    return model.predict(X)


def _metrics(output, y, task_type: str) -> dict[str, float]:
    from pipeline_tasks.model.metrics import classification_metrics, regression_metrics

    if task_type == "classification":
        proba, classes = output
        return classification_metrics(y, proba, classes)
    return regression_metrics(y, output)


def _baseline_output(y, task_type: str):
    """The trivial model's output on the holdout: the class priors, or the mean."""
    import numpy as np

    values = np.asarray(y)
    if task_type == "classification":
        classes, counts = np.unique(values, return_counts=True)
        return np.tile(counts / counts.sum(), (len(values), 1)), list(classes)
    return np.full(len(values), float(values.astype(float).mean()))


def _slices(holdout, y, columns, metric, greater_is_better, task_type, candidate, champion,
            config: PipelineConfig):
    """Each slice of ``columns`` (``model.slices``); a column the holdout lacks is left out with a
    warning."""
    from pipeline_tasks.model.slices import SliceSettings, evaluate_slices

    missing = [c for c in columns if c not in holdout.columns]
    if missing:
        log.warning("slice column(s) %s are not in the holdout: not sliced", ", ".join(missing))
    if not columns or len(missing) == len(columns):
        return []
    return evaluate_slices(holdout, y, columns=columns, metric=metric,
                           greater_is_better=greater_is_better, task_type=task_type,
                           candidate=candidate, champion=champion,
                           baseline=_baseline_output(y, task_type),
                           settings=SliceSettings.from_config(config))


def _fairness(holdout, y, columns, task_type: str, candidate, config: PipelineConfig
              ) -> list[dict]:
    """The candidate's fairness over each sensitive column the holdout carries (Fairlearn)."""
    if not columns:
        return []
    import numpy as np

    from pipeline_tasks.model.fairness import fairness_report

    if task_type == "classification":
        proba, classes = candidate
        predicted = np.asarray(classes)[np.asarray(proba).argmax(axis=1)]
    else:
        predicted = np.asarray(candidate)
    out = []
    for column in columns:
        if column not in holdout.columns:
            log.warning("sensitive column %r is not in the holdout: no fairness report for it",
                        column)
            continue
        out.append(fairness_report(np.asarray(y), predicted, holdout[column],
                                   task_type=task_type, column=column,
                                   min_group_rows=config.min_slice_rows).to_dict())
    return out


def _thresholds(config: PipelineConfig) -> policy.Thresholds:
    """The gate's thresholds: data in the config, never literals in code."""
    return policy.Thresholds(min_baseline_lift=config.min_baseline_lift,
                             min_primary_metric=config.min_primary_metric,
                             min_champion_delta=config.min_champion_delta)


def _verdict(*, metric, greater_is_better, candidate, baseline, champion, champion_version,
             champion_note, config: PipelineConfig, slices=(), fairness=()
             ) -> policy.GateVerdict:
    """The promotion policy's verdict on these metrics under ``config``'s thresholds."""
    return policy.decide(metric=metric, greater_is_better=greater_is_better,
                         candidate=candidate, baseline=baseline, champion=champion,
                         thresholds=_thresholds(config), champion_version=champion_version,
                         champion_note=champion_note, slices=slices, fairness=fairness,
                         max_slice_regression=config.max_slice_regression,
                         max_fairness_gap=config.max_fairness_gap)


def _gate(**kwargs) -> tuple[bool, str]:
    """``(passed, reason)`` of ``_verdict`` (the gate's earlier signature, kept for callers)."""
    verdict = _verdict(**kwargs)
    return verdict.blessed, verdict.reason
