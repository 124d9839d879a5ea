"""What the Airflow UI gets from the DAGs and the plugin: each task's extra link, the notifiers,
the trigger form's params (defaults valid, optional fields not required, bad values refused), and
a plugin that mounts the views without importing them in every task process.

Each check runs in a fresh interpreter (like Airflow's own parsing), on a throwaway Airflow home.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

DAG_PROBE = r"""
import json, sys
from airflow.dag_processing.dagbag import DagBag
from airflow.serialization.serialized_objects import DagSerialization

bag = DagBag(dag_folder=sys.argv[1], safe_mode=False)
assert not bag.import_errors, bag.import_errors
out = {}
for dag in bag.dags.values():
    serialized = DagSerialization.to_dict(dag)["dag"]["tasks"]
    refused = {}
    for name, bad in (("model_name", "not a name!"), ("training_window_days", -1),
                      ("task_type", "ranking"), ("version", "v7; rm"), ("reason", ""),
                      ("model_ref", "../champion"), ("output_table", "t; drop table x")):
        if name in dag.params:
            try:
                dag.params.get_param(name).resolve(value=bad)
            except Exception as exc:
                refused[name] = str(exc)
    try:
        dag.params.validate()
        defaults_valid = True
    except Exception as exc:
        defaults_valid = str(exc)
    out[dag.dag_id] = {
        "links": {t["__var"]["task_id"]: t["__var"].get("_operator_extra_links") or {}
                  for t in serialized},
        "callbacks": {t.task_id: {
            "failure": [type(c).__name__ + ":" + getattr(c, "event", "")
                        for c in (t.on_failure_callback or [])],
            "success": [type(c).__name__ + ":" + getattr(c, "event", "")
                        for c in (t.on_success_callback or [])]} for t in dag.tasks},
        "types": {k: dag.params.get_param(k).schema.get("type") for k in dag.params},
        "defaults_valid": defaults_valid,
        "refused": refused,
    }
print(json.dumps(out))
"""

PLUGIN_PROBE = r"""
import json, sys
import airflow.plugins_manager  # loaded by every Airflow process anyway
before = set(sys.modules)
from mlops_airflow.plugin import MlopsPlugin
new = sorted(set(sys.modules) - before)
print(json.dumps({"fastapi_apps": [{k: v for k, v in a.items() if k != "app"}
                                   for a in MlopsPlugin.fastapi_apps],
                  "external_views": MlopsPlugin.external_views,
                  "heavy": [m for m in new if m.split(".")[0] in ("mlflow", "fastapi", "pandas")
                            or m.startswith(("airflow.api_fastapi", "pipeline_tasks.lineage.queries"))]}))
"""


def run_probe(code: str, arg: str, tmp_path: Path) -> dict:
    env = dict(os.environ, AIRFLOW_HOME=str(tmp_path / "airflow"), MLOPS_HOME=str(tmp_path),
               PYTHONPATH=os.pathsep.join([str(ROOT / "plugins"), str(ROOT)]))
    proc = subprocess.run([sys.executable, "-c", code, arg], env=env, capture_output=True,
                          text=True, timeout=180, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_tasks_get_their_links_and_notifiers_and_the_form_validates(tmp_path):
    dags = run_probe(DAG_PROBE, str(ROOT / "dags"), tmp_path)
    training = dags["ml_training_pipeline"]
    assert training["links"] == {
        "ingest": {}, "evaluate": {}, "approval_gate": {}, "approve": {},
        "validate": {"Data Docs": "_link_mlops_validate"},
        "version": {"Dataset manifest": "_link_mlops_version"},
        "train": {"MLflow run": "_link_mlops_train"},
        "register": {"Model version": "_link_mlops_register",
                     "Model card": "_link_mlops_register_1"},
        "deploy": {"Endpoint metadata": "_link_mlops_deploy"},
    }
    for task_id, callbacks in training["callbacks"].items():
        assert callbacks["failure"] == ["PipelineNotifier:failure"], task_id
        assert callbacks["success"] == (["PipelineNotifier:promotion"]
                                        if task_id in ("register", "deploy") else []), task_id
    assert training["defaults_valid"] is True
    # optional text fields accept null, so the form does not mark them required
    for name in ("sql_conn_id", "time_column", "model_name", "force_reason"):
        assert "null" in training["types"][name], name
    assert "does not match" in training["refused"]["model_name"]
    assert "less than the minimum of 0" in training["refused"]["training_window_days"]
    assert "is not one of" in training["refused"]["task_type"]

    rollback = dags["ml_model_rollback"]
    assert rollback["links"] == {"rollback": {"Endpoint metadata": "_link_mlops_rollback"}}
    assert rollback["callbacks"]["rollback"]["success"] == ["PipelineNotifier:promotion"]
    assert "does not match" in rollback["refused"]["version"]
    assert "reason" in rollback["refused"]

    batch = dags["ml_batch_scoring"]
    assert batch["links"] == {
        "resolve_model": {"Model version": "_link_mlops_resolve_model"},
        "score": {"Scored partition": "_link_mlops_score",
                  "Rejected rows": "_link_mlops_score_1",
                  "Scoring summary": "_link_mlops_score_2"},
        "export_scores": {},
    }
    assert batch["defaults_valid"] is True
    assert "does not match" in batch["refused"]["model_ref"]
    assert "does not match" in batch["refused"]["output_table"]


def test_the_plugin_mounts_the_views_lazily(tmp_path):
    plugin = run_probe(PLUGIN_PROBE, "", tmp_path)
    assert plugin["fastapi_apps"] == [{"url_prefix": "/mlops",
                                       "name": "MLOps reports and lineage"}]
    assert plugin["external_views"][0]["href"] == "/mlops/"
    assert plugin["external_views"][0]["url_route"] == "mlops"
    assert plugin["heavy"] == []  # every task process loads plugins: keep it cheap
