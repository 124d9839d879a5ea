"""Benchmark: our model server vs ``mlflow models serve`` on the same model, side by side.

A fresh ``MLOPS_HOME`` gets January 2013 of the flights feed, and the pipeline's stages
(``pipeline_tasks.stages.run_all``) train and register ``bench_serving`` with alias ``champion``.
Then each server runs alone, one uvicorn worker each:

- ours: ``python -m pipeline_tasks.serving --model bench_serving --ref champion`` (prediction log
  on: it is part of the product), ready when ``GET /ready`` answers 200;
- MLflow's: ``mlflow models serve -m models:/bench_serving@champion --env-manager local
  --workers 1``, ready when ``GET /ping`` answers 200.

Both get exactly the same request bodies (``{"dataframe_records": [...]}``, rows from the landed
CSV, the columns of the model's signature, ``null`` for missing) from the same load generator: a
separate process running raw asyncio streams on uvloop with keep-alive connections, N workers in a
closed loop for a fixed time after a warm-up. Scenarios: single rows at concurrency 1, 8, 32 and
100-row batches at concurrency 8. On a machine with 2+ cores the servers are pinned to core 0 and
the load generator to core 1 (``--no-pin`` turns that off). The load generator's own ceiling is
measured against a canned-response stub and against our server's ``/health``. Each server runs
``--rounds`` times (default 2) in ABBA order and the medians are reported, with the server's CPU
time per answer (robust to other load) and the CPU other processes used meanwhile.

What the prediction log costs is measured paired, because it is smaller than the drift between
two rounds on a shared machine: load bursts go to the server with the log on and then with it
off (``--log-rounds`` pairs of ``--log-duration`` seconds per scenario, the order alternating);
the ratio reported is the median over the pairs of on/off (``--log-cost-only`` runs only this
part: ``make bench-serving-log``). By default (``--log-method switch``) both sides are one server
process, started by this script (``--serve-switchable``) so that a signal switches its batchers'
hand-off to the log off and on; before a log-off burst the script waits until the log has
written what the last log-on burst left, and after it checks that no row reached the log. Two
processes of the very same server differ by several per cent for their whole life (where their
memory landed), which ``--log-method pairs`` (a log-on and a ``--no-prediction-log`` process
side by side) counts as the log's cost. Either way the rounds are spread over ``--log-pairs``
(default 3) fresh processes (or pairs); ``--log-control`` runs the same protocol with the log
off on both sides, to show the noise alone.
The goal "at c=1, no slower than the log-off server of the day" is measured the same way
against that day's server: ``--baseline-rev`` (default ``BASELINE_REV``) checked out in a
temporary git worktree, run with its log off.

    .venv/bin/python benchmarks/bench_serving.py                    # about 4 minutes
    ... --keep-home /tmp/bench-serving                              # reuse a home (trains once)
    ... --duration 8 --warmup 1 --rounds 2                          # seconds per scenario, rounds
    ... --log-cost-only --log-rounds 8 --log-duration 5             # only the log's cost, paired
    ... --log-cost-only --log-control                               # the method's noise alone

Figures go to stdout and to benchmarks/results/<UTC time>-serving.json. Not a test: never asserts
times; the goals are printed as PASS/MISS for information and the exit code is 0.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from datetime import UTC, date, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MODEL = "bench_serving"
INTERVAL = ("2013-01-31T00:00:00+00:00", "2013-02-01T00:00:00+00:00")
FEED_DAYS = (date(2013, 1, 1), date(2013, 1, 31))
# (name, rows per request, concurrency)
#: The revision whose server (log off) set the c=1 goal: this repository the day the serving
#: issue was filed, just before the prediction log moved off the request path.
BASELINE_REV = "6162218e9970e912d72939e85edc0573391c2385"
SCENARIOS = [("single c=1", 1, 1), ("single c=8", 1, 8), ("single c=32", 1, 32),
             ("batch100 c=8", 100, 8)]
GOAL_SCENARIO = "single c=8"
SERVER_CORE, LOADGEN_CORE = 0, 1
#: Switches the prediction log of a ``--serve-switchable`` server off and on (Linux).
LOG_SWITCH = signal.SIGRTMIN + 1 if hasattr(signal, "SIGRTMIN") else signal.SIGUSR2


# --------------------------------------------------------------------------- load generator
# Runs in its own process (``--loadgen``; spec as JSON on stdin, result as JSON on stdout), so it
# never shares an interpreter or a core with a server.

def _percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    idx = min(len(sorted_values) - 1, max(0, round(q / 100 * len(sorted_values)) - 1))
    return sorted_values[idx]


async def _read_response(reader) -> tuple[int, bytes, bool]:
    """(status, body, keep_alive) of one HTTP/1.1 response."""
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length, chunked, keep_alive = None, False, True
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"transfer-encoding" and b"chunked" in value.lower():
            chunked = True
        elif name == b"connection" and b"close" in value.lower():
            keep_alive = False
    if chunked:
        parts = []
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            data = await reader.readexactly(size + 2)
            if size == 0:
                break
            parts.append(data[:-2])
        return status, b"".join(parts), keep_alive
    body = await reader.readexactly(length) if length else b""
    return status, body, keep_alive


async def _loadgen(spec: dict) -> dict:
    import asyncio

    host, port = spec["host"], spec["port"]
    method, path = spec["method"], spec["path"]
    bodies = [b.encode() for b in spec["bodies"]] or [b""]
    requests = []
    for body in bodies:
        head = f"{method} {path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
        if method == "POST":
            head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        requests.append(head.encode() + b"\r\n" + (body if method == "POST" else b""))
    concurrency, warmup, duration = spec["concurrency"], spec["warmup"], spec["duration"]
    latencies: list[float] = []
    statuses: dict[str, int] = {}
    errors = {"count": 0, "first": None}
    total = {"n": 0}  # every answer, warm-up included (for the server's CPU per request)
    start = time.perf_counter()
    measure_from, measure_to = start + warmup, start + warmup + duration
    cpu: dict[str, float] = {}

    async def worker(k: int) -> None:
        reader = writer = None
        i = k
        perf = time.perf_counter
        while True:
            t0 = perf()
            if t0 >= measure_to:
                break
            try:
                if writer is None:
                    reader, writer = await asyncio.open_connection(host, port)
                writer.write(requests[i % len(requests)])
                i += 1
                status, _, keep_alive = await _read_response(reader)
                t1 = perf()
                if not keep_alive:
                    writer.close()
                    writer = None
            except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
                t1, status = perf(), 0
                if writer is not None:
                    writer.close()
                writer = None
                if errors["first"] is None:
                    errors["first"] = f"{type(exc).__name__}: {exc}"[:200]
                await asyncio.sleep(0.01)
            total["n"] += 1
            if measure_from <= t0 and t1 <= measure_to:
                latencies.append(t1 - t0)
                statuses[str(status)] = statuses.get(str(status), 0) + 1
                if status != 200:
                    errors["count"] += 1
        if writer is not None:
            writer.close()

    async def cpu_probe() -> None:
        await asyncio.sleep(max(0.0, measure_from - time.perf_counter()))
        cpu["start"] = time.process_time()
        await asyncio.sleep(max(0.0, measure_to - time.perf_counter()))
        cpu["end"] = time.process_time()

    await asyncio.gather(cpu_probe(), *(worker(k) for k in range(concurrency)))
    latencies.sort()
    ok = len(latencies) - errors["count"]
    return {
        "requests": len(latencies), "all_requests": total["n"], "ok": ok, "errors": errors["count"],
        "first_error": errors["first"], "statuses": statuses,
        "rps": ok / duration, "rows_per_s": ok * spec["rows_per_request"] / duration,
        "p50_ms": _percentile(latencies, 50) * 1e3, "p90_ms": _percentile(latencies, 90) * 1e3,
        "p99_ms": _percentile(latencies, 99) * 1e3,
        "max_ms": (latencies[-1] * 1e3) if latencies else float("nan"),
        "loadgen_cpu": (cpu["end"] - cpu["start"]) / duration,
    }


def loadgen_main() -> int:
    spec = json.loads(sys.stdin.read())
    try:
        import uvloop
        runner = uvloop.run
    except ImportError:  # pragma: no cover
        import asyncio
        runner = asyncio.run
    print(json.dumps(runner(_loadgen(spec))))
    return 0


# --------------------------------------------------------------------------- switchable server

def switchable(argv: list[str]) -> list[str]:
    """``python -m pipeline_tasks.serving ARGS`` as a ``--serve-switchable`` server."""
    if argv[1:3] != ["-m", "pipeline_tasks.serving"]:
        raise ValueError(f"not our server's command line: {argv[:3]}")
    return [argv[0], __file__, "--serve-switchable", *argv[3:]]


def serve_switchable(argv: list[str]) -> int:
    """Our server, ``python -m pipeline_tasks.serving`` with ``argv``, whose batchers' hand-off
    to the prediction log ``LOG_SWITCH`` turns off and on: the log's cost measured inside one
    process, where the two sides share the process's memory layout and luck (switched off,
    the batcher hands nothing over and the log's threads idle). A benchmark's tool: the hook
    lives here, not in the server."""
    sys.path.insert(0, str(ROOT))
    from pipeline_tasks.serving import app as serving_app
    from pipeline_tasks.serving.__main__ import main as serve

    state = {"on": True}
    make_logger = serving_app._logger

    def switched_logger(prediction_log, served):
        logged = make_logger(prediction_log, served)

        def hand_off(*given) -> None:
            if state["on"]:
                logged(*given)
        return hand_off

    def flip(signum, frame) -> None:
        state["on"] = not state["on"]

    serving_app._logger = switched_logger
    signal.signal(LOG_SWITCH, flip)
    return serve(argv)


# --------------------------------------------------------------------------- stub server
# The load generator's ceiling: a canned 200 answer, as cheap as a server can be.

def stub_main(port: int) -> int:
    import asyncio

    import uvloop

    reply = (b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 15\r\n\r\n"
             b'{"status":"ok"}')

    class Stub(asyncio.Protocol):
        def connection_made(self, transport):
            self.transport, self.buf = transport, b""

        def data_received(self, data):
            self.buf += data
            while True:
                end = self.buf.find(b"\r\n\r\n")
                if end < 0:
                    return
                length = 0
                for line in self.buf[:end].split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                if len(self.buf) < end + 4 + length:
                    return
                self.buf = self.buf[end + 4 + length:]
                self.transport.write(reply)

    async def serve():
        server = await asyncio.get_running_loop().create_server(Stub, "127.0.0.1", port)
        await server.serve_forever()

    uvloop.run(serve())
    return 0


# --------------------------------------------------------------------------- orchestration

def _interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def pinned(argv: list[str], core: int) -> list[str]:
    """``argv`` run on one core (taskset execs it: same pid, children inherit the mask)."""
    return ["taskset", "-c", str(core), *argv]


class Procs:
    """Every process this benchmark starts, each in its own session; stopped by group id."""

    def __init__(self, pin: bool, logdir: Path):
        self.pin, self.logdir, self.live = pin, logdir, []

    def start(self, name: str, argv: list[str], env: dict,
              cwd: Path = ROOT) -> tuple[subprocess.Popen, float]:
        log_file = open(self.logdir / f"{name}.log", "wb")  # noqa: SIM115 (closed in stop)
        started = time.perf_counter()
        proc = subprocess.Popen(pinned(argv, SERVER_CORE) if self.pin else argv, env=env,
                                stdout=log_file, stderr=subprocess.STDOUT,
                                start_new_session=True, cwd=str(cwd))
        proc.log_file, proc.bench_name = log_file, name  # type: ignore[attr-defined]
        self.live.append(proc)
        return proc, started

    def stop(self, proc: subprocess.Popen, timeout: float = 15.0) -> None:
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)
            except ProcessLookupError:
                pass
        try:  # children left behind in the group (MLflow's CLI runs uvicorn as a child)
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        proc.log_file.close()  # type: ignore[attr-defined]
        if proc in self.live:
            self.live.remove(proc)

    def stop_all(self) -> None:
        for proc in list(self.live):
            self.stop(proc)

    def tail(self, proc: subprocess.Popen, lines: int = 25) -> str:
        path = self.logdir / f"{proc.bench_name}.log"  # type: ignore[attr-defined]
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def wait_ready(procs: Procs, proc, started: float, url: str, timeout: float = 180.0) -> float:
    import httpx

    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{proc.bench_name} exited with {proc.returncode}:\n"
                             f"{procs.tail(proc)}")
        try:
            if httpx.get(url, timeout=1.0).status_code == 200:
                return time.perf_counter() - started
        except httpx.HTTPError:
            pass
        time.sleep(0.02)
    raise SystemExit(f"{proc.bench_name} not ready after {timeout:.0f} s:\n{procs.tail(proc)}")


def group_cpu_seconds(pid: int) -> float:
    """CPU time (user + system) of every live process in the session led by ``pid``."""
    import psutil

    total = 0.0
    try:
        leader = psutil.Process(pid)
        for p in [leader, *leader.children(recursive=True)]:
            t = p.cpu_times()
            total += t.user + t.system
    except psutil.Error:
        pass
    return total


def run_load(spec: dict, pin: bool, server_pid: int | None = None) -> dict:
    import resource

    import psutil

    argv = [sys.executable, __file__, "--loadgen"]
    cpu0 = group_cpu_seconds(server_pid) if server_pid else 0.0
    kids0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    busy0 = _busy_seconds(psutil.cpu_times())
    t0 = time.perf_counter()
    done = subprocess.run(pinned(argv, LOADGEN_CORE) if pin else argv, input=json.dumps(spec),
                          capture_output=True, text=True, check=False,
                          timeout=spec["warmup"] + spec["duration"] + 120)
    wall = time.perf_counter() - t0
    if done.returncode != 0:
        raise SystemExit(f"load generator failed:\n{done.stderr[-3000:]}")
    busy = _busy_seconds(psutil.cpu_times()) - busy0
    kids1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    loadgen = (kids1.ru_utime + kids1.ru_stime) - (kids0.ru_utime + kids0.ru_stime)
    result = json.loads(done.stdout)
    server = (group_cpu_seconds(server_pid) - cpu0) if server_pid else 0.0
    # averaged over warm-up + measurement (+ the generator's ~0.1 s start), in cores
    result["server_cpu"] = server / wall
    # CPU time the server spent per answer: robust to other load on the machine
    result["server_cpu_ms_per_req"] = server * 1e3 / max(1, result["all_requests"])
    result["other_cpu"] = max(0.0, busy - server - loadgen) / wall
    return result


def _busy_seconds(times) -> float:
    """Busy CPU seconds of the whole machine (guest time is already inside user time)."""
    return sum(getattr(times, name, 0.0) for name in ("user", "nice", "system", "irq", "softirq"))


def prepare_home(home: Path) -> None:
    """Land January 2013 and run the pipeline's stages once, unless the champion exists."""
    from pipeline_tasks.core import tracking
    from pipeline_tasks.core.config import load_config
    from pipeline_tasks.model.registry import current_champion

    config = load_config()
    tracking.configure_mlflow(config)
    if current_champion(MODEL):
        print(f"reusing {MODEL}@champion v{current_champion(MODEL)} in {home}", flush=True)
        return
    from pipeline_tasks import stages
    from pipeline_tasks.ops.demo_data import land_flights_feed

    t0 = time.perf_counter()
    land_flights_feed(config, *FEED_DAYS)
    run = stages.RunSpec(dag_id="bench_serving", run_id="bench", interval_start=INTERVAL[0],
                         interval_end=INTERVAL[1],
                         params={"training_window_days": 31, "model_name": MODEL})
    out = stages.run_all(run)
    if not current_champion(MODEL):
        raise SystemExit(f"the pipeline did not promote {MODEL} to champion: "
                         f"{out['evaluate'].reason}")
    print(f"landed + trained + registered {MODEL} v{out['register'].version} "
          f"({out['ingest'].rows} rows) in {time.perf_counter() - t0:.1f} s", flush=True)


def request_rows(home: Path, inputs: list[dict], n: int) -> list[dict]:
    """``n`` rows from the landed feed as a client sends them: signature columns, typed, None."""
    import math

    import pandas as pd

    feed = pd.read_csv(home / "landing" / "flights" / f"flights_{FEED_DAYS[1].isoformat()}.csv")
    required = [c["name"] for c in inputs if not c["nullable"]]
    feed = feed.dropna(subset=required)
    feed = feed.sample(n=min(n, len(feed)), random_state=7) if len(feed) > n else feed

    def value(kind: str, v):
        if v is None or (isinstance(v, float) and math.isnan(v)):
            return None
        if kind == "float":
            return float(v)
        if kind == "int":
            return int(v)
        if kind == "bool":
            return bool(v)
        return str(v)

    return [{c["name"]: value(c["type"], row[c["name"]]) for c in inputs}
            for row in feed.to_dict("records")]


def bodies_for(rows: list[dict], per_request: int, count: int) -> list[str]:
    out = []
    for k in range(count):
        start = (k * per_request) % len(rows)
        chunk = (rows + rows)[start:start + per_request]
        out.append(json.dumps({"dataframe_records": chunk}, separators=(",", ":")))
    return out


#: OIP tensor datatypes of the signature's column types
OIP_TYPES = {"float": "FP64", "int": "INT64", "bool": "BOOL", "str": "BYTES", "datetime": "BYTES"}


def oip_bodies(bodies: list[str], inputs: list[dict]) -> list[str]:
    """The same rows as ``bodies`` (``dataframe_records``) as Open Inference Protocol requests
    in MLServer's pandas form (``content_type: "pd"``: one 1-D tensor per column, a missing
    value as ``null``)."""
    kinds = {c["name"]: OIP_TYPES.get(c["type"], "BYTES") for c in inputs}
    out = []
    for body in bodies:
        records = json.loads(body)["dataframe_records"]
        tensors = []
        for name, kind in kinds.items():
            data = [r[name] for r in records]
            tensors.append({"name": name, "shape": [len(records)], "datatype": kind,
                            "data": data})
        out.append(json.dumps({"parameters": {"content_type": "pd"}, "inputs": tensors},
                              separators=(",", ":")))
    return out


def predictions_of(answer: dict) -> list:
    """The predicted labels of an answer: ours and MLflow's (``predictions``) or an OIP one
    (the first output tensor)."""
    if "predictions" in answer:
        return list(answer["predictions"])
    return list(answer["outputs"][0]["data"])


def sample_predictions(url: str, bodies: list[str]) -> list:
    import httpx

    preds = []
    with httpx.Client(timeout=30) as client:
        for body in bodies:
            r = client.post(url, content=body.encode(),
                            headers={"content-type": "application/json"})
            if r.status_code != 200:
                raise SystemExit(f"{url} answered {r.status_code}: {r.text[:300]}")
            preds.extend(predictions_of(r.json()))
    return preds


def mlserver_folder(model_dir: str, port: int, max_batch_time: float) -> Path:
    """An MLServer 1.7 model repository serving ``model_dir`` (the champion's MLflow model)
    with the MLflow runtime, adaptive batching (at most 32 requests, ``max_batch_time``
    seconds of waiting) and one inference worker, on ``port`` (gRPC and metrics on free
    ports)."""
    from pipeline_tasks.core.http import free_port

    folder = Path(tempfile.mkdtemp(prefix="bench-serving-mlserver-"))
    (folder / "settings.json").write_text(json.dumps({
        "http_port": port, "grpc_port": free_port(), "metrics_port": free_port(),
        "parallel_workers": 1, "debug": False}))
    (folder / "model-settings.json").write_text(json.dumps({
        "name": MODEL, "implementation": "mlserver_mlflow.MLflowRuntime",
        "parameters": {"uri": model_dir},
        "max_batch_size": 32, "max_batch_time": max_batch_time}))
    return folder


def bench_server(name: str, procs: Procs, argv: list[str], env: dict, port: int,
                 ready_path: str, predict_path: str, shared: dict, args, pin: bool,
                 prepare=None, form: str = "records") -> dict:
    """Start one server, time it to ready, run every scenario against it, stop it."""
    proc, started = procs.start(name, argv, env)
    try:
        ready_s = wait_ready(procs, proc, started, f"http://127.0.0.1:{port}{ready_path}")
        print(f"  {name}: ready in {ready_s:.2f} s", flush=True)
        out = {"ready_s": ready_s, "scenarios": {}}
        if prepare:
            out.update(prepare(port, proc))
        payloads = shared["payloads"] if form == "records" else shared["payloads_oip"]
        preds = sample_predictions(f"http://127.0.0.1:{port}{predict_path}",
                                   shared["sample" if form == "records" else "sample_oip"])
        out["sample_predictions"] = preds
        for scen, per_request, concurrency in SCENARIOS:
            spec = {"host": "127.0.0.1", "port": port, "method": "POST", "path": predict_path,
                    "bodies": payloads[per_request], "rows_per_request": per_request,
                    "concurrency": concurrency, "warmup": args.warmup,
                    "duration": args.duration}
            res = run_load(spec, pin, proc.pid)
            out["scenarios"][scen] = res
            print(f"  {name:<7}{scen:<14}{res['rps']:>9.1f} req/s{res['rows_per_s']:>10.0f} rows/s"
                  f"  p50 {res['p50_ms']:6.2f} ms  p99 {res['p99_ms']:7.2f} ms  "
                  f"errors {res['errors']}  server {res['server_cpu_ms_per_req']:.2f} cpu-ms/req  "
                  f"cpu: server {res['server_cpu']:.0%} loadgen "
                  f"{res['loadgen_cpu']:.0%} other {res['other_cpu']:.0%}", flush=True)
            if res["first_error"]:
                print(f"    first error: {res['first_error']}", flush=True)
        return out
    finally:
        procs.stop(proc)


def main() -> int:
    if "--loadgen" in sys.argv:
        return loadgen_main()
    if "--stub" in sys.argv:
        return stub_main(int(sys.argv[sys.argv.index("--stub") + 1]))
    if len(sys.argv) > 1 and sys.argv[1] == "--serve-switchable":
        return serve_switchable(sys.argv[2:])
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep-home", help="use this MLOPS_HOME instead of a fresh temp dir")
    parser.add_argument("--duration", type=float, default=8.0, help="measured seconds/scenario")
    parser.add_argument("--warmup", type=float, default=1.0, help="warm-up seconds/scenario")
    parser.add_argument("--rounds", type=int, default=2,
                        help="rounds per server, alternating order (ABBA); medians are reported")
    parser.add_argument("--log-rounds", type=int, default=6,
                        help="paired bursts (log on, log off) per scenario for the log's cost")
    parser.add_argument("--log-duration", type=float, default=5.0,
                        help="measured seconds per burst of the log's cost")
    parser.add_argument("--log-pairs", type=int, default=3,
                        help="fresh server processes (--log-method switch) or pairs of them "
                             "(log on, log off) the log's rounds are spread over (two processes "
                             "of one server differ by several per cent for their whole life)")
    parser.add_argument("--log-method", choices=("switch", "pairs"), default="switch",
                        help="switch (default): one server process per --log-pairs, its log "
                             "switched off and on between bursts (both sides share the "
                             "process); pairs: a log-on and a log-off process side by side")
    parser.add_argument("--log-control", action="store_true",
                        help="a control run of the log's cost: both sides with the log off, "
                             "so the ratios show what noise and process luck alone give")
    parser.add_argument("--log-cost-only", action="store_true",
                        help="measure only what the prediction log costs (paired bursts)")
    parser.add_argument("--log-scenarios", default="",
                        help="the log's cost only in these scenarios (comma-separated, "
                             "e.g. 'single c=32,batch100 c=8'; default: all)")
    parser.add_argument("--baseline-rev", default=BASELINE_REV,
                        help="the git revision whose server (log off) ours (log on) must not be "
                             "slower than at c=1 (default: the server of the day that goal was "
                             "set); '' skips it")
    parser.add_argument("--no-pin", action="store_true", help="do not pin servers/load to cores")
    parser.add_argument("--distinct-bodies", type=int, default=256,
                        help="distinct request bodies per scenario (cycled by the workers)")
    parser.add_argument("--mlserver-venv", default=os.environ.get("MLSERVER_VENV", ""),
                        help="a venv with MLServer 1.7.1, mlserver-mlflow and uvloop==0.21.0 "
                             "(make bench-serving-venv); also run MLServer (default: "
                             "$MLSERVER_VENV; without it MLServer is not run)")
    parser.add_argument("--mlserver-batch-ms", default="1,5",
                        help="MLServer's max_batch_time values to run, in ms (its best counts)")
    args = parser.parse_args()
    log_scenarios(args.log_scenarios)  # a misspelt scenario fails before anything starts
    logging.basicConfig(level=logging.WARNING)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even if started with ^C ignored
    for sig in (signal.SIGTERM, signal.SIGHUP):  # stop like ^C: the finally blocks run
        signal.signal(sig, _interrupt)
    home = Path(args.keep_home or tempfile.mkdtemp(prefix="mlops-bench-serving-")).resolve()
    os.environ["MLOPS_HOME"] = str(home)
    sys.path.insert(0, str(ROOT))
    pin = not args.no_pin and shutil.which("taskset") is not None \
        and {SERVER_CORE, LOADGEN_CORE} <= os.sched_getaffinity(0)

    print(f"MLOPS_HOME={home}", flush=True)
    prepare_home(home)
    from pipeline_tasks.core.config import load_config
    from pipeline_tasks.core.http import free_port

    config = load_config()
    venv_bin = str(Path(sys.executable).parent)
    base_env = {**os.environ, "PATH": f"{venv_bin}:{os.environ.get('PATH', '/usr/bin:/bin')}",
                "DO_NOT_TRACK": "true", "MLFLOW_DISABLE_TELEMETRY": "true",
                "PYTHONUNBUFFERED": "1"}
    logdir = Path(tempfile.mkdtemp(prefix="bench-serving-logs-"))
    procs = Procs(pin, logdir)
    shared: dict = {}
    runs: dict[str, list[dict]] = {"ours": [], "mlflow": []}
    results: dict = {"home": str(home), "pinned": pin, "duration_s": args.duration,
                     "warmup_s": args.warmup, "cpus": os.cpu_count()}
    try:
        print(f"\nservers pinned to core {SERVER_CORE}, load generator to core {LOADGEN_CORE}"
              if pin else "\nno core pinning", flush=True)

        # 1. The load generator's ceiling: a canned-response stub.
        stub_port = free_port()
        stub, _ = procs.start("stub", [sys.executable, __file__, "--stub", str(stub_port)],
                              base_env)
        try:
            wait_ready(procs, stub, time.perf_counter(), f"http://127.0.0.1:{stub_port}/")
            ceiling = {}
            for conc in (8, 32):
                spec = {"host": "127.0.0.1", "port": stub_port, "method": "POST", "path": "/",
                        "bodies": ['{"dataframe_records":[{"a":1}]}'], "rows_per_request": 1,
                        "concurrency": conc, "warmup": 0.5, "duration": 3.0}
                ceiling[f"stub c={conc}"] = res = run_load(spec, pin, stub.pid)
                print(f"  load generator vs canned stub, c={conc}: {res['rps']:.0f} req/s, "
                      f"loadgen cpu {res['loadgen_cpu']:.0%}, stub cpu {res['server_cpu']:.0%}",
                      flush=True)
        finally:
            procs.stop(stub)
        results["loadgen_ceiling"] = ceiling

        # 2. Each server alone, in ABBA order over the rounds (drift on a shared machine evens out).
        def ours_argv(port: int, *extra: str) -> list[str]:
            return [sys.executable, "-m", "pipeline_tasks.serving", "--model", MODEL, "--ref",
                    "champion", "--port", str(port), "--workdir",
                    tempfile.mkdtemp(prefix="bench-serving-ours-"), *extra]

        ours_port = free_port()
        ours_env = {**base_env, "MLOPS_HOME": str(home)}
        ml_port = free_port()
        ml_argv = [str(Path(venv_bin) / "mlflow"), "models", "serve", "-m",
                   f"models:/{MODEL}@champion", "--env-manager", "local", "-p", str(ml_port),
                   "--workers", "1"]
        ml_env = {**base_env, "MLFLOW_TRACKING_URI": config.mlflow_tracking_uri,
                  "MLFLOW_REGISTRY_URI": config.mlflow_registry_uri}

        def ours_prepare(port, proc):
            """Request bodies from the signature our server publishes; load generator checks."""
            if "payloads" in shared:
                return {}
            import httpx

            meta = httpx.get(f"http://127.0.0.1:{port}/metadata", timeout=10).json()
            rows = request_rows(home, meta["signature"]["inputs"],
                                max(args.distinct_bodies, 100 * 16))
            shared["rows"] = rows
            n = args.distinct_bodies
            shared["payloads"] = {1: bodies_for(rows, 1, n), 100: bodies_for(rows, 100, 16)}
            shared["sample"] = bodies_for(rows, 100, 2) + bodies_for(rows, 1, 20)
            # the same rows as OIP requests (MLServer's pandas form)
            inputs = meta["signature"]["inputs"]
            shared["payloads_oip"] = {k: oip_bodies(v, inputs)
                                      for k, v in shared["payloads"].items()}
            shared["sample_oip"] = oip_bodies(shared["sample"], inputs)
            spec = {"host": "127.0.0.1", "port": port, "method": "GET", "path": "/health",
                    "bodies": [], "rows_per_request": 1, "concurrency": 8, "warmup": 0.5,
                    "duration": 3.0}
            health = run_load(spec, pin, proc.pid)
            print(f"  load generator vs our /health, c=8: {health['rps']:.0f} req/s, "
                  f"loadgen cpu {health['loadgen_cpu']:.0%}, server cpu "
                  f"{health['server_cpu']:.0%}, other {health['other_cpu']:.0%}", flush=True)
            return {"model_version": meta["model_version"], "columns": len(rows[0]),
                    "health_c8": health}

        if args.log_cost_only:
            results["log_cost"] = log_cost(procs, ours_argv, ours_env, shared, args, pin,
                                           ours_prepare)
            if args.baseline_rev and "single c=1" in results["log_cost"]["scenarios"]:
                results["baseline_c1"] = baseline_c1(procs, ours_argv, ours_env, shared, args,
                                                     pin, ours_prepare)
            report_log_cost(results)
            return save(results)
        sides = {
            "ours": lambda: bench_server("ours", procs, ours_argv(ours_port), ours_env, ours_port,
                                         "/ready", "/predict", shared, args, pin, ours_prepare),
            "mlflow": lambda: bench_server("mlflow", procs, ml_argv, ml_env, ml_port, "/ping",
                                           "/invocations", shared, args, pin),
        }
        titles = {"ours": "our server (pipeline_tasks.serving, prediction log on)",
                  "mlflow": "mlflow models serve (--env-manager local, --workers 1)"}
        if args.mlserver_venv:
            mlserver = Path(args.mlserver_venv) / "bin" / "mlserver"
            if not mlserver.exists():
                raise SystemExit(f"--mlserver-venv {args.mlserver_venv}: no bin/mlserver there")
            import mlflow

            model_dir = mlflow.artifacts.download_artifacts(
                f"models:/{MODEL}@champion",
                dst_path=tempfile.mkdtemp(prefix="bench-serving-model-"))
            for ms in (float(x) for x in args.mlserver_batch_ms.split(",") if x.strip()):
                side = f"mlserver_{ms:g}ms"
                ms_port = free_port()
                folder = mlserver_folder(model_dir, ms_port, ms / 1000)
                runs[side] = []
                titles[side] = (f"MLServer 1.7.1, MLflow runtime, adaptive batching (max 32, "
                                f"{ms:g} ms), 1 worker")
                sides[side] = (lambda name=side, port=ms_port, folder=folder: bench_server(
                    name, procs, [str(mlserver), "start", str(folder)],
                    {**base_env, "PATH": f"{mlserver.parent}:{base_env['PATH']}"}, port,
                    "/v2/health/ready", f"/v2/models/{MODEL}/infer", shared, args, pin,
                    form="oip"))
        for rnd in range(args.rounds):
            order = tuple(runs)
            for side in (order if rnd % 2 == 0 else order[::-1]):
                print(f"\nround {rnd + 1}/{args.rounds}: {titles[side]}", flush=True)
                runs[side].append(sides[side]())
        # 3. What the prediction log costs: on and off side by side, bursts alternating.
        results["log_cost"] = log_cost(procs, ours_argv, ours_env, shared, args, pin,
                                       ours_prepare)
        # 4. At c=1, against the log-off server of the day the goal was set.
        if args.baseline_rev and "single c=1" in results["log_cost"]["scenarios"]:
            results["baseline_c1"] = baseline_c1(procs, ours_argv, ours_env, shared, args, pin,
                                                 ours_prepare)
    finally:
        procs.stop_all()

    results["runs"] = runs
    for side, side_runs in runs.items():
        results[side] = combine(side_runs)
    report(results, shared)
    for side, side_runs in runs.items():
        for run in side_runs:
            run.pop("sample_predictions", None)
        results[side].pop("sample_predictions", None)
    return save(results)


def save(results: dict) -> int:
    out = Path(__file__).resolve().parent / "results"
    out.mkdir(exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    path = out / f"{stamp}-serving.json"
    path.write_text(json.dumps(results, indent=2, default=str))
    print(f"\nresults: {path.relative_to(ROOT)}")
    return 0


def log_cost(procs: Procs, argv_for, env: dict, shared: dict, args, pin: bool,
             prepare) -> dict:
    """What the prediction log costs, paired: load bursts with the log on and off in turn, per
    round and scenario, the order alternating (on off, off on, ...), so a shared machine's
    drift falls on both alike. ``--log-method switch``: one ``--serve-switchable`` process, its
    log switched before each burst (``LogSwitch``); ``pairs``: our server with the log on and
    the same server with ``--no-prediction-log``, both running and pinned to the server core
    (the idle one waits on its socket). The rounds are spread over ``--log-pairs`` fresh
    processes (or pairs): two processes of the same server differ by several per cent for
    their whole life, and one would count that as the log's cost under ``pairs``
    (``--log-control`` shows the noise: both sides with the log off). Per scenario: the bursts
    of each side, the per-pair ratios on/off and which process (pair) each came from."""
    from pipeline_tasks.core.http import free_port

    scenarios = log_scenarios(args.log_scenarios)
    pairs = max(1, min(args.log_pairs, args.log_rounds))
    control = args.log_control
    switched = args.log_method == "switch"
    out: dict = {"rounds": args.log_rounds, "pairs": pairs, "duration_s": args.log_duration,
                 "control": control, "method": args.log_method,
                 "scenarios": {s[0]: {"on": [], "off": [], "pair": []} for s in scenarios}}
    print(f"\nthe prediction log's cost: log on and off side by side, {args.log_rounds} paired "
          f"bursts of {args.log_duration:g} s per scenario over {pairs} fresh "
          + ("server process(es), the log switched off and on inside each" if switched
             else "pair(s) of servers")
          + (" -- CONTROL: both sides with the log off, so the ratios show the noise alone"
             if control else ""), flush=True)
    seen: dict = {}
    for pair in range(pairs):
        rounds = range(pair * args.log_rounds // pairs, (pair + 1) * args.log_rounds // pairs)
        servers: dict = {}  # side -> process: one process on both sides when switched
        try:
            if switched:
                port = free_port()
                ports = {"on": port, "off": port}
                extra = ("--no-prediction-log",) if control else ()
                proc, started = procs.start(f"ours-log-switched-{pair + 1}",
                                            switchable(argv_for(port, *extra)), env)
                servers = {"on": proc, "off": proc}
                ready = wait_ready(procs, proc, started, f"http://127.0.0.1:{port}/ready")
                print(f"  process {pair + 1}/{pairs} (port {port}) ready in {ready:.2f} s",
                      flush=True)
            else:
                ports = {"on": free_port(), "off": free_port()}
                for side in ("on", "off"):
                    extra = () if side == "on" and not control else ("--no-prediction-log",)
                    proc, started = procs.start(f"ours-log-{side}-{pair + 1}",
                                                argv_for(ports[side], *extra), env)
                    servers[side] = proc
                    ready = wait_ready(procs, proc, started,
                                       f"http://127.0.0.1:{ports[side]}/ready")
                    print(f"  pair {pair + 1}/{pairs}: log {side} (port {ports[side]}) ready "
                          f"in {ready:.2f} s", flush=True)
            prepare(ports["on"], servers["on"])
            warm_log(ports["on"], servers["on"], shared, pin)
            if not switched:
                agree = [sample_predictions(f"http://127.0.0.1:{ports[side]}/predict",
                                            shared["sample"]) for side in ("on", "off")]
                if agree[0] != agree[1]:
                    raise SystemExit("the servers with the log on and off predict differently")
            got = alternate(ports, servers, scenarios, shared, args, pin, rounds,
                            switch=LogSwitch(servers["on"], ports["on"]) if switched else None)
            for scen, sides in got["scenarios"].items():
                for side in ("on", "off"):
                    out["scenarios"][scen][side].extend(sides[side])
                out["scenarios"][scen]["pair"].extend([pair] * len(sides["on"]))
            if not control:
                for key, value in log_metrics(ports["on"]).items():
                    seen[key] = seen.get(key, 0) + value
        finally:
            for proc in dict.fromkeys(servers.values()):
                procs.stop(proc)
    if seen:
        out["log_on_metrics"] = seen
        print(f"  log on, all pairs: {seen}", flush=True)
    return out


def warm_log(port: int, proc, shared: dict, pin: bool, timeout: float = 60.0) -> None:
    """A short untimed burst of 100-row requests, and the wait until the log has written it:
    a server's first files pay one-off costs (imports, the first folder), which would
    otherwise fall on whichever burst comes first."""
    spec = {"host": "127.0.0.1", "port": port, "method": "POST", "path": "/predict",
            "bodies": shared["payloads"][100], "rows_per_request": 100, "concurrency": 8,
            "warmup": 0.0, "duration": 2.0}
    run_load(spec, pin, proc.pid)
    wait_log_written(port, timeout)


def wait_log_written(port: int, timeout: float = 60.0) -> None:
    """Until the server's log has written every row it was handed (its queue gauge at 0)."""
    deadline = time.monotonic() + timeout
    while log_metrics(port)["waiting"]:
        if time.monotonic() > deadline:
            raise SystemExit(f"the prediction log on port {port} still had rows waiting after "
                             f"{timeout:.0f} s")
        time.sleep(0.1)


class LogSwitch:
    """The prediction log of a ``--serve-switchable`` server switched to a side before its
    burst: off, then wait until the log has written what the last burst with it on left
    (its queue gauge at 0), so that work does not fall on the log-off side."""

    def __init__(self, proc, port: int, timeout: float = 60.0):
        self.proc, self.port, self.timeout, self.side = proc, port, timeout, "on"

    def __call__(self, side: str) -> None:
        if side != self.side:
            os.kill(self.proc.pid, LOG_SWITCH)
            self.side = side
        if side == "off":
            wait_log_written(self.port, self.timeout)

    def check(self, side: str) -> None:
        """After a burst on ``side``: with the log off, nothing was handed to it."""
        if side == "off" and log_metrics(self.port)["waiting"]:
            raise SystemExit("rows reached the prediction log while it was switched off: the "
                             "switch did not work")


def alternate(ports: dict, servers: dict, scenarios: list, shared: dict, args,
              pin: bool, rounds: range | None = None, switch: LogSwitch | None = None) -> dict:
    """Load bursts to the two servers ``on`` and ``off`` in turn, per round and scenario, the
    order alternating (on off, off on, ...); per scenario the bursts of each side. ``rounds``:
    which of the ``--log-rounds`` rounds (default all). ``switch``: one server on both ports,
    its log switched to each side before its burst."""
    rounds = rounds if rounds is not None else range(args.log_rounds)
    out: dict = {"rounds": len(rounds), "duration_s": args.log_duration, "scenarios": {}}
    for scen, _, _ in scenarios:
        out["scenarios"][scen] = {"on": [], "off": []}
    for rnd in rounds:
        for k, (scen, per_request, concurrency) in enumerate(scenarios):
            order = ("on", "off") if (rnd + k) % 2 == 0 else ("off", "on")
            got = {}
            for side in order:
                spec = {"host": "127.0.0.1", "port": ports[side], "method": "POST",
                        "path": "/predict", "bodies": shared["payloads"][per_request],
                        "rows_per_request": per_request, "concurrency": concurrency,
                        "warmup": args.warmup, "duration": args.log_duration}
                if switch is not None:
                    switch(side)
                log_cpu = log_metrics(ports[side])["cpu_s"] if side == "on" else 0.0
                got[side] = res = run_load(spec, pin, servers[side].pid)
                if side == "on":  # the log's threads' CPU time during the burst, per answer
                    res["log_cpu_ms_per_req"] = ((log_metrics(ports[side])["cpu_s"] - log_cpu)
                                                 * 1e3 / max(1, res["all_requests"]))
                if switch is not None:
                    switch.check(side)
                out["scenarios"][scen][side].append(res)
            on, off = got["on"], got["off"]
            print(f"  round {rnd + 1}/{args.log_rounds} {scen:<14}"
                  f"on {on['rps']:7.1f} req/s p99 {on['p99_ms']:6.1f} ms "
                  f"{on['server_cpu_ms_per_req']:.2f} cpu-ms/req | "
                  f"off {off['rps']:7.1f} req/s p99 {off['p99_ms']:6.1f} ms "
                  f"{off['server_cpu_ms_per_req']:.2f} cpu-ms/req | other cpu "
                  f"{max(on['other_cpu'], off['other_cpu']):.0%}"
                  + (f" | errors {on['errors']}/{off['errors']}"
                     if on["errors"] or off["errors"] else ""), flush=True)
    return out


def baseline_c1(procs: Procs, argv_for, env: dict, shared: dict, args, pin: bool,
                prepare) -> dict:
    """Ours with the log on against the server of ``--baseline-rev`` (a git revision of this
    repository: by default the one the c=1 goal was set against) with its log off, at c=1,
    paired as the log's cost is: "at c=1, no slower than the log-off server of that day". The
    revision is checked out in a temporary git worktree and run from there, same venv."""
    from pipeline_tasks.core.http import free_port

    tree = Path(tempfile.mkdtemp(prefix="bench-serving-baseline-")) / "tree"
    added = subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "-q",
                            str(tree), args.baseline_rev], capture_output=True, text=True,
                           check=False)
    if added.returncode != 0:
        raise SystemExit(f"--baseline-rev {args.baseline_rev}: cannot check it out of {ROOT} "
                         f"({added.stderr.strip()[:300]}); a shallow clone lacks it: fetch it, "
                         "name another revision, or give --baseline-rev '' to skip")
    ports = {"on": free_port(), "off": free_port()}
    servers = {}
    print(f"\nat c=1, ours (log on, port {ports['on']}) against the server of "
          f"{args.baseline_rev} (log off, port {ports['off']}), {args.log_rounds} paired "
          f"bursts of {args.log_duration:g} s", flush=True)
    try:
        proc, started = procs.start("ours-c1", argv_for(ports["on"]), env)
        servers["on"] = proc
        wait_ready(procs, proc, started, f"http://127.0.0.1:{ports['on']}/ready")
        prepare(ports["on"], proc)
        proc, started = procs.start("baseline-c1", argv_for(ports["off"], "--no-prediction-log"),
                                    {**env, "PYTHONPATH": str(tree)}, cwd=tree)
        servers["off"] = proc
        wait_ready(procs, proc, started, f"http://127.0.0.1:{ports['off']}/ready")
        out = alternate(ports, servers, [s for s in SCENARIOS if s[0] == "single c=1"], shared,
                        args, pin)
    finally:
        for proc in servers.values():
            procs.stop(proc)
        subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)],
                       check=False)
    out["rev"] = args.baseline_rev
    return out


def log_scenarios(given: str) -> list[tuple[str, int, int]]:
    """The scenarios ``--log-scenarios`` names (comma-separated), all when empty."""
    wanted = {x.strip() for x in given.split(",") if x.strip()}
    unknown = wanted - {s[0] for s in SCENARIOS}
    if unknown:
        raise SystemExit(f"--log-scenarios: unknown {sorted(unknown)}; known: "
                         f"{[s[0] for s in SCENARIOS]}")
    return [s for s in SCENARIOS if not wanted or s[0] in wanted]


def log_metrics(port: int) -> dict:
    """The prediction log's own figures on a server's ``/metrics``: rows predicted, rows
    dropped (a full queue) and rows waiting."""
    import httpx
    from prometheus_client.parser import text_string_to_metric_families

    wanted = {"mlops_serving_rows_predicted_total": "predicted",
              "mlops_serving_prediction_log_dropped_rows_total": "dropped",
              "mlops_serving_prediction_log_queued_rows": "waiting",
              "mlops_serving_prediction_log_cpu_seconds_total": "cpu_s"}
    figures = dict.fromkeys(wanted.values(), 0.0)
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name in wanted:
                figures[wanted[sample.name]] += sample.value
    return {k: v if k == "cpu_s" else int(v) for k, v in figures.items()}


def _paired(scenario: dict) -> dict:
    """Medians of each side's bursts and of the per-pair ratios on/off."""
    import statistics

    on, off = scenario["on"], scenario["off"]
    med = {f"{key}_{side}": statistics.median(r[key] for r in runs)
           for side, runs in (("on", on), ("off", off))
           for key in ("rps", "p99_ms", "server_cpu_ms_per_req")}
    rps = [a["rps"] / b["rps"] for a, b in zip(on, off, strict=True)]
    p99 = [a["p99_ms"] / b["p99_ms"] for a, b in zip(on, off, strict=True)]
    pairs = scenario.get("pair") or [0] * len(rps)
    per_pair = [statistics.median(r for r, k in zip(rps, pairs, strict=True) if k == pair)
                for pair in sorted(set(pairs))]
    # the log's own threads: CPU per answer, and their share of the server's CPU (log on)
    threads = [(r["log_cpu_ms_per_req"], r["log_cpu_ms_per_req"] / r["server_cpu_ms_per_req"])
               for r in on if "log_cpu_ms_per_req" in r and r["server_cpu_ms_per_req"]]
    if threads:
        med["log_cpu_us_per_req"] = 1e3 * statistics.median(t for t, _ in threads)
        med["log_cpu_share"] = statistics.median(share for _, share in threads)
    return {**med, "rps_ratio": statistics.median(rps), "p99_ratio": statistics.median(p99),
            "rps_ratio_interval": median_interval(rps), "p99_ratio_interval": median_interval(p99),
            "rps_ratios": rps, "p99_ratios": p99, "rps_ratio_per_server_pair": per_pair,
            "errors": sum(r["errors"] for r in on + off),
            "other_cpu": max(r["other_cpu"] for r in on + off)}


def median_interval(values: list[float], level: float = 0.9, draws: int = 4000) -> list[float]:
    """Where the median of ``values`` lies, ``level`` of the time: the percentiles of the
    medians of ``draws`` resamples (with replacement; seeded, so a run's report is
    reproducible). The per-pair ratios of a shared machine spread widely; with a few pairs
    their median can miss a goal the log meets, or meet one it misses, and this says how
    far to trust it."""
    import random
    import statistics

    if len(values) < 2:
        return [values[0], values[0]] if values else [float("nan"), float("nan")]
    pick = random.Random(0)
    medians = sorted(statistics.median(pick.choices(values, k=len(values)))
                     for _ in range(draws))
    tail = (1.0 - level) / 2
    return [_percentile(medians, 100 * tail), _percentile(medians, 100 * (1.0 - tail))]


def report_log_cost(results: dict) -> None:
    cost = results["log_cost"]
    where = (f"{cost.get('pairs', 1)} fresh server process(es), the log switched off and on "
             "inside each" if cost.get("method") == "switch" else
             f"{cost.get('pairs', 1)} fresh pair(s) of server processes (log on, log off)")
    print(f"\nwhat the prediction log costs: the same server with the log on and off on one "
          f"core, {cost['rounds']} paired bursts of {cost['duration_s']:g} s per scenario over "
          f"{where}; medians, and the median of the per-pair ratios on/off (goals: throughput "
          f">= 0.9x, p99 <= 1.3x)")
    if cost.get("control"):
        print("CONTROL RUN: both sides had the log off; the ratios are noise and process luck, "
              "not the log's cost, and the goals below do not apply")
    print(f"{'scenario':<14}{'req/s on':>10}{'off':>8}{'ratio':>7}{'p99 on':>8}{'off':>8}"
          f"{'ratio':>7}{'cpu-ms/req on':>15}{'off':>6}  {'ratios per pair (req/s; p99)':<30}"
          f"{'median, 90 % (req/s; p99)':<27}{'log threads':<18}"
          f"{'req/s ratio per server pair':<29}goals")
    goals = {}
    for scen in cost["scenarios"]:
        p = cost["scenarios"][scen]["paired"] = _paired(cost["scenarios"][scen])
        ok = p["rps_ratio"] >= 0.9 and p["p99_ratio"] <= 1.3
        verdict = "control" if cost.get("control") else "PASS" if ok else "MISS"
        if not cost.get("control"):
            goals[f"{scen}: log on/off throughput {p['rps_ratio']:.2f}x (>= 0.9), p99 "
                  f"{p['p99_ratio']:.2f}x (<= 1.3)"] = ok
        spread = (f"{min(p['rps_ratios']):.2f}-{max(p['rps_ratios']):.2f}; "
                  f"{min(p['p99_ratios']):.2f}-{max(p['p99_ratios']):.2f}")
        interval = (f"{p['rps_ratio_interval'][0]:.2f}-{p['rps_ratio_interval'][1]:.2f}; "
                    f"{p['p99_ratio_interval'][0]:.2f}-{p['p99_ratio_interval'][1]:.2f}")
        threads = (f"{p['log_cpu_us_per_req']:.0f} us ({p['log_cpu_share']:.1%})"
                   if "log_cpu_share" in p else "-")
        per_pair = " ".join(f"{r:.2f}" for r in p["rps_ratio_per_server_pair"])
        print(f"{scen:<14}{p['rps_on']:>10.1f}{p['rps_off']:>8.1f}{p['rps_ratio']:>7.2f}"
              f"{p['p99_ms_on']:>8.1f}{p['p99_ms_off']:>8.1f}{p['p99_ratio']:>7.2f}"
              f"{p['server_cpu_ms_per_req_on']:>15.2f}{p['server_cpu_ms_per_req_off']:>6.2f}  "
              f"{spread:<30}{interval:<27}{threads:<18}{per_pair:<29}{verdict}")
    seen = cost.get("log_on_metrics")
    if any("log_cpu_share" in s["paired"] for s in cost["scenarios"].values()):
        print("log threads: the CPU time of the log's collector and writer threads during the "
              "log-on bursts (their clocks, on /metrics) per answer, and their share of the "
              "server's CPU time then: what the log takes from the answers, apart from the "
              "hand-off on the request path and from the caches it shares")
    if seen:
        print(f"the server with the log on predicted {seen['predicted']:,} rows; its log dropped "
              f"{seen['dropped']:,} (a full queue) and had {seen['waiting']:,} waiting at the "
              f"end")
    if results.get("baseline_c1"):
        goal, ok = baseline_goal(results["baseline_c1"])
        print(f"{'PASS' if ok else 'MISS'}  {goal}")
    busiest = max(s["paired"]["other_cpu"] for s in cost["scenarios"].values())
    if busiest > 0.25:
        print(f"WARNING: other processes kept up to {busiest:.0%} of a core busy during the "
              "bursts; the figures are noisy. Re-run on a quiet machine or with more "
              "--log-rounds.")
    cost["goals"] = goals


def baseline_goal(baseline: dict) -> tuple[str, bool]:
    """The c=1 goal against the baseline revision's log-off server, and whether it holds."""
    one = _paired(baseline["scenarios"]["single c=1"])
    goal = (f"single c=1: log on no slower than the log-off server of {baseline['rev'][:12]} "
            f"({one['rps_on']:.1f} vs {one['rps_off']:.1f} req/s, paired ratio "
            f"{one['rps_ratio']:.2f}; p99 {one['p99_ms_on']:.1f} vs {one['p99_ms_off']:.1f} "
            f"ms)")
    return goal, one["rps_ratio"] >= 1.0


def combine(runs: list[dict]) -> dict:
    """The median over rounds of each figure; errors summed; the busiest 'other' load."""
    import statistics

    first = runs[0]
    out = {**{k: v for k, v in first.items() if k not in ("scenarios", "ready_s")},
           "ready_s": statistics.median(r["ready_s"] for r in runs),
           "ready_s_rounds": [r["ready_s"] for r in runs], "scenarios": {}}
    for scen, _, _ in SCENARIOS:
        rs = [r["scenarios"][scen] for r in runs]
        med = {k: statistics.median(r[k] for r in rs)
               for k in ("rps", "rows_per_s", "p50_ms", "p90_ms", "p99_ms", "max_ms",
                         "server_cpu", "loadgen_cpu", "server_cpu_ms_per_req")}
        out["scenarios"][scen] = {**med, "errors": sum(r["errors"] for r in rs),
                                  "other_cpu": max(r["other_cpu"] for r in rs),
                                  "rps_rounds": [r["rps"] for r in rs],
                                  "p99_rounds": [r["p99_ms"] for r in rs]}
    return out


def report(results: dict, shared: dict) -> None:
    ours, mlf = results["ours"], results["mlflow"]
    a, b = ours["sample_predictions"], mlf["sample_predictions"]
    agree = sum(1 for x, y in zip(a, b, strict=True) if float(x) == float(y))
    results["agreement"] = {"rows": len(a), "agree": agree}
    ceil = results["loadgen_ceiling"]
    rounds = len(results["runs"]["ours"])
    print("\n" + "=" * 108)
    print(f"model {MODEL} v{ours.get('model_version', '?')} ({len(shared['rows'][0])} input "
          f"columns); {results['cpus']} cpus; "
          + (f"servers pinned to core {SERVER_CORE} (taskset), load generator to core "
             f"{LOADGEN_CORE}" if results["pinned"] else "no core pinning"))
    print(f"load generator: own process, raw asyncio streams on uvloop, keep-alive, closed loop; "
          f"{results['warmup_s']:g} s warm-up + {results['duration_s']:g} s per scenario; "
          f"{rounds} round(s) in ABBA order, medians shown")
    print(f"load generator ceiling: canned stub {ceil['stub c=8']['rps']:.0f} req/s (c=8), "
          f"{ceil['stub c=32']['rps']:.0f} req/s (c=32); our /health "
          f"{ours.get('health_c8', {}).get('rps', float('nan')):.0f} req/s (c=8)")
    print(f"prediction agreement (ours vs mlflow) on {len(a)} sample rows: {agree}/{len(a)}")
    print(f"\n{'scenario':<14}{'req/s ours':>11}{'mlflow':>8}{'ratio':>7}{'rows/s ours':>12}"
          f"{'mlflow':>8}{'p50 ours':>9}{'mlflow':>8}{'p99 ours':>9}{'mlflow':>8}{'ratio':>7}"
          f"{'cpu-ms/req o/m':>16}{'errors o/m':>11}{'other cpu':>10}")
    for scen, _, _ in SCENARIOS:
        o, m = ours["scenarios"][scen], mlf["scenarios"][scen]
        print(f"{scen:<14}{o['rps']:>11.1f}{m['rps']:>8.1f}{o['rps'] / m['rps']:>7.2f}"
              f"{o['rows_per_s']:>12.0f}{m['rows_per_s']:>8.0f}{o['p50_ms']:>9.1f}"
              f"{m['p50_ms']:>8.1f}{o['p99_ms']:>9.1f}{m['p99_ms']:>8.1f}"
              f"{o['p99_ms'] / m['p99_ms']:>7.2f}"
              f"{o['server_cpu_ms_per_req']:>9.2f}/{m['server_cpu_ms_per_req']:<6.2f}"
              f"{o['errors']:>7}/{m['errors']:<3}"
              f"{max(o['other_cpu'], m['other_cpu']):>10.0%}")
    print(f"{'start to ready':<15}ours {ours['ready_s']:.2f} s, mlflow {mlf['ready_s']:.2f} s "
          f"(ratio {ours['ready_s'] / mlf['ready_s']:.2f}); rounds: ours "
          f"{', '.join(f'{x:.2f}' for x in ours['ready_s_rounds'])}, mlflow "
          f"{', '.join(f'{x:.2f}' for x in mlf['ready_s_rounds'])}")
    print("(ratio: ours/mlflow; cpu-ms/req: the server's CPU time per answer; 'other cpu': "
          "cores busy with processes outside the benchmark, worst round)")
    report_log_cost(results)
    busiest = max(r["other_cpu"] for side in (ours, mlf) for r in side["scenarios"].values())
    if busiest > 0.25:
        print(f"WARNING: other processes kept up to {busiest:.0%} of a core busy during the "
              "measurements; the figures are noisy. Re-run on a quiet machine or with more "
              "--rounds.")
    o, m = ours["scenarios"][GOAL_SCENARIO], mlf["scenarios"][GOAL_SCENARIO]
    goals = {
        f"throughput >= 2x mlflow at {GOAL_SCENARIO} (got {o['rps'] / m['rps']:.2f}x)":
            o["rps"] / m["rps"] >= 2.0,
        f"p99 <= 0.5x mlflow at {GOAL_SCENARIO} (got {o['p99_ms'] / m['p99_ms']:.2f}x)":
            o["p99_ms"] / m["p99_ms"] <= 0.5,
        f"ready sooner than mlflow ({ours['ready_s']:.2f} s vs {mlf['ready_s']:.2f} s)":
            ours["ready_s"] < mlf["ready_s"],
    }
    results["goals"] = goals
    print("\ngoals (informational):")
    for goal, ok in goals.items():
        print(f"  {'PASS' if ok else 'MISS'}  {goal}")
    report_field(results)


FIELD_SCENARIOS = ("single c=8", "single c=32", "batch100 c=8")


def report_field(results: dict) -> None:
    """Ours (log on) against MLServer's best batching setting and ``mlflow models serve``."""
    field = sorted(side for side in results["runs"] if side.startswith("mlserver_"))
    if not field:
        print("\nMLServer was not run (--mlserver-venv, or MLSERVER_VENV; `make "
              "bench-serving-venv` builds one): no comparison with it")
        return
    ours, mlf = results["ours"], results["mlflow"]
    a = ours["sample_predictions"]
    for side in field:
        b = results[side]["sample_predictions"]
        agree = sum(1 for x, y in zip(a, b, strict=True) if float(x) == float(y))
        print(f"prediction agreement (ours vs {side}) on {len(a)} sample rows: {agree}/{len(a)}")
    print("\nours (prediction log on) vs MLServer 1.7.1 (best of max_batch_time "
          + ", ".join(side.removeprefix("mlserver_") for side in field)
          + " per figure) and mlflow models serve")
    print(f"{'scenario':<14}{'req/s ours':>11}{'MLServer':>9}{'ratio':>7}{'mlflow':>8}{'ratio':>7}"
          f"{'p99 ours':>9}{'MLServer':>9}{'ratio':>7}   best setting (rps / p99)")
    goals: dict[str, bool] = {}
    for scen, _, _ in SCENARIOS:
        o, m = ours["scenarios"][scen], mlf["scenarios"][scen]
        by_rps = max(field, key=lambda side: results[side]["scenarios"][scen]["rps"])
        by_p99 = min(field, key=lambda side: results[side]["scenarios"][scen]["p99_ms"])
        best_rps = results[by_rps]["scenarios"][scen]["rps"]
        best_p99 = results[by_p99]["scenarios"][scen]["p99_ms"]
        print(f"{scen:<14}{o['rps']:>11.1f}{best_rps:>9.1f}{o['rps'] / best_rps:>7.2f}"
              f"{m['rps']:>8.1f}{o['rps'] / m['rps']:>7.2f}{o['p99_ms']:>9.1f}{best_p99:>9.1f}"
              f"{o['p99_ms'] / best_p99:>7.2f}   {by_rps.removeprefix('mlserver_')} / "
              f"{by_p99.removeprefix('mlserver_')}")
        if scen in FIELD_SCENARIOS:
            goals[f"{scen}: throughput >= 1.2x MLServer's best (got "
                  f"{o['rps'] / best_rps:.2f}x)"] = o["rps"] >= 1.2 * best_rps
            goals[f"{scen}: p99 <= 0.5x MLServer's best (got {o['p99_ms'] / best_p99:.2f}x)"] = \
                o["p99_ms"] <= 0.5 * best_p99
            goals[f"{scen}: throughput >= 4x mlflow models serve (got "
                  f"{o['rps'] / m['rps']:.2f}x)"] = o["rps"] >= 4 * m["rps"]
    if results.get("baseline_c1"):
        goal, ok = baseline_goal(results["baseline_c1"])
        goals[goal] = ok
    paired = results["log_cost"]["scenarios"].get("single c=1")
    if paired:  # not measured when --log-scenarios left it out
        one = paired["paired"]
        print(f"(single c=1, log on against today's log off: {one['rps_on']:.1f} vs "
              f"{one['rps_off']:.1f} req/s, paired ratio {one['rps_ratio']:.2f})")
    results["field_goals"] = goals
    print("\ngoals against the field, prediction log on (informational):")
    for goal, ok in goals.items():
        print(f"  {'PASS' if ok else 'MISS'}  {goal}")


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("\ninterrupted; every process this benchmark started is stopped", file=sys.stderr)
        sys.exit(130)
