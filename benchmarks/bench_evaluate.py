"""Benchmark: the evaluate task with slices and fairness vs the evaluate task before they existed.

The goal (the slices issue): evaluation with slices on the demo costs at most 1.5x the evaluate
task of the checkout before slices were added. One shared ``MLOPS_HOME`` is set up once with this
checkout: the demo feed landed (2013-02-01 to 2013-03-03), a first training run (interval ending
2013-03-02, 14-day window) registered as champion (forced, so there always is one), and a second
run trained up to its ``train`` stage (interval ending 2013-03-03): its ``TrainResult`` is the
candidate. The second run is not evaluated or registered in the set-up, so the champion stays the
first run's version and the measured call compares two different models, as a real run does.

Each measurement is a fresh interpreter with ``PYTHONPATH`` at the checkout. It imports
``pipeline_tasks.ops.preload`` first (what the Airflow forkserver has loaded before a task
starts) and ``pipeline_tasks.stages``; neither is counted. Then it times ``stages.evaluate(run,
trained)`` with the ``TrainResult`` rebuilt by ``from_xcom``: exactly the evaluate task, called
the way each checkout's own stage calls ``evaluate_candidate``. That first call is the figure (it
includes what the stage imports lazily, e.g. Fairlearn, as the task does); a second call in the
same process is printed beside it ("2nd call"; not faster: the models are loaded again).

Variants, alternating round by round (A B C A B C ...) so a drift in the machine's speed hits all:

- ``before``: the other checkout (``--before``), no slices, no fairness;
- ``slices``: this checkout, the demo's default slices (carrier, origin; paired bootstrap);
- ``slices+fairness``: this checkout with the trigger param ``sensitive_columns=origin``.

Then one cProfiled first call of each variant of this checkout: the top 10 functions of
``slices`` by cumulative time, and both calls' time by part of the stage (``PARTS``).

    git worktree add /tmp/before <the commit before "Fairness and slices, step 1">
    .venv/bin/python benchmarks/bench_evaluate.py --before /tmp/before      # or make bench-evaluate
    ... --keep-home /tmp/bench-eval    # reuse a prepared home (the set-up takes under a minute)

Not a test: never asserts times.
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
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DAG_ID = "ml_training_pipeline"
MODEL = "flights_is_late"
WINDOW_DAYS = 14
FEED = (date(2013, 2, 1), date(2013, 3, 3))
CHAMPION_RUN = ("bench_evaluate_champion", "2013-03-01T00:00:00+00:00", "2013-03-02T00:00:00+00:00")
CANDIDATE_RUN = ("bench_evaluate_candidate", "2013-03-02T00:00:00+00:00",
                 "2013-03-03T00:00:00+00:00")
GOAL = 1.5
TRAINED_FILE = "bench_evaluate_trained.json"

PROBE = r"""
import json, os, sys, time
t0 = time.perf_counter()
import pipeline_tasks.ops.preload  # what the forkserver holds before a task starts: not counted
from pipeline_tasks import stages
from pipeline_tasks.model.train import TrainResult
imports = time.perf_counter() - t0
spec = json.loads(os.environ["BENCH_SPEC"])
trained = TrainResult.from_xcom(json.loads(open(spec["trained"]).read()))
run = stages.RunSpec(dag_id=spec["dag_id"], run_id=spec["run_id"],
                     interval_start=spec["interval"][0], interval_end=spec["interval"][1],
                     params=spec["params"])
profile = None
if spec.get("profile"):
    import cProfile, io, pstats
    profiler = cProfile.Profile()
    profiler.enable()
start, cpu_start = time.perf_counter(), time.process_time()
decision = stages.evaluate(run, trained)
first, first_cpu = time.perf_counter() - start, time.process_time() - cpu_start
if spec.get("profile"):
    profiler.disable()
    stats = pstats.Stats(profiler)
    text = io.StringIO()
    pstats.Stats(profiler, stream=text).strip_dirs().sort_stats("cumulative").print_stats(
        spec["profile"])
    profile = {"text": text.getvalue(), "functions": [
        {"file": f, "line": line, "name": name, "calls": nc, "cumulative": ct, "own": tt}
        for (f, line, name), (cc, nc, tt, ct, callers) in stats.stats.items()]}
start = time.perf_counter()
stages.evaluate(run, trained)
second = time.perf_counter() - start
print(json.dumps({
    "first": first, "first_cpu": first_cpu, "second": second, "imports": imports,
    "stages": stages.__file__,
    "blessed": decision.blessed, "reason": decision.reason,
    "champion_version": decision.champion_version,
    "candidate": decision.candidate_metrics.get(decision.primary_metric),
    "champion": (decision.champion_metrics or {}).get(decision.primary_metric),
    "slices": len(getattr(decision, "slices", None) or []),
    "gated_slices": sum(bool(s.get("gated")) for s in getattr(decision, "slices", None) or []),
    "fairness": [f["column"] for f in getattr(decision, "fairness", None) or []],
    "profile": profile,
}))
"""


def prepare(home: Path) -> Path:
    """Land the feed, train and register the champion, train the candidate (this checkout, in
    this process); the candidate's ``TrainResult`` goes to a JSON file in ``home``. A home that
    already has that file is reused as it is."""
    trained_file = home / TRAINED_FILE
    if trained_file.exists():
        print(f"reusing the prepared home {home}", flush=True)
        return trained_file
    os.environ["MLOPS_HOME"] = str(home)
    sys.path.insert(0, str(ROOT))
    from pipeline_tasks import stages
    from pipeline_tasks.core.config import load_config
    from pipeline_tasks.model.registry import current_champion
    from pipeline_tasks.ops.demo_data import land_flights_feed

    config = load_config(home=str(home))
    start = time.perf_counter()
    land_flights_feed(config, *FEED)
    run_id, begin, end = CHAMPION_RUN
    first = stages.run_all(stages.RunSpec(
        dag_id=DAG_ID, run_id=run_id, interval_start=begin, interval_end=end,
        params={"training_window_days": WINDOW_DAYS, "force_promote": True,
                "force_reason": "bench_evaluate: the set-up needs a champion"}))
    champion = current_champion(MODEL)
    if champion is None:
        raise SystemExit(f"the set-up registered no champion of {MODEL}: "
                         f"{first['register'].to_dict()}")
    run_id, begin, end = CANDIDATE_RUN
    run = stages.RunSpec(dag_id=DAG_ID, run_id=run_id, interval_start=begin, interval_end=end,
                         params={"training_window_days": WINDOW_DAYS})
    ingested = stages.ingest(run)
    validated = stages.validate(run, ingested)
    versioned = stages.version(run, ingested, validated)
    trained = stages.train(run, ingested, versioned)
    trained_file.write_text(json.dumps(trained.to_dict(), indent=1))
    print(f"set-up {time.perf_counter() - start:.0f} s: champion v{champion}, candidate "
          f"{trained.model_uri} ({trained.n_train:,} training rows, {trained.n_holdout:,} "
          f"holdout rows, {trained.primary_metric} {trained.metrics[trained.primary_metric]:.4f})",
          flush=True)
    return trained_file


def tracking_uri(home: Path) -> str:
    """The MLflow tracking store of ``home`` (this checkout's config; both checkouts agree)."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from pipeline_tasks.core.config import load_config

    return load_config(home=str(home)).mlflow_tracking_uri


def measure(checkout: Path, home: Path, trained: Path, params: dict, profile: int = 0) -> dict:
    """One fresh interpreter on ``checkout``: the evaluate task, timed (see ``PROBE``)."""
    spec = {"trained": str(trained), "dag_id": DAG_ID, "run_id": CANDIDATE_RUN[0],
            "interval": list(CANDIDATE_RUN[1:]), "params": params, "profile": profile}
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLOPS_", "MLFLOW_"))}
    env.update(MLOPS_HOME=str(home), PYTHONPATH=str(checkout), BENCH_SPEC=json.dumps(spec),
               # as an Airflow task's environment has it (ops.airflow_home): the stage reads the
               # candidate's signature before evaluate_candidate configures MLflow itself
               MLFLOW_TRACKING_URI=tracking_uri(home), GX_ANALYTICS_ENABLED="false",
               DO_NOT_TRACK="true", MLFLOW_DISABLE_TELEMETRY="true")
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True,
                         timeout=900, check=False, cwd=checkout)  # "-c" puts the cwd first
    if out.returncode:
        raise SystemExit(f"the probe failed on {checkout}:\n{out.stderr[-4000:]}")
    result = json.loads(out.stdout.strip().splitlines()[-1])
    if not result["stages"].startswith(str(checkout)):
        raise SystemExit(f"the probe for {checkout} imported {result['stages']}")
    return result


#: The evaluate stage's parts (function names of this checkout's pipeline_tasks) and what they do.
PARTS = (("read_parquet", "holdout read"), ("load_verified", "model loads (candidate, champion)"),
         ("_contract_change", "contract comparison"),
         ("_score_champion", "champion scored (its load included)"),
         ("_output", "predictions (candidate, champion)"), ("_metrics", "overall metrics"),
         ("evaluate_slices", "slices"), ("many", "  bootstrap metric (rankdata)"),
         ("_fairness", "fairness"), ("_metric_frame", "  Fairlearn MetricFrame"),
         ("demographic_parity_difference", "  demographic parity difference"),
         ("equalized_odds_difference", "  equalized odds difference"))


def cumulative(profile: dict, name: str) -> float | None:
    """The cumulative seconds of function ``name`` (of pipeline_tasks, else any) in a profile."""
    found = [f for f in profile["functions"] if f["name"] == name]
    ours = [f for f in found if "pipeline_tasks" in f["file"]] or found
    return max(f["cumulative"] for f in ours) if ours else None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", type=Path, help="the checkout before slices (a worktree)")
    parser.add_argument("--rounds", type=int, default=7, help="fresh interpreters per variant")
    parser.add_argument("--keep-home", type=Path, help="prepare (or reuse) this MLOPS_HOME")
    parser.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    args = parser.parse_args()

    home = (args.keep_home or Path(tempfile.mkdtemp(prefix="mlops-bench-eval-"))).resolve()
    home.mkdir(parents=True, exist_ok=True)
    try:
        return run(args, home)
    finally:
        if not args.keep_home:
            shutil.rmtree(home, ignore_errors=True)


def run(args: argparse.Namespace, home: Path) -> int:
    print(f"MLOPS_HOME={home}", flush=True)
    trained = prepare(home)

    variants: dict[str, tuple[Path, dict]] = {}
    if args.before:
        variants["before"] = (args.before.resolve(), {})
    variants["slices"] = (ROOT, {})
    variants["slices+fairness"] = (ROOT, {"sensitive_columns": "origin"})
    runs: dict[str, list[dict]] = {name: [] for name in variants}
    for name, (checkout, params) in variants.items():  # warm-up: page cache, .pyc files
        first = measure(checkout, home, trained, params)
        print(f"{name:>16}: {checkout}  (champion v{first['champion_version']}, candidate "
              f"{first['candidate']:.4f} vs champion {first['champion'] or float('nan'):.4f}, "
              f"blessed {first['blessed']}, {first['slices']} slices ({first['gated_slices']} "
              f"gated), fairness over {first['fairness'] or 'nothing'})", flush=True)
    for round_no in range(args.rounds):
        for name, (checkout, params) in variants.items():
            runs[name].append(measure(checkout, home, trained, params))
        print(f"round {round_no + 1}/{args.rounds}: " + ", ".join(
            f"{name} {runs[name][-1]['first']:.2f} s" for name in variants), flush=True)

    medians = {name: {key: statistics.median(r[key] for r in rs) for key in ("first", "second")}
               for name, rs in runs.items()}
    base = "before" if "before" in runs else None
    print(f"\nthe evaluate task on the demo ({args.rounds} fresh interpreters per variant, "
          "medians; 'ratio' is per round, vs before)")
    print(f"{'variant':<18}{'task s':>9}{'min':>7}{'max':>7}{'ratio':>8}{'min ratio':>11}"
          f"{'2nd call s':>12}{'ratio':>8}")
    ratios: dict[str, float] = {}
    for name, rs in runs.items():
        firsts = [r["first"] for r in rs]
        ratio = low = warm = ""
        if base:
            low = f"{min(firsts) / min(r['first'] for r in runs[base]):.2f}"
            per_round = [a["first"] / b["first"] for a, b in zip(rs, runs[base], strict=True)]
            ratios[name] = statistics.median(per_round)
            ratio = f"{ratios[name]:.2f}"
            warm = f"{medians[name]['second'] / medians[base]['second']:.2f}"
        print(f"{name:<18}{medians[name]['first']:>9.2f}{min(firsts):>7.2f}{max(firsts):>7.2f}"
              f"{ratio:>8}{low:>11}{medians[name]['second']:>12.2f}{warm:>8}")
    if base:  # CPU time of the task's process: robust to other jobs on a shared machine
        cpu = {name: statistics.median(r["first_cpu"] for r in rs) for name, rs in runs.items()}
        print("cpu s of the task (process time, median): " + ", ".join(
            f"{name} {cpu[name]:.2f} ({cpu[name] / cpu[base]:.2f}x)" for name in runs))
        verdict = "within" if ratios["slices"] <= GOAL else "OVER"
        lows = {name: min(r["first"] for r in rs) for name, rs in runs.items()}
        print(f"goal: slices <= {GOAL}x before: {ratios['slices']:.2f}x (median of the rounds' "
              f"ratios), {verdict} the goal; {lows['slices'] / lows[base]:.2f}x of the fastest "
              f"runs (+{lows['slices'] - lows[base]:.2f} s)")

    profiles = {name: measure(checkout, home, trained, params, profile=10)
                for name, (checkout, params) in variants.items() if checkout == ROOT}
    text = profiles["slices"]["profile"]["text"]
    print("\none profiled evaluate task (slices, this checkout), top 10 by cumulative time:")
    print(text[text.find("   ncalls"):].rstrip())
    print("\nwhere the time goes (cumulative s of one profiled first call of each variant)")
    print(f"{'part':<48}" + "".join(f"{name:>17}" for name in profiles))
    breakdown = {}
    for name, label in (*PARTS, ("", "the whole call (under the profiler)")):
        row = {v: (cumulative(p["profile"], name) if name else p["first"])
               for v, p in profiles.items()}
        breakdown[label.strip()] = row
        print(f"{label:<48}" + "".join(f"{'-' if x is None else f'{x:.3f}':>17}"
                                       for x in row.values()))

    if args.json:
        args.json.write_text(json.dumps({
            "home": str(home), "rounds": args.rounds, "medians": medians, "ratios": ratios,
            "runs": {name: [{k: v for k, v in r.items() if k != "profile"} for r in rs]
                     for name, rs in runs.items()},
            "breakdown": breakdown,
        }, indent=1))
        print(f"\nfigures written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
