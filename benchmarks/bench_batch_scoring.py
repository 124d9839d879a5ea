"""Benchmark: our batch scorer vs ``mlflow models predict`` vs the obvious script, side by side.

A fresh ``MLOPS_HOME`` gets February 2013 of the flights feed, and the pipeline's stages
(``pipeline_tasks.stages.run_all``) train and register the demo model ``flights_is_late``
(alias ``champion``). The rows of the landed feed, only the model's input columns (its signature),
are repeated to 1M and 10M rows and written, streaming, once as Parquet (row groups of
``--row-group-rows``, pyarrow's default) and once as CSV (as pandas writes it). Per size, each
competitor runs alone in a fresh process, in interleaved rounds (each one once per round):

- A ``ours parquet``: ``python -m pipeline_tasks batch-score`` (``scoring.standalone``: the
  version fetched in a helper process while the scorer imports, then ``score_interval``) on the
  Parquet file (``chunk_rows`` = ``config.batch_chunk_rows`` unless ``--chunk-rows``), which also
  writes the scores partition (ids, label, probabilities) and the prediction log (inputs + ids);
- B ``ours csv``: the same on the CSV file;
- C ``mlflow models predict -m models:/flights_is_late/<v> -i <csv> -o out.json --content-type
  csv --env-manager local`` (the registry of the temp home through ``MLFLOW_TRACKING_URI``);
- D the obvious script: ``pd.read_parquet`` + ``mlflow.pyfunc.load_model(...).predict`` on the
  whole frame, the predictions written to Parquet;
- E and F ``ours parquet`` and the obvious script *as a task*: a process imports
  ``pipeline_tasks.ops.preload`` (what the LocalExecutor's forkserver and the Celery workers
  import once, not per task) and forks; the forked process calls what the DAG's tasks call
  (``scoring.batch.resolve_model`` + ``score_interval``; or D) and ends with ``os._exit``, as
  Airflow's task process does. Its figures are from fork to exit.

Each other figure is that of the whole process, from spawn to exit (Python start, imports and
model load included, as a user running the command sees it): wall time, rows/s, CPU time and peak
RSS (``ru_maxrss`` of ``os.wait4`` on the child: the largest process of its tree). Ours also reports
the time inside ``score_interval``. Medians over rounds; ratios against ``mlflow models predict``.
Optional extras: ``--sweep`` runs ours at other chunk sizes on the smallest size, ``--profile``
times the pieces of our scorer per chunk (reading, row checks, predict_proba split into the
preprocessing and the trees, output shaping, writing) by wrapping them in a child process: wall
and CPU seconds, the pieces inside a chunk summed over the scoring threads.

    .venv/bin/python benchmarks/bench_batch_scoring.py                 # 1M x3 + 10M x1, ~25 min
    ... --sizes 1000000 --rounds-small 1                               # quicker
    ... --sweep 25000,50000,250000,1000000 --profile                   # chunk sizes, where time goes
    ... --work /tmp/bench-batch                                        # keep and reuse data + home
    ... --sizes 10000000 --competitors ours_parquet,ours_csv           # ours alone (no ratios)

Needs about 1.2 GB of disk per 10M rows (mostly the CSV) and, for the whole-frame competitors at
10M rows, several GB of memory. Figures go to stdout and to benchmarks/results/<UTC
time>-batch.json. Not a test: never asserts times; the goals are printed as PASS/MISS for
information and the exit code is 0.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, date, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MODEL = "flights_is_late"
FEED_DAYS = (date(2013, 2, 1), date(2013, 3, 3))
TRAIN_INTERVAL = ("2013-03-01T00:00:00+00:00", "2013-03-02T00:00:00+00:00")
SCORE_INTERVAL = ("2013-03-02T00:00:00+00:00", "2013-03-03T00:00:00+00:00")
GOAL_SPEEDUP, GOAL_MEMORY_GROWTH = 3.0, 1.5
COMPETITORS = ("ours_parquet", "ours_csv", "ours_task", "mlflow_cli", "script", "script_task")
LABELS = {"ours_parquet": "ours, Parquet", "ours_csv": "ours, CSV",
          "ours_task": "ours, Parquet, as task", "mlflow_cli": "mlflow models predict",
          "script": "obvious script", "script_task": "obvious script, as task"}


# --------------------------------------------------------------------------- children

def _result(payload: dict) -> int:
    print("RESULT " + json.dumps(payload, default=str), flush=True)
    return 0


def child_ours(source: str, chunk_rows: int) -> int:
    """One scoring run of ours, as the batch DAG's tasks call it (forked as a task)."""
    t0 = time.perf_counter()
    from pipeline_tasks.core.config import load_config
    from pipeline_tasks.scoring.batch import resolve_model, score_interval

    config = load_config()
    imports = time.perf_counter() - t0
    model = resolve_model(MODEL, "champion", config)
    res = score_interval(source, model=model, interval_start=SCORE_INTERVAL[0],
                         interval_end=SCORE_INTERVAL[1], config=config, dag_id="ml_batch_scoring",
                         run_id="bench", chunk_rows=chunk_rows)
    return _result({"rows": res.rows_read, "rows_scored": res.rows_scored,
                    "rows_rejected": res.rows_rejected, "reasons": res.reject_reasons,
                    "call_s": res.seconds, "import_s": imports, "chunk_rows": chunk_rows})


def child_script(source: str, model_uri: str, out: str) -> int:
    """The obvious script: the whole file into pandas, pyfunc on the whole frame."""
    t0 = time.perf_counter()
    import mlflow.pyfunc
    import pandas as pd

    imports = time.perf_counter() - t0
    t = time.perf_counter()
    frame = pd.read_parquet(source)
    read_s = time.perf_counter() - t
    t = time.perf_counter()
    model = mlflow.pyfunc.load_model(model_uri)
    load_s = time.perf_counter() - t
    t = time.perf_counter()
    predictions = model.predict(frame)
    predict_s = time.perf_counter() - t
    t = time.perf_counter()
    pd.DataFrame({"prediction": predictions}).to_parquet(out, index=False)
    write_s = time.perf_counter() - t
    return _result({"rows": len(frame), "rows_scored": len(predictions), "import_s": imports,
                    "read_s": read_s, "load_s": load_s, "predict_s": predict_s,
                    "write_s": write_s})


class _Timer:
    """Seconds and calls per named piece (the profile child's wrappers add to it, from any of
    the scoring threads: the figures are summed over threads)."""

    def __init__(self):
        import threading

        self.seconds: dict[str, float] = {}
        self.cpu: dict[str, float] = {}  # CPU seconds of the calling thread (steadier)
        self.calls: dict[str, int] = {}
        self._lock = threading.Lock()

    def add(self, name: str, seconds: float, cpu: float = 0.0) -> None:
        with self._lock:
            self.seconds[name] = self.seconds.get(name, 0.0) + seconds
            self.cpu[name] = self.cpu.get(name, 0.0) + cpu
            self.calls[name] = self.calls.get(name, 0) + 1

    def wrap(self, owner, attr: str, name: str) -> None:
        original = getattr(owner, attr)

        def timed(*args, **kwargs):
            t, c = time.perf_counter(), time.thread_time()
            try:
                return original(*args, **kwargs)
            finally:
                self.add(name, time.perf_counter() - t, time.thread_time() - c)

        setattr(owner, attr, timed)

    def wrap_generator(self, owner, attr: str, name: str) -> None:
        original = getattr(owner, attr)

        def timed(*args, **kwargs):
            iterator = original(*args, **kwargs)
            while True:
                t, c = time.perf_counter(), time.thread_time()
                try:
                    item = next(iterator)
                except StopIteration:
                    self.add(name, time.perf_counter() - t, time.thread_time() - c)
                    return
                self.add(name, time.perf_counter() - t, time.thread_time() - c)
                yield item

        setattr(owner, attr, timed)


def child_profile(source: str, chunk_rows: int) -> int:
    """Ours with its pieces timed (library code untouched: wrappers set in this process only).
    The chunks are scored on several threads: pieces inside a chunk are summed over them."""
    from pipeline_tasks.core.config import load_config
    from pipeline_tasks.scoring import batch, outputs, reader, rows
    from pipeline_tasks.serving import predictor

    timer = _Timer()
    timer.wrap_generator(reader.Source, "batches", "read (pyarrow batches)")
    timer.wrap(reader.Source, "check", "check columns")
    timer.wrap(rows, "to_frame", "to_frame (arrow -> pandas)")
    timer.wrap(rows, "sort_rows", "sort_rows (row checks, model dtypes)")
    timer.wrap(batch._Chunker, "_event_times", "event times")
    timer.wrap(batch._Chunker, "_ids", "row ids")
    timer.wrap(batch._Chunker, "_scores", "scores table")
    timer.wrap(batch._Chunker, "_prediction_log", "prediction-log table")
    timer.wrap(batch._Chunker, "_rejects", "rejects table")
    timer.wrap(batch._Chunker, "_predict", "predict_proba (all)")
    timer.wrap(batch._Chunker, "score", "chunk total (score)")
    # the fast path's preprocessing (the trees are the rest of 'predict_proba (all)')
    timer.wrap(predictor.ChunkPredictor, "_features", "predict_proba: preprocessing")
    for attr in ("write_scores", "write_rejects", "write_predictions"):
        timer.wrap(outputs.Staging, attr, "write parquet (scores, rejects, log)")
    timer.wrap(outputs.Staging, "close", "close files")
    timer.wrap(outputs.Staging, "publish", "publish")
    timer.wrap(batch, "_load", "model load (download, verify, skops)")
    kinds = []
    original_init = predictor.ChunkPredictor.__init__

    def init(self, model):
        original_init(self, model)
        kinds.append(self.kind)

    predictor.ChunkPredictor.__init__ = init
    config = load_config()
    model = batch.resolve_model(MODEL, "champion", config)
    t = time.perf_counter()
    res = batch.score_interval(source, model=model, interval_start=SCORE_INTERVAL[0],
                               interval_end=SCORE_INTERVAL[1], config=config,
                               dag_id="ml_batch_scoring", run_id="bench-profile",
                               chunk_rows=chunk_rows)
    total = time.perf_counter() - t
    seconds, cpu = dict(timer.seconds), dict(timer.cpu)
    for times in (seconds, cpu):
        if "predict_proba: preprocessing" in times:
            times["predict_proba: trees"] = max(
                0.0, times["predict_proba (all)"] - times["predict_proba: preprocessing"])
    return _result({"rows": res.rows_read, "total_s": total, "seconds": seconds, "cpu": cpu,
                    "calls": timer.calls, "chunk_rows": chunk_rows,
                    "threads": batch.scoring_threads(), "path": kinds[-1] if kinds else "",
                    "cpu_s": time.process_time()})


def child_setup(work: Path, sizes: list[int], row_group_rows: int, out: Path) -> int:
    """Land + train (unless done), write the data files; what the parent needs, as JSON."""
    from pipeline_tasks.core.config import load_config

    config = load_config()
    version, chunk_rows, inputs = prepare_home()
    base = base_table(version)
    print(f"{base.num_rows:,} landed rows to repeat", flush=True)
    files = {str(size): [str(p) for p in write_data(base, size, work / "data", row_group_rows)]
             for size in sizes}
    out.write_text(json.dumps({"version": version, "chunk_rows": chunk_rows, "inputs": inputs,
                               "files": files, "tracking_uri": config.mlflow_tracking_uri,
                               "registry_uri": config.mlflow_registry_uri}))
    return 0


def child_task(argv: list[str]) -> int:
    """Run the child ``argv`` as an Airflow task runs: forked from a worker that imported the
    heavy libraries once (``pipeline_tasks.ops.preload``: the LocalExecutor's forkserver preload,
    the Celery workers' ``imports``), exiting with ``os._exit`` as Airflow's task process does.
    Prints the forked process's own figures (fork to exit) on a ``TASK`` line."""
    import gc

    import pipeline_tasks.ops.preload  # noqa: F401  (once per worker, not per task)

    gc.freeze()  # as the LocalExecutor does before it forks
    sys.stdout.flush()
    t0 = time.perf_counter()
    pid = os.fork()
    if pid == 0:  # the task
        code = 1
        try:
            code = child_main(argv)
        except BaseException:  # noqa: BLE001 (os._exit skips the usual traceback)
            import traceback

            traceback.print_exc()
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    _, status, usage = os.wait4(pid, 0)
    wall = time.perf_counter() - t0
    code = os.waitstatus_to_exitcode(status)
    print("TASK " + json.dumps({"wall_s": wall, "cpu_s": usage.ru_utime + usage.ru_stime,
                                "peak_rss_mb": usage.ru_maxrss / 1024}), flush=True)
    return code


def child_main(argv: list[str]) -> int:
    mode, args = argv[0], argv[1:]
    if mode == "task":
        return child_task(args)
    if mode == "setup":
        return child_setup(Path(args[0]), [int(s) for s in args[1].split(",") if s.strip()],
                           int(args[2]), Path(args[3]))
    if mode == "ours":
        return child_ours(args[0], int(args[1]))
    if mode == "script":
        return child_script(args[0], args[1], args[2])
    if mode == "profile":
        return child_profile(args[0], int(args[1]))
    raise SystemExit(f"unknown child mode {mode!r}")


# --------------------------------------------------------------------------- parent: setup

def prepare_home() -> tuple[str, int, list[str]]:
    """Land the feed and train the demo model unless the champion exists; its version, the
    default chunk size and the model's input column names."""
    from pipeline_tasks.core import tracking
    from pipeline_tasks.core.config import load_config
    from pipeline_tasks.model.registry import current_champion

    config = load_config()
    tracking.configure_mlflow(config)
    if not current_champion(MODEL):
        from pipeline_tasks import stages
        from pipeline_tasks.ops.demo_data import land_flights_feed

        t0 = time.perf_counter()
        land_flights_feed(config, *FEED_DAYS)
        out = stages.run_all(stages.RunSpec(
            dag_id="ml_training_pipeline", run_id="bench", interval_start=TRAIN_INTERVAL[0],
            interval_end=TRAIN_INTERVAL[1], params={"training_window_days": 14}))
        if not current_champion(MODEL):
            raise SystemExit(f"the pipeline did not promote {MODEL}: {out['evaluate'].reason}")
        print(f"landed + trained + registered {MODEL} v{out['register'].version} "
              f"({out['ingest'].rows:,} training rows) in {time.perf_counter() - t0:.1f} s",
              flush=True)
    version = str(current_champion(MODEL))
    import mlflow.models

    info = mlflow.models.get_model_info(f"models:/{MODEL}/{version}")
    return version, int(config.batch_chunk_rows), info.signature.inputs.input_names()


def base_table(version: str):
    """The landed feed's rows, the model's input columns typed as its signature says."""
    import mlflow.models
    import pyarrow as pa
    import pyarrow.csv as pcsv

    from pipeline_tasks.core.config import load_config

    spec = mlflow.models.get_model_info(f"models:/{MODEL}/{version}").signature.inputs
    kinds = {"long": pa.int64(), "integer": pa.int64(), "double": pa.float64(),
             "float": pa.float64(), "string": pa.string(), "boolean": pa.bool_()}
    types = {c.name: kinds[c.type.name] for c in spec.inputs}
    folder = Path(load_config().demo_source_uri.removeprefix("file://"))
    options = pcsv.ConvertOptions(include_columns=list(types), column_types=types,
                                  strings_can_be_null=True)
    return pa.concat_tables(pcsv.read_csv(f, convert_options=options)
                            for f in sorted(folder.glob("*.csv")))


def write_data(base, rows: int, folder: Path, row_group_rows: int) -> tuple[Path, Path]:
    """``rows`` rows (the base rows repeated, in order) as Parquet and as CSV, streaming: the
    Parquet a row group at a time, the CSV as pandas writes the base rows, repeated as text."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    parquet, csv = folder / f"flights_{rows}.parquet", folder / f"flights_{rows}.csv"
    if parquet.exists() and csv.exists():
        return parquet, csv
    n = base.num_rows
    t0 = time.perf_counter()
    tmp = parquet.with_suffix(".tmp")
    with pq.ParquetWriter(tmp, base.schema, compression="snappy") as writer:
        done = 0
        while done < rows:
            block, pieces = min(row_group_rows, rows - done), []
            while block:
                pos = (done % n)
                piece = base.slice(pos, min(n - pos, block))
                pieces.append(piece)
                block -= piece.num_rows
                done += piece.num_rows
            writer.write_table(pa.concat_tables(pieces), row_group_size=row_group_rows)
    tmp.rename(parquet)
    text = base.to_pandas().to_csv(index=False)
    header, _, body = text.partition("\n")
    lines = body.splitlines(keepends=True)
    whole, rest = divmod(rows, n)
    body_all, body_rest = "".join(lines), "".join(lines[:rest])
    tmp = csv.with_suffix(".tmp")
    with tmp.open("w") as out:
        out.write(header + "\n")
        for _ in range(whole):
            out.write(body_all)
        out.write(body_rest)
    tmp.rename(csv)
    print(f"  wrote {rows:,} rows: {parquet.name} {parquet.stat().st_size / 1e6:.0f} MB, "
          f"{csv.name} {csv.stat().st_size / 1e6:.0f} MB in {time.perf_counter() - t0:.1f} s",
          flush=True)
    return parquet, csv


# --------------------------------------------------------------------------- parent: measuring

def _busy_seconds() -> float:
    """Busy CPU seconds of the whole machine (all processes)."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in fields[:8])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def run_child(name: str, argv: list[str], env: dict, logdir: Path, parse=None) -> dict:
    """Run one command alone; its wall time, CPU time and peak RSS (``os.wait4``: the largest
    resident set of the process and its reaped descendants). ``parse``: its figures from its
    standard output (default: a child's ``RESULT`` line)."""
    logdir.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%H%M%S%f")
    out_path, err_path = logdir / f"{name}-{stamp}.out", logdir / f"{name}-{stamp}.err"
    with out_path.open("w") as out, err_path.open("w") as err:
        busy0, t0 = _busy_seconds(), time.perf_counter()
        proc = subprocess.Popen(argv, env=env, stdout=out, stderr=err, cwd=str(logdir))
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        busy = _busy_seconds() - busy0
    proc.returncode = os.waitstatus_to_exitcode(status)
    cpu = usage.ru_utime + usage.ru_stime
    if proc.returncode != 0:
        tail = err_path.read_text()[-3000:]
        raise SystemExit(f"{name} failed (exit {proc.returncode}): {' '.join(argv)}\n{tail}")
    text = out_path.read_text()
    lines = text.splitlines()
    if parse is not None:
        result = parse(text)
    else:
        line = next((x for x in lines if x.startswith("RESULT ")), None)
        result = json.loads(line[len("RESULT "):]) if line else {}
    result.update({"wall_s": wall, "cpu_s": cpu, "peak_rss_mb": usage.ru_maxrss / 1024,
                   "other_cpu_cores": max(0.0, busy - cpu) / wall if wall else 0.0})
    task = next((x for x in lines if x.startswith("TASK ")), None)
    if task:  # a task forked from a warm worker: its own figures, the worker's start apart
        result.update({f"worker_{k}": result[k] for k in ("wall_s", "cpu_s", "peak_rss_mb")})
        result.update(json.loads(task[len("TASK "):]))
    return result


def _command_result(text: str) -> dict:
    """The figures of ``batch-score --json``'s result."""
    res = json.loads(text)
    return {"rows": res["rows_read"], "rows_scored": res["rows_scored"],
            "rows_rejected": res["rows_rejected"], "reasons": res["reject_reasons"],
            "call_s": res["seconds"]}


def _mlflow_predictions(path: Path) -> int:
    """How many predictions ``mlflow models predict`` wrote (its JSON, counted by commas)."""
    count, seen = 0, False
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 24), b""):
            count += block.count(b",")
            seen = seen or bool(block.strip())
    return count + 1 if seen else 0


def competitor(name: str, size: int, files: dict, ctx: dict) -> dict:
    py, env, logdir = sys.executable, ctx["env"], ctx["work"] / "logs"
    parquet, csv = files[size]
    task = ["task"] if name.endswith("_task") else []  # forked from a warm worker (child_task)
    if name == "ours_task":
        return run_child(name, [py, __file__, "--child", *task, "ours", str(parquet),
                                str(ctx["chunk_rows"])], env, logdir)
    if name.startswith("ours"):  # the command a shell, cron or a container runs
        source = csv if name == "ours_csv" else parquet
        return run_child(name, [py, "-m", "pipeline_tasks", "batch-score", MODEL, str(source),
                                "--start", SCORE_INTERVAL[0], "--end", SCORE_INTERVAL[1],
                                "--chunk-rows", str(ctx["chunk_rows"]), "--run-id", "bench",
                                "--json"], env, logdir, parse=_command_result)
    model_uri = f"models:/{MODEL}/{ctx['version']}"
    out = ctx["work"] / "out" / f"{name}.{'json' if name == 'mlflow_cli' else 'parquet'}"
    out.parent.mkdir(exist_ok=True)
    out.unlink(missing_ok=True)
    if name == "mlflow_cli":
        mlflow = str(Path(sys.executable).with_name("mlflow"))
        result = run_child(name, [mlflow, "models", "predict", "-m", model_uri, "-i", str(csv),
                                  "-o", str(out), "--content-type", "csv", "--env-manager",
                                  "local"], env, logdir)
        result["rows"] = size
        result["rows_scored"] = _mlflow_predictions(out)
    else:
        result = run_child(name, [py, __file__, "--child", *task, "script", str(parquet),
                                  model_uri, str(out)], env, logdir)
    out.unlink(missing_ok=True)
    return result


def combine(runs: list[dict]) -> dict:
    out = dict(runs[-1])
    for key in ("wall_s", "cpu_s", "peak_rss_mb", "other_cpu_cores", "call_s", "import_s",
                "read_s", "load_s", "predict_s", "write_s"):
        values = [r[key] for r in runs if key in r]
        if values:
            out[key] = statistics.median(values)
    out["wall_rounds"] = [round(r["wall_s"], 2) for r in runs]
    out["rows_per_s"] = out["rows"] / out["wall_s"]
    if "call_s" in out:
        out["call_rows_per_s"] = out["rows"] / out["call_s"]
    return out


# --------------------------------------------------------------------------- parent: report

def _ratio(value: float, base: dict | None, key: str) -> str:
    return f"{value / base[key]:>9.2f}" if base else f"{'-':>9}"


def report_size(size: int, rounds: int, res: dict) -> None:
    base = res.get("mlflow_cli")
    names = [n for n in COMPETITORS if n in res]
    print(f"\n{size:,} rows, {rounds} round(s), medians (whole process: spawn to exit)")
    print(f"{'competitor':<24}{'wall s':>8}{'rows/s':>11}{'x mlflow':>9}{'peak MB':>9}"
          f"{'x mlflow':>9}{'cpu s':>8}{'scored':>12}  notes")
    for name in names:
        r = res[name]
        if name.startswith("ours"):
            note = (f"in score_interval {r['call_s']:.1f} s = {r['call_rows_per_s']:,.0f} rows/s;"
                    f" {r['rows_rejected']:,} rejected")
        elif name.startswith("script"):
            note = (f"read {r['read_s']:.1f} s, load {r['load_s']:.1f} s, predict "
                    f"{r['predict_s']:.1f} s, write {r['write_s']:.1f} s")
        else:
            note = ""
        print(f"{LABELS[name]:<24}{r['wall_s']:>8.1f}{r['rows_per_s']:>11,.0f}"
              f"{_ratio(r['rows_per_s'], base, 'rows_per_s')}{r['peak_rss_mb']:>9.0f}"
              f"{_ratio(r['peak_rss_mb'], base, 'peak_rss_mb')}{r['cpu_s']:>8.1f}"
              f"{r['rows_scored']:>12,}  {note}")
    print("wall s per round: " + "; ".join(f"{LABELS[n]} {res[n]['wall_rounds']}"
                                            for n in names))
    busiest = max(res[n]["other_cpu_cores"] for n in names)
    if busiest > 0.25:
        print(f"WARNING: other processes kept up to {busiest:.2f} cores busy during a "
              f"measurement: wall times are noisy (cpu s is steadier)")


def report_goals(results: dict) -> dict:
    goals = {}
    sizes = sorted(int(s) for s in results["sizes"])
    for size in sizes:
        res = results["sizes"][str(size)]
        for name in ("ours_parquet", "ours_csv", "ours_task"):
            if name not in res or "mlflow_cli" not in res:
                continue
            ratio = res[name]["rows_per_s"] / res["mlflow_cli"]["rows_per_s"]
            goals[f"{size:,} rows, {LABELS[name]}: rows/s >= {GOAL_SPEEDUP:g}x mlflow models "
                  f"predict (got {ratio:.2f}x)"] = ratio >= GOAL_SPEEDUP
    if len(sizes) >= 2:
        small, large = (results["sizes"][str(s)] for s in (sizes[0], sizes[-1]))
        print(f"\npeak RSS at {sizes[-1]:,} rows / at {sizes[0]:,} rows:")
        for name in [n for n in COMPETITORS if n in small and n in large]:
            growth = large[name]["peak_rss_mb"] / small[name]["peak_rss_mb"]
            print(f"  {LABELS[name]:<24}{small[name]['peak_rss_mb']:>8.0f} MB ->"
                  f"{large[name]['peak_rss_mb']:>8.0f} MB  x{growth:.2f}")
            if name.startswith("ours"):
                goals[f"{LABELS[name]}: peak RSS at {sizes[-1]:,} within {GOAL_MEMORY_GROWTH:g}x "
                      f"of that at {sizes[0]:,} (got x{growth:.2f})"] = \
                    growth <= GOAL_MEMORY_GROWTH
    print("\ngoals (informational):")
    for goal, ok in goals.items():
        print(f"  {'PASS' if ok else 'MISS'}  {goal}")
    return goals


def report_sweep(size: int, sweep: dict, default_chunk: int) -> None:
    print(f"\nchunk sizes, ours on {size:,} rows (1 run each; {default_chunk:,} is the default)")
    print(f"{'chunk rows':>12}{'format':>9}{'wall s':>8}{'call s':>8}{'cpu s':>8}{'rows/s':>11}"
          f"{'call rows/s':>13}{'peak MB':>9}")
    for chunk in sorted(sweep, key=int):
        for fmt, r in sweep[chunk].items():
            print(f"{int(chunk):>12,}{fmt:>9}{r['wall_s']:>8.1f}{r['call_s']:>8.1f}"
                  f"{r['cpu_s']:>8.1f}"
                  f"{r['rows'] / r['wall_s']:>11,.0f}{r['rows'] / r['call_s']:>13,.0f}"
                  f"{r['peak_rss_mb']:>9.0f}")


def report_profile(profiles: dict) -> None:
    for label, p in profiles.items():
        chunks = max(1, p["calls"].get("chunk total (score)", 1))
        print(f"\nwhere ours spends its time: {label}, {p['rows']:,} rows in {chunks} chunks of "
              f"{p['chunk_rows']:,} on {p.get('threads', 1)} thread(s), {p.get('path', '?')} "
              f"path; score_interval {p['total_s']:.2f} s wall (wrapped pieces, inclusive; "
              f"indented ones are inside 'chunk total' and summed over the threads)")
        print(f"{'piece':<44}{'s':>8}{'share':>8}{'ms/chunk':>10}{'cpu s':>8}")
        inside = ("to_frame", "sort_rows", "event times", "row ids", "scores table",
                  "prediction-log table", "rejects table", "predict_proba")
        for piece, sec in sorted(p["seconds"].items(), key=lambda kv: -kv[1]):
            indent = "  " if piece.startswith(inside) else ""
            print(f"{indent + piece:<44}{sec:>8.2f}{sec / p['total_s']:>8.1%}"
                  f"{1000 * sec / chunks:>10.1f}{p.get('cpu', {}).get(piece, 0.0):>8.2f}")
        print("(the chunks overlap each other and the reading and writing: the shares are of "
              "the wall time and add up to more than 100%)")


# --------------------------------------------------------------------------- main

def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        return child_main(sys.argv[2:])
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000000,10000000", help="row counts, comma-separated")
    parser.add_argument("--rounds-small", type=int, default=3,
                        help="rounds at the sizes below 5M rows")
    parser.add_argument("--rounds-large", type=int, default=1, help="rounds at 5M rows and more")
    parser.add_argument("--chunk-rows", type=int, default=0,
                        help="our chunk size (default: config.batch_chunk_rows)")
    parser.add_argument("--row-group-rows", type=int, default=1024 * 1024,
                        help="rows per Parquet row group of the generated files")
    parser.add_argument("--sweep", default="",
                        help="other chunk sizes to run ours at, on the smallest size")
    parser.add_argument("--profile", action="store_true",
                        help="time the pieces of ours per chunk on the smallest size")
    parser.add_argument("--competitors", default=",".join(COMPETITORS),
                        help="which to run, comma-separated (ratios need mlflow_cli): "
                             + ", ".join(COMPETITORS))
    parser.add_argument("--work", help="folder for the home, the data and the logs (kept and "
                                       "reused); default: a temp folder, removed at the end")
    args = parser.parse_args()
    sizes = sorted(int(s) for s in args.sizes.split(",") if s.strip())
    competitors = [n for n in COMPETITORS if n in {c.strip() for c in args.competitors.split(",")}]
    if not competitors:
        raise SystemExit(f"--competitors: name one or more of {', '.join(COMPETITORS)}")
    work = Path(args.work or tempfile.mkdtemp(prefix="mlops-bench-batch-")).resolve()
    (work / "data").mkdir(parents=True, exist_ok=True)
    need = sum(s * 125 for s in sizes) * 1.5  # the CSV (~105 B/row), Parquet and the outputs
    free = shutil.disk_usage(work).free
    if free < need:
        raise SystemExit(f"{work}: {free / 1e9:.1f} GB free, about {need / 1e9:.1f} GB needed")
    # this process stays small (no pandas, no mlflow): a child's ru_maxrss starts from the RSS
    # of the process it was forked from, so the setup runs in a child of its own
    env = {**os.environ, "MLOPS_HOME": str(work / "home"), "DO_NOT_TRACK": "true",
           "MLOPS_ALLOWED_SOURCE_ROOTS": str(work / "data"), "PYTHONPATH": str(ROOT),
           "TQDM_DISABLE": "1"}
    print(f"work folder {work} ({free / 1e9:.0f} GB free); {os.cpu_count()} cpus", flush=True)
    setup_file = work / "setup.json"
    subprocess.run([sys.executable, __file__, "--child", "setup", str(work), args.sizes,
                    str(args.row_group_rows), str(setup_file)], env=env, check=True)
    setup = json.loads(setup_file.read_text())
    version, inputs = setup["version"], setup["inputs"]
    env.update({"MLFLOW_TRACKING_URI": setup["tracking_uri"],
                "MLFLOW_REGISTRY_URI": setup["registry_uri"]})
    files = {int(k): tuple(Path(p) for p in v) for k, v in setup["files"].items()}
    chunk_rows = args.chunk_rows or setup["chunk_rows"]
    print(f"{MODEL} v{version}: {len(inputs)} inputs; our chunk_rows {chunk_rows:,}", flush=True)
    ctx = {"env": env, "work": work, "version": version, "chunk_rows": chunk_rows}
    results: dict = {"model": f"{MODEL} v{version}", "chunk_rows": chunk_rows,
                     "row_group_rows": args.row_group_rows, "cpus": os.cpu_count(),
                     "sizes": {}, "runs": {}}
    for size in sizes:
        rounds = args.rounds_small if size < 5_000_000 else args.rounds_large
        runs: dict[str, list[dict]] = {n: [] for n in competitors}
        for i in range(rounds):
            for name in competitors:
                print(f"{size:,} rows, round {i + 1}/{rounds}: {LABELS[name]} ...", end=" ",
                      flush=True)
                r = competitor(name, size, files, ctx)
                print(f"{r['wall_s']:.1f} s, peak {r['peak_rss_mb']:.0f} MB", flush=True)
                runs[name].append(r)
        results["runs"][str(size)] = runs
        results["sizes"][str(size)] = {n: combine(runs[n]) for n in competitors}
    if args.sweep:
        sweep: dict = {}
        for chunk in sorted({int(c) for c in args.sweep.split(",") if c.strip()} | {chunk_rows}):
            sweep[str(chunk)] = {}
            for fmt, path in zip(("parquet", "csv"), files[sizes[0]], strict=True):
                print(f"sweep: chunk {chunk:,}, {fmt} ...", end=" ", flush=True)
                r = run_child(f"sweep_{chunk}_{fmt}", [sys.executable, __file__, "--child",
                                                       "ours", str(path), str(chunk)],
                              env, work / "logs")
                print(f"{r['wall_s']:.1f} s, peak {r['peak_rss_mb']:.0f} MB", flush=True)
                sweep[str(chunk)][fmt] = r
        results["sweep"] = {"rows": sizes[0], "runs": sweep}
    if args.profile:
        profiles = {}
        for fmt, path in zip(("Parquet", "CSV"), files[sizes[0]], strict=True):
            print(f"profile: {fmt} ...", flush=True)
            profiles[fmt] = run_child(f"profile_{fmt}", [sys.executable, __file__, "--child",
                                                         "profile", str(path), str(chunk_rows)],
                                      env, work / "logs")
        results["profile"] = profiles

    print("\n" + "=" * 110)
    print(f"batch scoring of {MODEL} v{version} ({len(inputs)} inputs: the flights features, "
          f"repeated); {os.cpu_count()} cpus; ours: chunk_rows {chunk_rows:,}, Parquet row "
          f"groups of {args.row_group_rows:,}")
    for size in sizes:
        rounds = args.rounds_small if size < 5_000_000 else args.rounds_large
        report_size(size, rounds, results["sizes"][str(size)])
    print("(rows/s: rows of the file / wall time of the whole process, Python start, imports and "
          "model load included; 'as task': of the task process forked from a worker that "
          "imported the libraries once, as Airflow runs a task, fork to exit; peak MB: ru_maxrss "
          "of the process tree; 'scored': rows given a prediction, ours rejects the rows its "
          "contract refuses)")
    results["goals"] = report_goals(results)
    if args.sweep:
        report_sweep(sizes[0], results["sweep"]["runs"], chunk_rows)
    if args.profile:
        report_profile(results["profile"])
    out = ROOT / "benchmarks" / "results"
    out.mkdir(exist_ok=True)
    path = out / f"{datetime.now(UTC).strftime('%Y%m%dT%H%M%SZ')}-batch.json"
    path.write_text(json.dumps(results, indent=2, default=str))
    print(f"\nresults: {path.relative_to(ROOT)}")
    if not args.work:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
