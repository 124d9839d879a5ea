"""The promotion gate as a pure function of metrics and thresholds: no MLflow, no I/O.

``evaluate`` scores the candidate, the trivial baseline and the champion on one holdout and asks
``decide`` for the verdict; ``with_overrides`` then applies the contract check (a breaking change
is never blessed on its own) and ``force_promote``. The rule:

1. Absolute part, always applied. The candidate's primary metric must beat the trivial baseline
   by ``min_baseline_lift`` relative to the baseline's magnitude: ``cand >= base + lift*|base|``
   when greater is better, ``cand <= base - lift*|base|`` when lower is better (a baseline of 0:
   the candidate must simply be better). ``min_primary_metric``, if set, is a floor (greater is
   better) or a ceiling (lower is better).
2. Champion part, when there is a champion's score. The candidate must be better than the
   champion by at least ``min_champion_delta`` (``cand >= champ + delta``, or ``cand <= champ -
   delta``); with a delta of 0 it must be strictly better, so an equal model is not promoted and
   a worse one never is.

3. Slices, when the candidate is compared with a champion and slices are configured: no gated
   slice may regress (``slices.SliceResult.regressed``: worse than the champion's slice metric by
   more than ``max_slice_regression`` of it, beyond the bootstrap confidence interval), even if
   the candidate wins overall. Slices too small to judge are reported, not gated.
4. Fairness, when ``max_fairness_gap`` is set: the candidate's gap over each sensitive column
   (``fairness.FairnessResult.gap``) must not exceed it.

The comparisons are those of MLflow's ``MetricThreshold`` (``min_relative_change``,
``threshold``, ``min_absolute_change``), which this gate used before it became pure.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pipeline_tasks.core.results import XComResult

RULE = (
    "absolute: primary metric beats the trivial baseline by min_baseline_lift relative to |baseline|"
    " and respects min_primary_metric (floor, or ceiling when lower is better); champion: better "
    "than the champion by at least min_champion_delta, strictly better when it is 0; slices: no "
    "slice with min_slice_rows rows worse than the champion's by more than max_slice_regression "
    "of it, beyond the bootstrap interval; fairness: gap at most max_fairness_gap when set"
)
# "strictly better" is "better by more than this" (MLflow's min_absolute_change must be > 0).
STRICT_IMPROVEMENT = 1e-12
# MLflow's fallback when the baseline is 0 (no relative change): better by more than this.
_ZERO_BASELINE_STEP = 1e-10

BASELINE_LIFT = "baseline_lift"
METRIC_BOUND = "metric_bound"
CHAMPION = "champion"
SLICES = "slices"
FAIRNESS = "fairness"
FINITE = "finite"


@dataclass(frozen=True)
class Thresholds:
    """The gate's thresholds: plain values (the config's ``min_*`` fields)."""

    min_baseline_lift: float = 0.05
    min_primary_metric: float | None = None
    min_champion_delta: float = 0.0

    def __post_init__(self) -> None:
        # the config refuses such values with a ConfigError; reaching here is a caller's bug
        if not 0.0 <= float(self.min_baseline_lift) <= 1.0:
            raise ValueError(f"min_baseline_lift must be in [0, 1], got {self.min_baseline_lift}")
        if float(self.min_champion_delta) < 0:
            raise ValueError(f"min_champion_delta must be >= 0, got {self.min_champion_delta}")


@dataclass(frozen=True)
class Check:
    """One part of the gate: its name, whether it passed, and the words for the reason."""

    name: str
    passed: bool
    detail: str


@dataclass(frozen=True)
class GateVerdict:
    """The gate's answer: blessed or not, the reason in words, and each check behind it."""

    blessed: bool
    reason: str
    checks: tuple[Check, ...] = ()

    def check(self, name: str) -> Check | None:
        """The check called ``name``, or None when it did not apply."""
        return next((c for c in self.checks if c.name == name), None)


def fmt(value: float, signed: bool = False) -> str:
    """A metric value for the reason: 2 decimals from 100 up, else 4."""
    sign = "+" if signed else ""
    return f"{value:{sign}.2f}" if abs(value) >= 100 else f"{value:{sign}.4f}"


def is_better(value: float, than: float, greater_is_better: bool) -> bool:
    """``value >= than`` when greater is better, else ``value <= than`` (NaN: never better)."""
    return value >= than if greater_is_better else value <= than


def beats_baseline(value: float, base: float, lift: float, greater_is_better: bool) -> bool:
    """Better than ``base`` by ``lift`` relative to ``|base|`` (MLflow's min_relative_change)."""
    if base == 0:
        step = _ZERO_BASELINE_STEP if greater_is_better else -_ZERO_BASELINE_STEP
        return is_better(value, base + step, greater_is_better)
    change = (value - base) if greater_is_better else (base - value)
    return not change / abs(base) < lift


def beats_champion(value: float, champ: float, delta: float, greater_is_better: bool) -> bool:
    """Better than ``champ`` by at least ``delta`` (strictly, when ``delta`` is 0)."""
    step = delta if delta > 0 else STRICT_IMPROVEMENT
    return is_better(value, champ + step if greater_is_better else champ - step,
                     greater_is_better)


def decide(*, metric: str, greater_is_better: bool, candidate: Mapping[str, float],
           baseline: Mapping[str, float], champion: Mapping[str, float] | None,
           thresholds: Thresholds, champion_version: str | None = None,
           champion_note: str | None = None, slices: Sequence[Any] = (),
           fairness: Sequence[Mapping[str, Any]] = (), max_slice_regression: float = 0.0,
           max_fairness_gap: float | None = None) -> GateVerdict:
    """The verdict on ``candidate``'s ``metric`` against the trivial ``baseline`` and, when given,
    the ``champion`` (its metrics on the same rows), its slices (``slices.SliceResult``) and its
    fairness results (``FairnessResult.to_dict()``). ``champion_note`` ends the reason (for
    example "no champion yet")."""
    value = candidate[metric]
    base = baseline.get(metric)
    if not math.isfinite(value):
        reason = f"rejected: candidate {metric} is {value}"
        return GateVerdict(False, reason, (Check(FINITE, False, reason),))
    if base is None or not math.isfinite(base):
        reason = f"rejected: the trivial baseline has no finite {metric} ({base})"
        return GateVerdict(False, reason, (Check(FINITE, False, reason),))
    better = ">=" if greater_is_better else "<="
    lift = float(thresholds.min_baseline_lift)
    need = base + lift * abs(base) if greater_is_better else base - lift * abs(base)

    checks = []
    if beats_baseline(value, base, lift, greater_is_better):
        checks.append(Check(BASELINE_LIFT, True,
                            f"{metric} {fmt(value)} beats the trivial baseline {fmt(base)} by "
                            f">={lift:.0%} (needs {better} {fmt(need)})"))
    else:
        checks.append(Check(BASELINE_LIFT, False,
                            f"{metric} {fmt(value)} does not beat the trivial baseline "
                            f"{fmt(base)} by {lift:.0%} (needs {better} {fmt(need)})"))

    floor = thresholds.min_primary_metric
    if floor is not None:
        bound = "floor" if greater_is_better else "ceiling"
        if is_better(value, float(floor), greater_is_better):
            checks.append(Check(METRIC_BOUND, True, f"meets the {bound} {floor}"))
        else:
            side = "below" if greater_is_better else "above"
            checks.append(Check(METRIC_BOUND, False, f"{metric} {fmt(value)} is {side} the "
                                                     f"{bound} min_primary_metric={floor}"))

    delta = float(thresholds.min_champion_delta)
    if champion is not None:
        champ = champion[metric]
        gain = value - champ if greater_is_better else champ - value
        if beats_champion(value, champ, delta, greater_is_better):
            checks.append(Check(CHAMPION, True, f"beats champion v{champion_version} "
                                                f"({fmt(champ)}) by {fmt(gain)}"))
        else:
            needs = (f"needs an improvement >= {delta}" if delta > 0
                     else "needs a strict improvement")
            checks.append(Check(CHAMPION, False,
                                f"{metric} {fmt(value)} is not better than champion "
                                f"v{champion_version} {fmt(champ)} (improvement "
                                f"{fmt(gain, signed=True)}; {needs})"))

    if champion is not None:
        checks.extend(_slice_checks(slices, metric, champion_version, max_slice_regression))
    if max_fairness_gap is not None:
        checks.extend(_fairness_checks(fairness, float(max_fairness_gap)))

    note = f"; {champion_note}" if champion_note else ""
    failures = [c.detail for c in checks if not c.passed]
    if failures:
        return GateVerdict(False, "rejected: " + "; ".join(failures) + note, tuple(checks))
    return GateVerdict(True, "blessed: " + " and ".join(c.detail for c in checks) + note,
                       tuple(checks))


def _slice_checks(slices: Sequence[Any], metric: str, champion_version: str | None,
                  max_regression: float) -> list[Check]:
    """One failed check per regressed slice, or one passed check over the gated slices."""
    gated = [s for s in slices if s.gated]
    if not gated:
        return []
    regressed = [s for s in gated if s.regressed]
    if not regressed:
        return [Check(SLICES, True, f"no slice regresses ({len(gated)} gated)")]
    out = []
    for s in regressed:
        low, high = s.difference_ci
        out.append(Check(SLICES, False, (
            f"slice {s.column}={s.value} regresses: {metric} {fmt(s.candidate)} vs champion "
            f"v{champion_version} {fmt(s.champion)} on {s.rows} rows (difference "
            f"[{fmt(low, signed=True)}, {fmt(high, signed=True)}] at the bootstrap interval; "
            f"max_slice_regression {max_regression:.0%} of the champion's)")))
    return out


def _fairness_checks(fairness: Sequence[Mapping[str, Any]], max_gap: float) -> list[Check]:
    out = []
    for result in fairness:
        gap = float(result.get("gap") or 0.0)
        parts = [f"{label} {fmt(float(result[key]))}" for key, label in (
            ("demographic_parity_difference", "demographic parity difference"),
            ("equalized_odds_difference", "equalized odds difference"),
            ("worst_group_gap", "worst-group gap")) if result.get(key) is not None]
        detail = f"fairness over {result['column']}: gap {fmt(gap)} ({', '.join(parts)})"
        if gap > max_gap:
            out.append(Check(FAIRNESS, False, f"{detail} exceeds max_fairness_gap {max_gap}"))
        else:
            out.append(Check(FAIRNESS, True, f"{detail} within max_fairness_gap {max_gap}"))
    return out


def with_overrides(verdict: GateVerdict, *, breaking_change: str | None = None,
                   force_reason: str | None = None) -> tuple[bool, str]:
    """``(blessed, reason)`` once the contract and the override are applied to the gate's verdict.

    ``breaking_change`` (the summary of a change that breaks the champion's clients) blocks the
    candidate whatever the metrics say; ``force_reason`` (``force_promote``) blesses it anyway,
    and the reason keeps what the gate alone would have said.
    """
    blessed, reason = verdict.blessed, verdict.reason
    if breaking_change:
        blessed = False
        reason = (f"blocked (breaking change): {breaking_change}. It becomes champion only with "
                  f"force_promote and a reason, or through the approval step; the other gates "
                  f"said: {verdict.reason}")
    if force_reason is not None:
        if not force_reason.strip():
            raise ValueError("a forced promotion needs a non-empty reason")
        reason = (f"blessed by override (force_promote): {force_reason.strip()}; "
                  f"the gate alone would have said: {reason}")
        blessed = True
    return blessed, reason


def deltas(candidate: Mapping[str, float], baseline: Mapping[str, float],
           champion: Mapping[str, float] | None) -> dict[str, float]:
    """``<metric>_vs_baseline`` and ``<metric>_vs_champion``: the candidate minus the other."""
    out = {}
    for name, value in candidate.items():
        if name in baseline:
            out[f"{name}_vs_baseline"] = value - baseline[name]
        if champion and name in champion:
            out[f"{name}_vs_champion"] = value - champion[name]
    return out


@dataclass(frozen=True)
class EvaluationDecision(XComResult):
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
    # per slice (SliceResult.to_dict()) and per sensitive column (FairnessResult.to_dict())
    slices: list[dict] = dataclasses.field(default_factory=list)
    fairness: list[dict] = dataclasses.field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(dataclasses.asdict(self)))
