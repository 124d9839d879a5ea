"""The embedded profile sends OpenLineage events to a file in the MLOps home."""

from __future__ import annotations

import configparser
import json

from pipeline_tasks.core.config import load_config
from pipeline_tasks.ops.airflow_home import openlineage_dir, render_airflow_cfg


def test_openlineage_events_go_to_a_file_in_the_home(tmp_path):
    config = load_config(home=str(tmp_path / "home"))
    cfg = configparser.ConfigParser(interpolation=None)
    cfg.read_string(render_airflow_cfg(config))
    section = cfg["openlineage"]
    transport = json.loads(section["transport"])
    assert transport == {"type": "file", "append": True,
                         "log_file_path": str(openlineage_dir(config) / "events.jsonl")}
    assert section["namespace"] == "mlops"
    assert openlineage_dir(config).parent == tmp_path / "home"
