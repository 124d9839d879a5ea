"""The batch scorer's predictor gives bit for bit the model's own predictions: on the fast path
(a Pipeline ending in histogram gradient boosting, as the package trains it: classifiers and
regressors, with and without text inputs) and on the fallback (any other model)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pipeline_tasks.serving.predictor import FAST, PLAIN, ChunkPredictor


def identical(a, b) -> bool:
    """Same shape and the same bits (so -0.0 is not 0.0 and NaN must match NaN)."""
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    if a.dtype.kind == "f":
        return bool(np.array_equal(np.ascontiguousarray(a).view(np.uint64),
                                   np.ascontiguousarray(b).view(np.uint64)))
    return bool(np.array_equal(a, b))


def as_scored(frame: pd.DataFrame) -> pd.DataFrame:
    """The dtypes the scorer hands the model: text as object with NaN for null."""
    out = frame.copy()
    for name in out.columns:
        if out[name].dtype == object or isinstance(out[name].dtype, pd.StringDtype):
            out[name] = out[name].astype(object).where(out[name].notna(), np.nan)
    return out


def fit(frame: pd.DataFrame, target: str, task: str, config):
    from pipeline_tasks.model.estimator import build_pipeline

    X = as_scored(frame.drop(columns=[target]))
    fitted = X.iloc[:3000]  # the rows repeat: scoring all of them, fitting on the first ones
    model = build_pipeline(fitted, task, config).fit(fitted, frame[target].iloc[:3000])
    return model, X


@pytest.fixture(scope="module")
def config(tmp_path_factory):
    from pipeline_tasks.core.config import load_config

    return load_config(home=str(tmp_path_factory.mktemp("predictor-home")))


@pytest.fixture(scope="module")
def flights(flights_frame):
    """Flights with a label: text (carrier, origin, dest) and numeric inputs, repeated to 12,000
    rows so that a chunk has many rows per distinct text value (as a real batch does)."""
    frame = flights_frame[flights_frame["is_late"].notna()].drop(columns=["time_hour"])
    frame = frame.assign(is_late=frame["is_late"].astype(bool)).reset_index(drop=True)
    return pd.concat([frame] * 4, ignore_index=True)


def check(model, X: pd.DataFrame, kind: str) -> ChunkPredictor:
    predictor = ChunkPredictor(model)
    assert predictor.kind == kind, predictor.why
    if hasattr(model, "predict_proba"):
        assert identical(predictor.predict_proba(X), model.predict_proba(X))
    assert identical(predictor.predict(X), model.predict(X))
    return predictor


def test_a_classifier_with_text_inputs_scores_exactly_as_the_model(flights, config):
    model, X = fit(flights, "is_late", "classification", config)
    predictor = check(model, X, FAST)
    assert predictor.columns_path  # the one-hot columns from each carrier's value once
    assert predictor.binned_path  # the trees on bin numbers
    # chunks of any size, in any order, after the first one was checked
    for part in (X.iloc[5000:9000], X.iloc[:37], X.iloc[[3, 1, 2]]):
        assert identical(predictor.predict_proba(part), model.predict_proba(part))


def test_a_multiclass_classifier_scores_exactly_as_the_model(flights, config):
    model, X = fit(flights.drop(columns=["is_late"]), "origin", "classification", config)
    assert len(model.classes_) == 3
    check(model, X, FAST)


def test_a_regressor_with_text_inputs_scores_exactly_as_the_model(regression_frame, config):
    frame = pd.concat([regression_frame] * 3, ignore_index=True)
    for name in ("cut", "color", "clarity"):
        frame[name] = frame[name].astype(object)
    model, X = fit(frame, "price", "regression", config)
    check(model, X, FAST)


def test_a_model_of_numbers_only_scores_exactly_as_the_model(flights, config):
    numbers = flights[["distance", "hour", "dep_delay", "is_late"]]
    model, X = fit(numbers, "is_late", "classification", config)
    check(model, X, FAST)
    regressor, X = fit(flights[["distance", "hour", "dep_delay"]], "distance", "regression",
                       config)
    check(regressor, X, FAST)

    # preprocessing that is not a ColumnTransformer and lets missing values through to the
    # trees (their own bin), values beyond the training range: the fast trees, the pipeline's
    # transform
    from sklearn.ensemble import HistGradientBoostingRegressor
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    values = X.to_numpy(dtype=float)
    values[::9, 1] = np.nan
    plain = Pipeline([("scale", StandardScaler()),
                      ("model", HistGradientBoostingRegressor(max_iter=30))])
    plain.fit(values[:3000], flights["distance"].to_numpy()[:3000])
    values[::17, 0] = values[::17, 0] * 50 - 1e6
    predictor = check(plain, values, FAST)
    assert not predictor.columns_path and predictor.binned_path


def test_missing_and_unseen_text_values_score_exactly_as_the_model(flights, config):
    model, X = fit(flights, "is_late", "classification", config)
    predictor = check(model, X, FAST)
    odd = X.copy()
    odd.loc[odd.index[::7], "dest"] = np.nan  # missing: the chunk takes the pipeline's path
    odd.loc[odd.index[::11], "carrier"] = "ZZ-never-seen"
    odd.loc[odd.index[::13], "hour"] = np.nan
    assert identical(predictor.predict_proba(odd), model.predict_proba(odd))
    unseen = X.copy()
    unseen.loc[unseen.index[::5], "origin"] = "XYZ"  # unseen, no missing: per value
    assert identical(predictor.predict_proba(unseen), model.predict_proba(unseen))


def test_chunks_scored_from_several_threads_at_once_are_exact(flights, config):
    from concurrent.futures import ThreadPoolExecutor

    from pipeline_tasks.serving.predictor import one_openmp_thread

    model, X = fit(flights, "is_late", "classification", config)
    predictor = ChunkPredictor(model)
    parts = [X.iloc[i:i + 1500] for i in range(0, len(X), 1500)]
    with ThreadPoolExecutor(3, initializer=one_openmp_thread) as pool:
        got = list(pool.map(predictor.predict_proba, parts))
    for part, proba in zip(parts, got, strict=True):
        assert identical(proba, model.predict_proba(part))


def test_other_models_fall_back_to_their_own_predict(flights, config):
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    X = as_scored(flights.drop(columns=["is_late"]))
    y = flights["is_late"]
    numeric = ["distance", "hour", "dep_delay"]
    linear = Pipeline([
        ("preprocess", ColumnTransformer([
            ("numeric", StandardScaler(), numeric),
            ("text", OneHotEncoder(handle_unknown="ignore"), ["carrier", "origin"])])),
        ("model", LogisticRegression(max_iter=200)),
    ]).fit(X.fillna(0), y)
    predictor = check(linear, X.fillna(0), PLAIN)
    assert "LogisticRegression" in predictor.why

    # boosting that encodes its own categorical features (pandas categories)
    native = X[numeric + ["origin"]].astype({"origin": "category"})
    own = HistGradientBoostingClassifier(categorical_features="from_dtype", max_iter=20)
    check(own.fit(native, y), native, PLAIN)  # not a Pipeline
    wrapped = Pipeline([("keep", "passthrough"), ("model", HistGradientBoostingClassifier(
        categorical_features="from_dtype", max_iter=20))]).fit(native, y)
    check(wrapped, native, PLAIN)


def test_requests_of_one_row_score_exactly_as_the_model(flights, config, monkeypatch):
    """The model server's calls: one row (or a few) at a time, each text value encoded once and
    kept; rows with new, unseen or missing text values, missing numbers, and booleans."""
    from pipeline_tasks.serving import predictor as module

    frame = flights.assign(morning=flights["hour"] < 12)  # a bool input
    model, X = fit(frame, "is_late", "classification", config)
    assert X["morning"].dtype == bool
    predictor = ChunkPredictor(model)
    odd = X.iloc[:400].copy()
    odd.loc[odd.index[::9], "carrier"] = "ZZ-never-seen"
    odd.loc[odd.index[::11], "dest"] = np.nan  # the pipeline's own path for that call
    odd.loc[odd.index[::13], "distance"] = np.nan  # the imputer's median
    for i in range(len(odd)):
        row = odd.iloc[[i]]
        assert identical(predictor.predict_proba(row), model.predict_proba(row)), i
        assert identical(predictor.predict(row), model.predict(row)), i
    assert predictor._checked.is_set() and predictor._checks == module.CHECK_CALLS
    assert predictor.columns_path and predictor.binned_path  # nothing was dropped
    text = next(b for *_, b in predictor._columns.blocks if isinstance(b, module._TextBlock))
    known = dict(zip(text.columns, text.known, strict=True))
    assert "ZZ-never-seen" in known["carrier"]  # encoded once, then looked up
    assert set(known["origin"]) == set(odd["origin"].dropna())
    for part in (X.iloc[400:403], X.iloc[[7]]):
        assert identical(predictor.predict_proba(part), model.predict_proba(part))
    for call in (predictor.predict_proba, model.predict_proba):  # no rows: refused alike
        with pytest.raises(ValueError, match="0 sample"):
            call(X.iloc[:0])

    # the cache is bounded: past it, values are encoded per call, still exactly
    monkeypatch.setattr(module, "CACHED_VALUES", 5)
    small = ChunkPredictor(model)
    many = X.iloc[:3000:7].copy()
    many["dest"] = [f"D{i}XX" for i in range(len(many))]
    for i in range(60):
        row = many.iloc[[i]]
        assert identical(small.predict_proba(row), model.predict_proba(row)), i
    assert identical(small.predict_proba(many), model.predict_proba(many))
    small_text = next(b for *_, b in small._columns.blocks if isinstance(b, module._TextBlock))
    assert all(len(known) <= 5 for known in small_text.known)


def test_numbers_the_imputer_would_refuse_or_convert_take_its_own_path(flights, config):
    model, X = fit(flights, "is_late", "classification", config)
    predictor = ChunkPredictor(model)
    predictor.predict_proba(X)  # checked
    infinite = X.iloc[:50].astype({"distance": "float64"})
    infinite.loc[infinite.index[3], "distance"] = np.inf
    with pytest.raises(ValueError, match="infinity") as got:
        predictor.predict_proba(infinite)
    with pytest.raises(ValueError, match="infinity") as own:
        model.predict_proba(infinite)
    assert str(got.value) == str(own.value)
    single = X.iloc[:50].astype({"distance": "float32", "hour": "float32"})
    single.loc[single.index[::4], "distance"] = np.nan  # float32 NaN: the imputer's own rounding
    assert identical(predictor.predict_proba(single), model.predict_proba(single))
    assert identical(predictor.predict_proba(single.iloc[[0]]),
                     model.predict_proba(single.iloc[[0]]))


def test_a_served_model_predicts_through_the_predictor(flights, config):
    """What the model server answers: the fast path's predictions, equal to the model's."""
    from pipeline_tasks.serving.contract import Contract
    from pipeline_tasks.serving.model import ServedModel

    model, X = fit(flights, "is_late", "classification", config)
    served = ServedModel(name="m", version="1", run_id="r", dataset_version="d", digest="x",
                         model=model, contract=Contract((), 100, 1e9), signature={},
                         classes=[bool(c) for c in model.classes_])
    assert served.predictor.kind == FAST and served.predictor.model is model
    for i in (0, 1, 2, 50):
        row = X.iloc[[i]]
        got = served.predict(row)
        proba = model.predict_proba(row)
        assert got["scores"] == proba[:, 1].tolist()
        assert got["predictions"] == [bool(model.classes_[proba.argmax(axis=1)[0]])]
    assert served.predictor._checks == 4  # each answer came through the predictor
