"""The evaluation gate: score the candidate, the trivial baseline and the champion on one holdout.

The rule (thresholds come from the config, never from code):

1. Absolute part, always applied. The candidate's primary metric must beat the trivial baseline
   (class priors / the mean) by ``min_baseline_lift`` relative to the baseline's magnitude:
   ``cand >= base + lift*|base|`` when greater is better, ``cand <= base - lift*|base|`` (that is
   ``base*(1-lift)`` for a positive baseline) when lower is better. If ``min_primary_metric`` is
   set, it is a floor (greater is better) or a ceiling (lower is better).
2. Champion part, when a champion exists and can score the holdout. The candidate must be better
   than the champion by at least ``min_champion_delta`` (``cand >= champ + delta``, or
   ``cand <= champ - delta`` when lower is better); with a delta of 0 it must be strictly better,
   so an equal model is not promoted and a worse model never is.

3. Contract part. The candidate's input contract is compared with the champion's
   (``schema.compare_contracts``): a removed, renamed or retyped input, a new required input, or
   another target or task type would break the champion's clients. Such a candidate is never
   blessed on its own (``breaking_change``); it waits for a person (the approval step) or a
   ``force_promote`` with a reason. The champion is then not scored: it cannot take the new
   inputs. A champion that should score the holdout and cannot is an error, never a silent reason
   to skip the comparison.

The verdicts come from MLflow's ``validate_evaluation_results`` with ``MetricThreshold``; the
reason string restates them in words.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
from dataclasses import dataclass
from typing import Any

from pipeline_tasks.core import model_artifacts, storage, tracking
from pipeline_tasks.core.config import PipelineConfig
from pipeline_tasks.core.errors import ConfigError, EvaluationError
from pipeline_tasks.core.schema import ModelContract, SchemaDiff
from pipeline_tasks.model.metrics import TASK_TYPES, baseline_metrics, score_model

log = logging.getLogger(__name__)

CHAMPION_ALIAS = "champion"
# MLflow's min_absolute_change must be positive; "strictly better" is "better by more than this".
_STRICT_IMPROVEMENT = 1e-12
#: What to do when the champion cannot be compared with the candidate.
CHAMPION_ADVICE = ("Roll the champion back to a sound version (ml_model_rollback), or promote "
                   "this candidate with 'Force promotion' and a reason.")
RULE = (
    "absolute: primary metric beats the trivial baseline by min_baseline_lift relative to |baseline|"
    " and respects min_primary_metric (floor, or ceiling when lower is better); champion: better "
    "than the champion by at least min_champion_delta, strictly better when it is 0"
)


@dataclass(frozen=True)
class EvaluationDecision:
    """The gate's verdict, with every number it was based on."""

    blessed: bool
    reason: str
    primary_metric: str
    greater_is_better: bool
    candidate_metrics: dict[str, float]
    baseline_metrics: dict[str, float]
    champion_metrics: dict[str, float] | None
    champion_version: str | None
    deltas: dict[str, float]
    thresholds: dict
    forced: bool
    force_reason: str | None
    # the absolute and champion gates passed: blessed unless the change is breaking
    gate_passed: bool = False
    breaking_change: bool = False
    schema_change: dict | None = None  # SchemaDiff.to_dict() against the champion

    def to_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(dataclasses.asdict(self)))


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
) -> EvaluationDecision:
    """Decide whether the candidate may become champion.

    Blessed iff (1) its primary metric beats the trivial baseline by ``min_baseline_lift``
    relative to ``|baseline|`` and respects ``min_primary_metric`` (floor; ceiling when lower is
    better), and (2) if a champion can score the holdout, it beats the champion by at least
    ``min_champion_delta`` (strictly when that is 0): equal or worse models are never blessed.

    (3) ``candidate_contract`` (its inputs, target and task type) must not break the champion's
    (see the module doc); a breaking candidate is not blessed and not compared with the champion.

    ``force_promote`` blesses regardless of the gate; it needs a non-empty ``force_reason``, and
    the decision records both the override and what the gate would have said.
    """
    if task_type not in TASK_TYPES:
        raise ConfigError(f"task_type must be one of {', '.join(TASK_TYPES)}; got {task_type!r}")
    if force_promote and not (force_reason or "").strip():
        raise ConfigError("force_promote=True needs a non-empty force_reason (who/why)")
    tracking.configure_mlflow(config)
    from pipeline_tasks.model.train import limit_threads, normalize_target

    holdout = storage.read_parquet(holdout_uri)
    if target not in holdout.columns:
        raise ConfigError(f"target column {target!r} is not in the holdout {holdout_uri}")
    y = normalize_target(holdout[target], task_type)

    # checked against the sha256 training recorded, skops with trusted types only
    candidate = model_artifacts.load_verified(candidate_model_uri).model
    with limit_threads(config):
        try:
            candidate_metrics = score_model(candidate, _model_input(candidate, holdout), y,
                                            task_type)
        except _SchemaMismatch as exc:
            raise ConfigError(f"the candidate cannot score its own holdout: {exc}") from exc
        if primary_metric not in candidate_metrics:
            raise ConfigError(
                f"primary metric {primary_metric!r} is not computed for this task "
                f"(available: {', '.join(sorted(candidate_metrics))})"
            )
        base = baseline_metrics(y, task_type)
        champion_version, diff = _contract_change(model_name, candidate_contract)
        champion_metrics, champion_note = None, None
        if champion_version is None:
            champion_note = "no champion yet"
        elif diff is not None and diff.breaking:
            champion_note = (f"{diff.summary()}: its clients would break, so champion "
                             f"v{champion_version} is not compared")
        else:
            champion_metrics = _score_champion(model_name, champion_version, holdout, y,
                                               task_type, primary_metric)

    gate_passed, gate_reason = _gate(
        metric=primary_metric,
        greater_is_better=greater_is_better,
        candidate=candidate_metrics,
        baseline=base,
        champion=champion_metrics,
        champion_version=champion_version,
        champion_note=champion_note,
        config=config,
    )
    breaking = bool(diff is not None and diff.breaking)
    blessed = gate_passed and not breaking
    reason = gate_reason
    if breaking:
        reason = (f"blocked (breaking change): {diff.summary()}. It becomes champion only with "
                  f"force_promote and a reason, or through the approval step; the other gates "
                  f"said: {gate_reason}")
    forced = bool(force_promote)
    if forced:
        reason = (
            f"blessed by override (force_promote): {force_reason.strip()}; "
            f"the gate alone would have said: {reason}"
        )
        blessed = True
    log.info("evaluation of %s: %s", candidate_model_uri, reason)

    deltas = {}
    for name, value in candidate_metrics.items():
        if name in base:
            deltas[f"{name}_vs_baseline"] = value - base[name]
        if champion_metrics and name in champion_metrics:
            deltas[f"{name}_vs_champion"] = value - champion_metrics[name]
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
        thresholds={
            "min_baseline_lift": config.min_baseline_lift,
            "min_primary_metric": config.min_primary_metric,
            "min_champion_delta": config.min_champion_delta,
            "rule": RULE,
        },
        forced=forced,
        force_reason=force_reason.strip() if forced else None,
        gate_passed=gate_passed,
        breaking_change=breaking,
        schema_change=diff.to_dict() if diff is not None and diff.changed else None,
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
        raise EvaluationError(
            f"champion v{version} of {model_name}: its model files cannot be read ({exc})",
            advice=CHAMPION_ADVICE) from exc
    if not champion.inputs:
        return version, None
    return version, compare_contracts(champion, candidate)


def _model_input(model: Any, holdout):
    """The holdout columns the model was fitted on, normalised as in training."""
    from pipeline_tasks.model.train import normalize_features

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
        raise EvaluationError(f"champion v{version} of {model_name} is refused: {exc}",
                              advice=CHAMPION_ADVICE) from exc
    except Exception as exc:  # an unreadable model: zip, skops and OS errors alike
        raise EvaluationError(f"champion v{version} of {model_name} cannot be loaded "
                              f"({type(exc).__name__}: {exc})", advice=CHAMPION_ADVICE) from exc
    if is_classifier(champion) != (task_type == "classification"):
        kind = "classifier" if is_classifier(champion) else "regressor"
        raise EvaluationError(f"champion v{version} is a {kind} and cannot score a {task_type} "
                              "holdout, and its signature does not record its task type",
                              advice=CHAMPION_ADVICE)
    try:
        metrics = score_model(champion, _model_input(champion, holdout), y, task_type)
    except (_SchemaMismatch, ValueError, TypeError, KeyError) as exc:
        raise EvaluationError(f"champion v{version} cannot score the candidate's holdout ({exc})",
                              advice=CHAMPION_ADVICE) from exc
    if metric not in metrics:
        raise EvaluationError(f"champion v{version} has no {metric} on this holdout",
                              advice=CHAMPION_ADVICE)
    return metrics


def _fmt(value: float, signed: bool = False) -> str:
    sign = "+" if signed else ""
    return f"{value:{sign}.2f}" if abs(value) >= 100 else f"{value:{sign}.4f}"


def _passes(metric: str, threshold, candidate: dict, baseline: dict | None) -> bool:
    """MLflow's verdict for one ``MetricThreshold``."""
    import mlflow
    from mlflow.models import EvaluationResult
    from mlflow.models.evaluation.validation import ModelValidationFailedException

    try:
        mlflow.validate_evaluation_results(
            {metric: threshold},
            EvaluationResult(metrics=candidate, artifacts={}, run_id=""),
            EvaluationResult(metrics=baseline, artifacts={}, run_id="") if baseline else None,
        )
    except ModelValidationFailedException as exc:
        log.info("gate check failed: %s", exc.message)
        return False
    return True


def _gate(*, metric, greater_is_better, candidate, baseline, champion, champion_version,
          champion_note, config: PipelineConfig) -> tuple[bool, str]:
    from mlflow.models import MetricThreshold

    value = candidate[metric]
    base = baseline.get(metric)
    if not math.isfinite(value):
        return False, f"rejected: candidate {metric} is {value}"
    if base is None or not math.isfinite(base):
        return False, f"rejected: the trivial baseline has no finite {metric} ({base})"
    better = ">=" if greater_is_better else "<="
    lift = float(config.min_baseline_lift)
    need = base + lift * abs(base) if greater_is_better else base - lift * abs(base)

    failures, passes = [], []
    lift_ok = _passes(
        metric,
        MetricThreshold(min_relative_change=lift, greater_is_better=greater_is_better),
        {metric: value},
        {metric: base},
    )
    if lift_ok:
        passes.append(f"{metric} {_fmt(value)} beats the trivial baseline {_fmt(base)} by "
                      f">={lift:.0%} (needs {better} {_fmt(need)})")
    else:
        failures.append(f"{metric} {_fmt(value)} does not beat the trivial baseline {_fmt(base)} "
                        f"by {lift:.0%} (needs {better} {_fmt(need)})")

    floor = config.min_primary_metric
    if floor is not None:
        floor_ok = _passes(
            metric,
            MetricThreshold(threshold=float(floor), greater_is_better=greater_is_better),
            {metric: value},
            None,
        )
        bound = "floor" if greater_is_better else "ceiling"
        if not floor_ok:
            side = "below" if greater_is_better else "above"
            failures.append(f"{metric} {_fmt(value)} is {side} the {bound} "
                            f"min_primary_metric={floor}")
        else:
            passes.append(f"meets the {bound} {floor}")

    delta = float(config.min_champion_delta)
    if champion is not None:
        champ = champion[metric]
        gain = value - champ if greater_is_better else champ - value
        champ_ok = _passes(
            metric,
            MetricThreshold(min_absolute_change=delta if delta > 0 else _STRICT_IMPROVEMENT,
                            greater_is_better=greater_is_better),
            {metric: value},
            {metric: champ},
        )
        needs = f"needs an improvement >= {delta}" if delta > 0 else "needs a strict improvement"
        if champ_ok:
            passes.append(f"beats champion v{champion_version} ({_fmt(champ)}) by {_fmt(gain)}")
        else:
            failures.append(
                f"{metric} {_fmt(value)} is not better than champion v{champion_version} "
                f"{_fmt(champ)} (improvement {_fmt(gain, signed=True)}; {needs})"
            )
    note = f"; {champion_note}" if champion_note else ""
    if failures:
        return False, "rejected: " + "; ".join(failures) + note
    return True, "blessed: " + " and ".join(passes) + note
