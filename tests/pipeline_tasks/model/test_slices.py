"""Sliced evaluation in the gate, with real models: a candidate that wins overall but loses one
group badly is not blessed, unless forced; a slice too small to judge is reported, not gated."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pipeline_tasks.core import storage
from pipeline_tasks.core.config import load_config
from pipeline_tasks.core.schema import model_contract
from pipeline_tasks.model.evaluate import evaluate_candidate
from pipeline_tasks.model.slices import MISSING, slice_labels
from pipeline_tasks.model.train import train_model

MODEL = "sliced"


def synthetic(n: int, seed: int) -> pd.DataFrame:
    """Group A (12%), B and C; the label follows x1 + 2 x2 in every group."""
    rng = np.random.default_rng(seed)
    group = rng.choice(["A", "B", "C"], p=[0.12, 0.44, 0.44], size=n)
    x1, x2 = rng.normal(size=n), rng.normal(size=n)
    label = (x1 + 2 * x2 + rng.normal(scale=0.7, size=n)) > 0
    return pd.DataFrame({"g": group, "x1": x1, "x2": x2, "is_late": label.astype(int)})


@pytest.fixture(scope="module")
def slice_home(tmp_path_factory):
    return str(tmp_path_factory.mktemp("slices-home"))


@pytest.fixture(scope="module")
def setup(slice_home, train_and_register, tmp_path_factory):
    """The champion learned only x1 (fair everywhere, mediocre); the candidate learned x1 and x2
    but with group A's labels inverted: much better overall, much worse on A."""
    config = load_config(home=slice_home)
    champion = synthetic(2000, 1)
    rng = np.random.default_rng(11)
    champion["is_late"] = ((champion["x1"] + rng.normal(scale=0.7, size=2000)) > 0).astype(int)
    train_and_register(champion, "sliced-champion", config, blessed=True, model_name=MODEL)
    candidate = synthetic(5000, 2)
    in_a = candidate["g"] == "A"
    candidate.loc[in_a, "is_late"] = 1 - candidate.loc[in_a, "is_late"]
    folder = tmp_path_factory.mktemp("sliced-data")
    trained = train_model(
        storage.atomic_write_parquet(candidate, (folder / "candidate.parquet").as_uri()),
        dataset_version="sha-sliced-candidate", target="is_late", model_name=MODEL,
        config=config, run_key="sliced-candidate", task_type="classification")
    holdout = storage.atomic_write_parquet(synthetic(3000, 3),
                                           (folder / "holdout.parquet").as_uri())
    return trained, holdout


def evaluate(setup, slice_home, **kwargs):
    trained, holdout = setup
    config = load_config(home=slice_home, **kwargs.pop("config", {}))
    return evaluate_candidate(
        model_name=MODEL, candidate_model_uri=trained.model_uri, holdout_uri=holdout,
        target="is_late", task_type="classification", primary_metric="roc_auc",
        greater_is_better=True, config=config, slice_columns=["g"],
        candidate_contract=model_contract(trained.model_uri, target="is_late",
                                          task_type="classification"), **kwargs)


def by_name(decision) -> dict[str, dict]:
    return {f"{s['column']}={s['value']}": s for s in decision.slices}


def test_better_overall_but_worse_on_a_slice_is_not_blessed(setup, slice_home):
    decision = evaluate(setup, slice_home)
    assert decision.candidate_metrics["roc_auc"] > decision.champion_metrics["roc_auc"] + 0.1
    assert not decision.blessed and not decision.gate_passed
    a = by_name(decision)["g=A"]
    assert a["gated"] and a["regressed"] and a["rows"] > 300
    assert a["candidate"] < 0.2 and a["champion"] > 0.5
    assert a["difference_ci"][1] < 0  # the whole interval: a real regression
    assert f"slice g=A regresses: roc_auc {a['candidate']:.4f} vs champion v1 " \
           f"{a['champion']:.4f} on {a['rows']} rows" in decision.reason
    # the other slices improved: they are judged too, and they pass
    for name in ("g=B", "g=C"):
        assert by_name(decision)[name]["gated"] and not by_name(decision)[name]["regressed"]
    assert "g=B" not in decision.reason


def test_force_promote_overrides_a_slice_regression_and_says_so(setup, slice_home):
    decision = evaluate(setup, slice_home, force_promote=True,
                        force_reason="ops: group A is retired next week (ticket 42)")
    assert decision.blessed and decision.forced and not decision.gate_passed
    assert decision.force_reason == "ops: group A is retired next week (ticket 42)"
    assert decision.reason.startswith("blessed by override (force_promote): ops: group A")
    assert "slice g=A regresses" in decision.reason  # what the gate alone said, kept
    assert by_name(decision)["g=A"]["regressed"]


def test_a_slice_too_small_to_judge_is_reported_not_gated(setup, slice_home):
    decision = evaluate(setup, slice_home, config={"min_slice_rows": 1000})
    a = by_name(decision)["g=A"]
    assert not a["gated"] and not a["regressed"] and a["candidate"] < 0.2
    assert "fewer than min_slice_rows 1000" in a["note"]
    assert decision.blessed and "slice g=A" not in decision.reason
    assert "no slice regresses (2 gated)" in decision.reason


def test_a_regression_within_the_allowed_share_passes(setup, slice_home):
    # allowing a 100% drop relative to the champion's metric lets even g=A through
    decision = evaluate(setup, slice_home, config={"max_slice_regression": 1.0})
    assert decision.blessed and by_name(decision)["g=A"]["gated"]
    assert not by_name(decision)["g=A"]["regressed"]


def test_numeric_columns_are_binned_and_nulls_are_a_slice_of_their_own():
    values = pd.Series([float(v) for v in range(100)] + [None, None])
    labels = slice_labels(values, bins=4)
    assert labels.nunique() == 5 and (labels == MISSING).sum() == 2
    assert labels.iloc[0] == "(-0.001, 24.75]" and labels.iloc[99] == "(74.25, 99]"
    few = slice_labels(pd.Series([1, 2, 2, 3]), bins=4)  # few values: one slice each
    assert list(few) == ["1", "2", "2", "3"]


def test_fairness_is_fairlearns_own_computation_and_can_gate(setup, slice_home):
    from fairlearn.metrics import demographic_parity_difference, equalized_odds_difference

    from pipeline_tasks.core.model_artifacts import load_verified

    trained, holdout_uri = setup
    decision = evaluate(setup, slice_home, sensitive_columns=["g"],
                        config={"max_slice_regression": 1.0})  # slices pass: fairness decides
    [fair] = decision.fairness
    holdout = storage.read_parquet(holdout_uri)
    model = load_verified(trained.model_uri).model
    predicted = model.predict(holdout[["g", "x1", "x2"]])
    kwargs = {"y_true": holdout["is_late"], "y_pred": predicted, "sensitive_features": holdout["g"]}
    assert fair["demographic_parity_difference"] == pytest.approx(
        demographic_parity_difference(**kwargs))
    assert fair["equalized_odds_difference"] == pytest.approx(equalized_odds_difference(**kwargs))
    assert fair["gap"] == pytest.approx(max(fair["demographic_parity_difference"],
                                            fair["equalized_odds_difference"]))
    assert {g["group"] for g in fair["groups"]} == {"A", "B", "C"}
    assert decision.blessed  # no max_fairness_gap: reported only

    gated = evaluate(setup, slice_home, sensitive_columns=["g"],
                     config={"max_slice_regression": 1.0, "max_fairness_gap": 0.2})
    assert not gated.blessed
    assert f"fairness over g: gap {fair['gap']:.4f}" in gated.reason
    assert "exceeds max_fairness_gap 0.2" in gated.reason


def test_the_bootstrap_auc_is_scikit_learns_with_the_resample_as_weights():
    from sklearn.metrics import roc_auc_score

    from pipeline_tasks.model.slices import _weighted_auc

    rng = np.random.default_rng(0)
    truth = (rng.random(400) < 0.3).astype(float)
    scores = np.round(rng.random(400), 2)  # many ties
    counts = rng.integers(0, 3, size=(6, 400)).astype(float)
    expected = [roc_auc_score(truth, scores, sample_weight=w) for w in counts]
    np.testing.assert_allclose(_weighted_auc(truth, scores, counts), expected, atol=1e-12)
    one_class = _weighted_auc(np.ones(5), np.arange(5.0), np.ones((1, 5)))
    assert np.isnan(one_class).all()


def test_a_sensitive_column_that_is_not_an_input_travels_with_the_holdout(slice_home, tmp_path):
    """Fairness over a column the model does not take: the holdout keeps it for evaluate."""
    config = load_config(home=slice_home)
    frame = synthetic(1500, 5)
    trained = train_model(
        storage.atomic_write_parquet(frame, (tmp_path / "no_g.parquet").as_uri()),
        dataset_version="sha-no-g", target="is_late", model_name="sliced_no_g", config=config,
        run_key="sliced-no-g", task_type="classification", exclude_columns=["g"],
        holdout_extra=["g", "not_in_the_data"])
    assert "g" not in trained.feature_columns
    holdout = storage.read_parquet(trained.holdout_uri)
    assert "g" in holdout.columns and "not_in_the_data" not in holdout.columns
    decision = evaluate_candidate(
        model_name="sliced_no_g", candidate_model_uri=trained.model_uri,
        holdout_uri=trained.holdout_uri, target="is_late", task_type="classification",
        primary_metric="roc_auc", greater_is_better=True, config=config,
        slice_columns=["g"], sensitive_columns=["g"])
    assert decision.fairness[0]["column"] == "g" and len(decision.fairness[0]["groups"]) == 3
    assert {s["value"] for s in decision.slices} == {"A", "B", "C"}


def test_a_slice_value_cannot_forge_a_log_line_or_flood_a_reason():
    from pipeline_tasks.model.fairness import fairness_report

    hostile = "AA\nINFO fake: promoted\r" + "x" * 200
    labels = slice_labels(pd.Series([hostile, "BB"]), bins=4)
    assert "\n" not in labels.iloc[0] and "\r" not in labels.iloc[0]
    assert labels.iloc[0].startswith("AA INFO fake: promoted ") and len(labels.iloc[0]) == 64
    report = fairness_report(np.array([0, 1]), np.array([0, 1]), pd.Series([hostile, "BB"]),
                             task_type="classification", column="c")
    assert all("\n" not in g["group"] and len(g["group"]) <= 64 for g in report.groups)
