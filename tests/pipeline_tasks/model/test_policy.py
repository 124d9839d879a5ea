"""The promotion policy: a pure function of metrics and thresholds (no MLflow, no model, no I/O)."""

from __future__ import annotations

import math
import sys

import pytest

from pipeline_tasks.model import policy
from pipeline_tasks.model.policy import GateVerdict, Thresholds, decide, deltas, with_overrides

DEFAULT = Thresholds()  # lift 5%, no floor, strictly better than the champion
NAN, INF = math.nan, math.inf


def verdict(value, base, champ=None, *, metric="roc_auc", gib=True, thresholds=DEFAULT,
            note=None) -> GateVerdict:
    return decide(metric=metric, greater_is_better=gib, candidate={metric: value},
                  baseline={metric: base}, champion=None if champ is None else {metric: champ},
                  thresholds=thresholds, champion_version=None if champ is None else "7",
                  champion_note=note)


# (id, candidate, baseline, champion, greater_is_better, thresholds, blessed, words in reason)
ROWS = [
    # no champion: only the baseline lift (and the floor) decide
    ("no-champion-good", 0.80, 0.50, None, True, DEFAULT, True,
     "blessed: roc_auc 0.8000 beats the trivial baseline 0.5000 by >=5% (needs >= 0.5250)"),
    ("no-champion-exact-lift", 0.525, 0.50, None, True, DEFAULT, True, "needs >= 0.5250"),
    ("below-baseline-lift", 0.52, 0.50, None, True, DEFAULT, False,
     ("rejected: roc_auc 0.5200 does not beat the trivial baseline 0.5000 by 5% "
     "(needs >= 0.5250)")),
    ("equal-to-baseline", 0.50, 0.50, None, True, DEFAULT, False, "does not beat"),
    ("worse-than-baseline", 0.40, 0.50, None, True, DEFAULT, False, "does not beat"),
    ("no-lift-required", 0.51, 0.50, None, True, Thresholds(min_baseline_lift=0.0), True,
     "by >=0%"),
    ("no-lift-equal-passes", 0.50, 0.50, None, True, Thresholds(min_baseline_lift=0.0), True,
     "beats the trivial baseline"),
    ("lift-of-100pct", 0.99, 0.50, None, True, Thresholds(min_baseline_lift=1.0), False,
     "needs >= 1.0000"),
    # a champion: strictly better by default, by min_champion_delta when set
    ("better-than-champion", 0.85, 0.50, 0.80, True, DEFAULT, True,
     "beats champion v7 (0.8000) by 0.0500"),
    ("worse-than-champion", 0.75, 0.50, 0.80, True, DEFAULT, False,
     ("roc_auc 0.7500 is not better than champion v7 0.8000 (improvement -0.0500; "
     "needs a strict improvement)")),
    ("equal-to-champion", 0.80, 0.50, 0.80, True, DEFAULT, False, "needs a strict improvement"),
    ("hair-better-than-champion", 0.80 + 1e-9, 0.50, 0.80, True, DEFAULT, True, "beats champion"),
    ("below-champion-delta", 0.82, 0.50, 0.80, True, Thresholds(min_champion_delta=0.05), False,
     "needs an improvement >= 0.05"),
    ("meets-champion-delta", 0.86, 0.50, 0.80, True, Thresholds(min_champion_delta=0.05), True,
     "beats champion v7"),
    ("champion-better-and-below-lift", 0.51, 0.50, 0.80, True, DEFAULT, False,
     ("does not beat the trivial baseline 0.5000 by 5% (needs >= 0.5250); roc_auc 0.5100 is not "
     "better than champion v7")),
    ("nan-champion-never-beaten", 0.90, 0.50, NAN, True, DEFAULT, False, "not better than"),
    # the floor (greater is better)
    ("below-floor", 0.80, 0.50, None, True, Thresholds(min_primary_metric=0.9), False,
     "roc_auc 0.8000 is below the floor min_primary_metric=0.9"),
    ("meets-floor", 0.90, 0.50, None, True, Thresholds(min_primary_metric=0.9), True,
     "and meets the floor 0.9"),
    # regression: lower is better, the floor is a ceiling
    ("rmse-lift-exact", 9.5, 10.0, None, False, DEFAULT, True, "(needs <= 9.5000)"),
    ("rmse-below-lift", 9.6, 10.0, None, False, DEFAULT, False,
     "rmse 9.6000 does not beat the trivial baseline 10.0000 by 5% (needs <= 9.5000)"),
    ("rmse-higher-than-baseline", 11.0, 10.0, None, False, DEFAULT, False, "does not beat"),
    ("rmse-better-than-champion", 8.0, 10.0, 8.5, False, DEFAULT, True,
     "beats champion v7 (8.5000) by 0.5000"),
    ("rmse-worse-than-champion", 8.6, 10.0, 8.5, False, DEFAULT, False,
     "rmse 8.6000 is not better than champion v7 8.5000 (improvement -0.1000"),
    ("rmse-equal-to-champion", 8.5, 10.0, 8.5, False, DEFAULT, False, "strict improvement"),
    ("rmse-above-ceiling", 8.0, 10.0, None, False, Thresholds(min_primary_metric=7.0), False,
     "rmse 8.0000 is above the ceiling min_primary_metric=7.0"),
    ("rmse-meets-ceiling", 6.0, 10.0, None, False, Thresholds(min_primary_metric=7.0), True,
     "meets the ceiling 7.0"),
    ("rmse-champion-delta", 8.3, 10.0, 8.5, False, Thresholds(min_champion_delta=0.5), False,
     "needs an improvement >= 0.5"),
    ("large-values-two-decimals", 950.0, 1000.0, 990.0, False, DEFAULT, True,
     "rmse 950.00 beats the trivial baseline 1000.00"),
    # a negative baseline (r2-like) compares on its magnitude
    ("negative-baseline", -0.9, -1.0, None, True, DEFAULT, True, "needs >= -0.9500"),
    ("negative-baseline-short", -0.96, -1.0, None, True, DEFAULT, False, "needs >= -0.9500"),
    # a zero baseline cannot be beaten "by 5%": the candidate must simply be better
    ("zero-baseline-better", 0.01, 0.0, None, True, DEFAULT, True, "beats the trivial baseline"),
    ("zero-baseline-equal", 0.0, 0.0, None, True, DEFAULT, False, "does not beat"),
    ("zero-baseline-lower-is-better", -0.01, 0.0, None, False, DEFAULT, True, "beats"),
    # numbers that are not numbers
    ("nan-candidate", NAN, 0.50, None, True, DEFAULT, False, "rejected: candidate roc_auc is nan"),
    ("inf-candidate", INF, 0.50, None, True, DEFAULT, False, "rejected: candidate roc_auc is inf"),
    ("nan-baseline", 0.80, NAN, None, True, DEFAULT, False,
     "rejected: the trivial baseline has no finite roc_auc (nan)"),
]


@pytest.mark.parametrize(("candidate", "baseline", "champion", "gib", "thresholds", "blessed",
                          "words"), [row[1:] for row in ROWS], ids=[row[0] for row in ROWS])
def test_the_gate_table(candidate, baseline, champion, gib, thresholds, blessed, words):
    metric = "roc_auc" if gib else "rmse"
    result = verdict(candidate, baseline, champion, metric=metric, gib=gib,
                     thresholds=thresholds)
    assert result.blessed is blessed, result.reason
    assert result.reason.startswith("blessed: " if blessed else "rejected: ")
    assert words in result.reason
    assert all(c.passed for c in result.checks) is blessed


def test_each_check_is_named_and_applies_only_when_it_should():
    alone = verdict(0.8, 0.5)
    assert [c.name for c in alone.checks] == [policy.BASELINE_LIFT]
    assert alone.check(policy.CHAMPION) is None
    full = verdict(0.8, 0.5, 0.9, thresholds=Thresholds(min_primary_metric=0.7))
    assert [c.name for c in full.checks] == [policy.BASELINE_LIFT, policy.METRIC_BOUND,
                                             policy.CHAMPION]
    assert full.check(policy.BASELINE_LIFT).passed and full.check(policy.METRIC_BOUND).passed
    assert not full.check(policy.CHAMPION).passed
    assert not full.blessed and "baseline" not in full.reason  # only the failing check is named


def test_the_champion_note_ends_the_reason():
    assert verdict(0.8, 0.5, note="no champion yet").reason.endswith("; no champion yet")
    assert verdict(0.5, 0.5, note="no champion yet").reason.endswith("; no champion yet")


def test_the_verdict_is_frozen():
    result = verdict(0.8, 0.5)
    with pytest.raises(AttributeError):
        result.blessed = False  # type: ignore[misc]


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"min_baseline_lift": 1.5}, r"min_baseline_lift must be in \[0, 1\]"),
    ({"min_baseline_lift": -0.1}, r"min_baseline_lift must be in \[0, 1\]"),
    ({"min_champion_delta": -1}, "min_champion_delta must be >= 0"),
])
def test_thresholds_out_of_range_are_a_callers_bug(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Thresholds(**kwargs)


# (id, gate blessed, breaking summary, force reason, blessed, reason starts with)
OVERRIDES = [
    ("plain-blessed", True, None, None, True, "blessed: x"),
    ("plain-rejected", False, None, None, False, "rejected: x"),
    ("breaking-blocks-a-blessed-one", True, "removed input(s) a", None, False,
     ("blocked (breaking change): removed input(s) a. It becomes champion only with "
     "force_promote and a reason, or through the approval step; the other gates said: blessed")),
    ("forced-rejected", False, None, " incident 42 ", True,
     ("blessed by override (force_promote): incident 42; the gate alone would have said: "
     "rejected: x")),
    ("forced-breaking", True, "removed input(s) a", "clients moved", True,
     ("blessed by override (force_promote): clients moved; the gate alone would have said: "
     "blocked (breaking change)")),
]


@pytest.mark.parametrize(("gate", "breaking", "force", "blessed", "start"),
                         [row[1:] for row in OVERRIDES], ids=[row[0] for row in OVERRIDES])
def test_the_contract_and_the_override(gate, breaking, force, blessed, start):
    base = GateVerdict(gate, ("blessed: x" if gate else "rejected: x"))
    got_blessed, reason = with_overrides(base, breaking_change=breaking, force_reason=force)
    assert got_blessed is blessed and reason.startswith(start)


def test_a_forced_promotion_needs_a_reason():
    with pytest.raises(ValueError, match="needs a non-empty reason"):
        with_overrides(GateVerdict(False, "rejected: x"), force_reason="  ")


def test_deltas_against_the_baseline_and_the_champion():
    candidate = {"roc_auc": 0.8, "accuracy": 0.7}
    assert deltas(candidate, {"roc_auc": 0.5}, None) == {"roc_auc_vs_baseline": pytest.approx(0.3)}
    both = deltas(candidate, {"roc_auc": 0.5, "accuracy": 0.6}, {"roc_auc": 0.9})
    assert both == {"roc_auc_vs_baseline": pytest.approx(0.3),
                    "accuracy_vs_baseline": pytest.approx(0.1),
                    "roc_auc_vs_champion": pytest.approx(-0.1)}


def test_the_policy_needs_no_mlflow():
    """Importing and running the policy loads neither MLflow nor any model library."""
    import subprocess

    code = ("import sys; from pipeline_tasks.model import policy; "
            "policy.decide(metric='m', greater_is_better=True, candidate={'m': 1.0}, "
            "baseline={'m': 0.5}, champion={'m': 0.9}, thresholds=policy.Thresholds()); "
            "print(sorted(m for m in ('mlflow', 'sklearn', 'pandas', 'numpy') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
