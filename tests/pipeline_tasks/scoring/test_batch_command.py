"""``mlops batch-score``: batch scoring as a process of its own (a shell, cron, a container),
run here as a user runs it, in a fresh process against the registry of the module's home."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pandas as pd
from test_batch_scoring import END, START, read_partition, score, write_source

from pipeline_tasks.core import storage


def command(config, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "MLOPS_HOME": config.home,
           "MLOPS_BATCH_PART_ROWS": str(config.batch_part_rows)}
    return subprocess.run([sys.executable, "-m", "pipeline_tasks", "batch-score", *args],
                          env=env, capture_output=True, text=True, timeout=600, check=False)


def test_the_command_publishes_what_the_dag_s_task_publishes(batch_source, scoring_model,
                                                             batch_config, tmp_path):
    source = write_source(batch_source, tmp_path, "flights.parquet")
    by_task = read_partition(score(source, scoring_model, batch_config, run_id="task").scores_uri)

    done = command(batch_config, "batch_flights", source, "--start", START, "--end", END,
                   "--id-column", "flight_id", "--run-id", "from_cli", "--json")
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout)
    assert result["model_version"] == scoring_model.version and result["status"] == "published"
    assert result["rows_read"] == result["rows_scored"] == len(batch_source)
    assert (result["interval_start"], result["interval_end"]) == (START, END)
    by_command = read_partition(result["scores_uri"])
    assert set(by_command["run_id"]) == {"from_cli"}
    # the same rows, scores and version: only the run id differs
    pd.testing.assert_frame_equal(by_command.drop(columns="run_id"),
                                  by_task.drop(columns="run_id"))
    assert storage.read_json(result["summary_uri"])["run_id"] == "from_cli"

    # a version number instead of the alias; a plain summary without --json
    done = command(batch_config, "batch_flights", source, "--ref", scoring_model.version,
                   "--start", "2013-03-01", "--end", "2013-03-02", "--id-column", "flight_id")
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"batch_flights v{scoring_model.version}: {len(batch_source):,} rows" in done.stdout
    assert "scores : file://" in done.stdout


def test_the_command_names_what_is_wrong_and_exits_by_kind(batch_source, scoring_model,
                                                          batch_config, tmp_path):
    before = storage.read_json(
        score(write_source(batch_source, tmp_path, "ok.parquet"), scoring_model, batch_config,
              run_id="before").summary_uri)

    # a missing input: exit 2, the column named, nothing published
    missing = write_source(batch_source.drop(columns=["distance"]), tmp_path, "missing.parquet")
    done = command(batch_config, "batch_flights", missing, "--start", START, "--end", END)
    assert done.returncode == 2 and "'distance'" in done.stderr, done.stderr[-3000:]

    # a version the model does not have: exit 2, named (the helper's failure is not the answer)
    done = command(batch_config, "batch_flights", missing, "--ref", "97", "--start", START,
                   "--end", END)
    assert done.returncode == 2 and "has no version or alias '97'" in done.stderr, \
        done.stderr[-3000:]

    # too many rejected rows: exit 1, where the rejects were kept
    bad = batch_source.copy()
    bad.loc[:9, "distance"] = -1.0  # the suite's critical rule: distance > 0
    done = command(batch_config, "batch_flights", write_source(bad, tmp_path, "bad.parquet"),
                   "--start", START, "--end", END, "--id-column", "flight_id",
                   "--max-reject-share", "0")
    assert done.returncode == 1 and "10 of" in done.stderr and "Rejects: " in done.stderr, \
        done.stderr[-3000:]

    # bad dates: argparse's exit 2, the value named
    done = command(batch_config, "batch_flights", missing, "--start", "yesterday")
    assert done.returncode == 2 and "'yesterday' is not an ISO date" in done.stderr
    done = command(batch_config, "batch_flights", missing, "--start", END, "--end", START)
    assert done.returncode == 2 and "is not before --end" in done.stderr

    after = storage.read_json(before["summary_uri"])
    assert after["run_id"] == "before"  # none of the failed runs published anything
