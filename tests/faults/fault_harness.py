"""The fault-injection harness: the stage calls the DAG makes run in killable processes, and one
check of the invariants that must hold after every fault.

``FAULT_TRIALS`` sets how many trials each fault gets (``make test`` runs one; ``make
test-faults`` runs more). Trial points are drawn from a seeded generator and printed, so a
failing trial can be replayed with ``FAULT_SEED``.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from pipeline_tasks import stages
from pipeline_tasks.core import http, storage
from pipeline_tasks.core.config import PROJECT_DIR, PipelineConfig

MODEL = "faults_diamonds"
TRIALS = int(os.environ.get("FAULT_TRIALS", "1"))
SEED = int(os.environ.get("FAULT_SEED", "20261127"))


@dataclass
class Outcome:
    """What one fault trial did, for the report at the end of the session."""

    fault: str
    where: str  # when (seconds into the attempt) or where (byte offset) the fault hit
    result: str


@dataclass
class Campaign:
    rng: random.Random = field(default_factory=lambda: random.Random(SEED))
    outcomes: list[Outcome] = field(default_factory=list)

    def point(self, low: float, high: float) -> float:
        return round(self.rng.uniform(low, high), 2)

    def record(self, fault: str, where: str, result: str) -> None:
        self.outcomes.append(Outcome(fault, where, result))


def spec(source: Path, port: int, run: str, **params) -> stages.RunSpec:
    return stages.RunSpec(
        dag_id="ml_training_pipeline", run_id=run,
        interval_start="2013-03-01T00:00:00+00:00", interval_end="2013-03-02T00:00:00+00:00",
        params={"source": str(source), "target": "price", "model_name": MODEL,
                "serving_port": port, **params})


def encode(arg):
    """A stage argument as JSON-able data: a ``RunSpec`` by its fields, a typed result by its
    type and XCom payload (``to_xcom``; the other process reads it back with ``from_xcom``)."""
    if isinstance(arg, stages.RunSpec):
        return {**asdict(arg), "__spec__": True}
    if hasattr(arg, "to_xcom"):
        kind = type(arg)
        return {"__type__": f"{kind.__module__}:{kind.__qualname__}", "payload": arg.to_xcom()}
    return arg


def run_stage_in_process(stage: str, args: list, kill_after: float | None = None,
                         env: dict[str, str] | None = None) -> subprocess.CompletedProcess | None:
    """Run ``stages.<stage>(*args)`` in a new process, as an Airflow worker runs a task. With
    ``kill_after``, SIGKILL it then (a lost worker, the OOM killer); None if it was killed.
    Typed results cross the process boundary as their XCom payloads, as between tasks."""
    payload = json.dumps([encode(a) for a in args], default=str)
    code = (
        "import json, sys\n"
        "from importlib import import_module\n"
        "from pipeline_tasks import stages\n"
        "def decode(a):\n"
        "    if isinstance(a, dict) and a.get('__spec__'):\n"
        "        return stages.RunSpec(**{k: v for k, v in a.items() if k != '__spec__'})\n"
        "    if isinstance(a, dict) and a.get('__type__'):\n"
        "        module, _, name = a['__type__'].partition(':')\n"
        "        return getattr(import_module(module), name).from_xcom(a['payload'])\n"
        "    return a\n"
        "args = [decode(a) for a in json.loads(sys.argv[1])]\n"
        f"print(json.dumps(stages.{stage}(*args).to_xcom(), default=str))\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code, payload], cwd=PROJECT_DIR,
                            env={**os.environ, **(env or {})}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    if kill_after is None:
        out, err = proc.communicate(timeout=600)
        return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
    try:
        out, err = proc.communicate(timeout=kill_after)
        return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGKILL)
        proc.communicate()
        return None


# --- the invariants -------------------------------------------------------------------------


def serving_processes(config: PipelineConfig) -> list[int]:
    """Model-server and supervisor processes of this config's home (alive, not zombies)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().split(b"\0")
            state = (proc / "stat").read_text().rpartition(")")[2].split()[0]
            environ = (proc / "environ").read_bytes()
        except OSError:
            continue
        command = b" ".join(cmdline)
        if state == "Z" or not any(module in command for module in (
                b"pipeline_tasks.serving", b"pipeline_tasks.deploy.local")):  # server, supervisor
            continue
        env = environ.split(b"\0")
        if f"MLOPS_HOME={config.home}".encode() in env and \
                f"MLOPS_SERVING_PORT={config.serving_port}".encode() in env:
            found.append(int(proc.name))
    return found


def check_invariants(config: PipelineConfig, since: float) -> dict:
    """The registry, the endpoint, the processes and the lake agree. Returns what it saw. The
    lake check covers the files written since ``since`` (the trials'; the session's lake also
    holds other tests' files, some damaged on purpose)."""
    from mlflow.tracking import MlflowClient

    from pipeline_tasks.deploy.local import SupervisorClient
    from pipeline_tasks.model.registry import current_champion

    client = MlflowClient(config.mlflow_tracking_uri, config.mlflow_registry_uri)
    champion = current_champion(MODEL, client)
    served = http.try_json(f"{config.serving_url}/models/{MODEL}/metadata", timeout=10) or {}
    # 1. champion equals the version the endpoint reports for the model
    assert champion == served.get("model_version"), (champion, served)
    # 2. no process outlives its owner: the supervisor runs exactly the live server
    status = SupervisorClient(config).call("status")
    assert status["candidates"] == [], status["candidates"]
    expected = {status["pid"], status["active"]["pid"]}
    assert set(serving_processes(config)) == expected, (serving_processes(config), status)
    # 3. no MLflow run left RUNNING
    experiments = [e.experiment_id for e in client.search_experiments()
                   if e.name in (MODEL, f"{MODEL}-monitoring")]
    running = client.search_runs(experiments, "attributes.status = 'RUNNING'")
    assert [r.info.run_id for r in running] == []
    # 4. no partial file visible: every file at its final name in the lake reads whole
    lake = storage.local_path(config.lake_uri)
    for path in lake.rglob("*"):
        if path.is_file() and ".tmp-" not in path.name and path.stat().st_mtime >= since:
            if path.suffix == ".parquet":
                import pyarrow.parquet as pq

                pq.read_metadata(path)
            elif path.suffix == ".json":
                json.loads(path.read_text())
    return {"champion": champion, "served": served.get("model_version")}


def wait_for(predicate, timeout: float, what: str, interval: float = 0.3):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(interval)
