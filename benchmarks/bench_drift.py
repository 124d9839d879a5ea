"""Benchmark: our drift check vs Evidently's default preset on the full data, side by side.

Data (issue 4, section 5): 1M reference and 1M current rows, 20 columns (12 numeric, 8
categorical) from ``drift_frames`` of ``tests/pipeline_tasks/synthetic_data.py`` (the generator of
the calibration tests): three numeric columns shifted by 0.3 sigma and two categorical columns
with a changed mix (5 of 20: share 0.25, drift at the default threshold).

- ours: ``check_drift(reference, current, report_uri=...)`` as the DAG calls it (config defaults:
  a seeded ``drift_sample_rows`` sample of each side, the full-data default tests pinned, HTML
  report with ``DataDriftPreset`` plus ``DataSummaryPreset`` written atomically);
- Evidently's default: the same report made the plain way, ``Report([DataDriftPreset(),
  DataSummaryPreset()])`` on every row, then ``save_html``.

Each side runs alone in its own subprocess, which builds the same data from the same seed, imports
Evidently before its clock starts, and reports its wall and CPU time for the check, its peak RSS
(``VmHWM``: data, libraries and the check together) and its per-column verdicts. The baseline's
verdicts are read with the rule of the field notes (p-value tests: drift when the value is below
the threshold; distances: at or above), independently of the ValueDrift tests ours reads.

    .venv/bin/python benchmarks/bench_drift.py                  # about 4 minutes here
    ... --rows 200000                                           # smaller data, quicker
    ... --rounds 2                                              # ABBA order, medians

Figures go to stdout and to benchmarks/results/<UTC time>-drift.json. Not a test: never asserts
times; the goals are printed as PASS/MISS for information and the exit code is 0.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# The data generator is a test helper (tests/pipeline_tasks/synthetic_data.py), not library code:
# its folder goes on sys.path here, so the child processes (this file again) import it too. Never
# tests/ itself, whose pipeline_tasks/ folder would shadow the library.
sys.path.append(str(ROOT / "tests" / "pipeline_tasks"))
NUMERIC, CATEGORICAL = 12, 8
SHIFTED = ("num_00", "num_03", "num_07")
MIXED = ("cat_01", "cat_05")
GOAL_TIME_RATIO, GOAL_PEAK_MB = 0.15, 1024


# --------------------------------------------------------------------------- one side (child)

def _busy_jiffies() -> int:
    """Busy CPU time of the whole machine (all processes), in clock ticks."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in fields[:8])
    return user + nice + system + irq + softirq + steal


def _peak_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_side(side: str, rows: int, seed: int, out_dir: Path) -> dict:
    """Generate the data, run one side's check, return its figures and verdicts."""
    started = time.perf_counter()
    import evidently.presets  # noqa: F401  (imported before the clock, on both sides)
    from synthetic_data import drift_frames

    import_s = time.perf_counter() - started
    started = time.perf_counter()
    reference, current = drift_frames(rows, rows, numeric=NUMERIC, categorical=CATEGORICAL,
                                      shifted=SHIFTED, mixed=MIXED, seed=seed)
    generate_s = time.perf_counter() - started
    html = out_dir / f"{side}.html"
    cpu0, busy0, wall0 = time.process_time(), _busy_jiffies(), time.perf_counter()
    if side == "ours":
        verdicts, extra = _ours(reference, current, html)
    else:
        verdicts, extra = _evidently_default(reference, current, html)
    wall = time.perf_counter() - wall0
    cpu = time.process_time() - cpu0
    machine = (_busy_jiffies() - busy0) / os.sysconf("SC_CLK_TCK")
    return {"side": side, "seconds": wall, "cpu_seconds": cpu, "import_s": import_s,
            "generate_s": generate_s, "peak_rss_mb": _peak_rss_mb(),
            "other_cpu_cores": max(0.0, machine - cpu) / wall, "html_bytes": html.stat().st_size,
            "verdicts": verdicts, **extra}


def _ours(reference, current, html: Path) -> tuple[dict, dict]:
    from pipeline_tasks.monitoring.drift import check_drift

    result = check_drift(reference, current, report_uri=html.as_uri())
    verdicts = {c: {"method": col.method, "score": col.score, "threshold": col.threshold,
                    "drifted": col.drifted} for c, col in result.columns.items()}
    return verdicts, {"rows_compared": result.rows_compared_current,
                      "share_threshold": result.share_threshold, "status": result.status}


def _evidently_default(reference, current, html: Path) -> tuple[dict, dict]:
    from evidently import DataDefinition, Dataset, Report
    from evidently.legacy.calculations.stattests.registry import _registered_stat_tests
    from evidently.presets import DataDriftPreset, DataSummaryPreset

    definition = DataDefinition(
        numerical_columns=[c for c in reference.columns if c.startswith("num_")],
        categorical_columns=[c for c in reference.columns if c.startswith("cat_")])
    snapshot = Report([DataDriftPreset(), DataSummaryPreset()]).run(
        current_data=Dataset.from_pandas(current, data_definition=definition),
        reference_data=Dataset.from_pandas(reference, data_definition=definition))
    snapshot.save_html(str(html))
    by_display = {t.display_name: name for name, types in _registered_stat_tests.items()
                  for t in types.values()}
    verdicts = {}
    for metric in snapshot.dict()["metrics"]:
        cfg = metric["config"]
        if not cfg["type"].endswith(":ValueDrift"):
            continue
        value, threshold, method = float(metric["value"]), float(cfg["threshold"]), cfg["method"]
        drifted = value < threshold if "p_value" in method else value >= threshold
        verdicts[cfg["column"]] = {"method": by_display.get(method, method), "score": value,
                                   "threshold": threshold, "drifted": drifted}
    return verdicts, {"rows_compared": len(current)}


def child_main(argv: list[str]) -> int:
    side, rows, seed, out_dir = argv[0], int(argv[1]), int(argv[2]), Path(argv[3])
    result = run_side(side, rows, seed, out_dir)
    print("RESULT " + json.dumps(result))
    return 0


# --------------------------------------------------------------------------- parent

def measure(side: str, rows: int, seed: int, out_dir: Path, home: Path) -> dict:
    env = {**os.environ, "MLOPS_HOME": str(home), "DO_NOT_TRACK": "true",
           "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, __file__, "--side", side, str(rows), str(seed),
                           str(out_dir)], env=env, capture_output=True, text=True, check=False)
    line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
    if proc.returncode != 0 or line is None:
        sys.stderr.write(proc.stderr[-4000:])
        raise SystemExit(f"{side} failed (exit {proc.returncode})")
    return json.loads(line[len("RESULT "):])


def combine(runs: list[dict]) -> dict:
    """Medians over rounds; verdicts of the first round (every round sees the same data)."""
    out = dict(runs[0])
    for key in ("seconds", "cpu_seconds", "import_s", "generate_s", "peak_rss_mb",
                "other_cpu_cores"):
        out[key] = statistics.median(r[key] for r in runs)
    out["seconds_rounds"] = [r["seconds"] for r in runs]
    return out


def report(results: dict) -> None:
    ours, base = results["ours"], results["evidently"]
    columns = list(base["verdicts"])
    agree_verdict = [c for c in columns
                     if ours["verdicts"][c]["drifted"] == base["verdicts"][c]["drifted"]]
    agree_method = [c for c in columns if ours["verdicts"][c]["method"]
                    == base["verdicts"][c]["method"]
                    and ours["verdicts"][c]["threshold"] == base["verdicts"][c]["threshold"]]
    drifted = {side: [c for c in columns if results[side]["verdicts"][c]["drifted"]]
               for side in ("ours", "evidently")}
    share = {side: len(drifted[side]) / len(columns) for side in drifted}
    threshold = ours["share_threshold"]
    time_ratio = ours["seconds"] / base["seconds"]
    cpu_ratio = ours["cpu_seconds"] / base["cpu_seconds"]
    results["agreement"] = {"columns": len(columns), "verdicts_agree": len(agree_verdict),
                            "methods_agree": len(agree_method), "drifted": drifted}
    print("\n" + "=" * 96)
    print(f"{results['rows']:,} reference vs {results['rows']:,} current rows, {len(columns)} "
          f"columns ({NUMERIC} numeric, {CATEGORICAL} categorical); planted drift: "
          f"{', '.join(SHIFTED)} (+0.3 sigma), {', '.join(MIXED)} (category mix); "
          f"{results['rounds']} round(s), medians; {os.cpu_count()} cpus")
    print(f"ours: check_drift with the config defaults (sample {ours['rows_compared']:,} rows "
          f"per side, HTML report); Evidently: Report([DataDriftPreset(), DataSummaryPreset()]) "
          f"on all rows + save_html")
    print(f"\n{'side':<20}{'check s':>9}{'cpu s':>8}{'peak MB':>9}{'import s':>10}"
          f"{'other cpu':>10}{'html MB':>9}  drifted columns")
    for side, label in (("ours", "ours"), ("evidently", "evidently default")):
        r = results[side]
        print(f"{label:<20}{r['seconds']:>9.1f}{r['cpu_seconds']:>8.1f}{r['peak_rss_mb']:>9.0f}"
              f"{r['import_s']:>10.1f}{r['other_cpu_cores']:>10.2f}"
              f"{r['html_bytes'] / 1e6:>9.1f}  {', '.join(drifted[side]) or '-'}")
    print(f"{'ratio ours/default':<20}{time_ratio:>9.3f}{cpu_ratio:>8.3f}"
          f"{ours['peak_rss_mb'] / base['peak_rss_mb']:>9.2f}")
    print(f"\nper-column verdicts agree: {len(agree_verdict)}/{len(columns)}; same test and "
          f"threshold: {len(agree_method)}/{len(columns)}; drifted share {share['ours']:.2f} vs "
          f"{share['evidently']:.2f} (threshold {threshold:g}: "
          f"{'drift' if share['ours'] >= threshold else 'no drift'} vs "
          f"{'drift' if share['evidently'] >= threshold else 'no drift'})")
    print("(check s: wall time of the check alone, data generation and imports excluded on both "
          "sides; peak MB: VmHWM of the side's process, data included; other cpu: cores busy "
          "with other processes meanwhile)")
    busiest = max(ours["other_cpu_cores"], base["other_cpu_cores"])
    if busiest > 0.25:
        print(f"WARNING: other processes kept {busiest:.2f} cores busy during a measurement; "
              f"wall times are noisy, the cpu-time ratio is the steadier figure.")
    goals = {
        f"time <= {GOAL_TIME_RATIO}x Evidently default (got {time_ratio:.3f}x)":
            time_ratio <= GOAL_TIME_RATIO,
        f"peak memory < 1 GB (got {ours['peak_rss_mb']:.0f} MB)":
            ours["peak_rss_mb"] < GOAL_PEAK_MB,
        f"same drifted-column verdicts ({len(agree_verdict)}/{len(columns)})":
            len(agree_verdict) == len(columns),
    }
    results["goals"] = goals
    print("\ngoals (informational):")
    for goal, ok in goals.items():
        print(f"  {'PASS' if ok else 'MISS'}  {goal}")


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--side":
        return child_main(sys.argv[2:])
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows per side")
    parser.add_argument("--seed", type=int, default=0, help="seed of the generated data")
    parser.add_argument("--rounds", type=int, default=1,
                        help="runs per side, alternating order (ABBA); medians are reported")
    parser.add_argument("--keep", help="write the two HTML reports to this folder")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="mlops-bench-drift-"))
    out_dir = Path(args.keep).resolve() if args.keep else work
    out_dir.mkdir(parents=True, exist_ok=True)
    runs: dict[str, list[dict]] = {"ours": [], "evidently": []}
    order = ["ours", "evidently"]
    for i in range(args.rounds):
        for side in (order if i % 2 == 0 else order[::-1]):
            print(f"round {i + 1}: {side} ...", flush=True)
            result = measure(side, args.rows, args.seed, out_dir, work / "home")
            print(f"  {result['seconds']:.1f} s, peak {result['peak_rss_mb']:.0f} MB", flush=True)
            runs[side].append(result)
    results = {"rows": args.rows, "seed": args.seed, "rounds": args.rounds,
               "cpus": os.cpu_count(), "runs": runs,
               "ours": combine(runs["ours"]), "evidently": combine(runs["evidently"])}
    report(results)
    if args.keep:
        print(f"\nreports: {out_dir}/ours.html, {out_dir}/evidently.html")
    out = Path(__file__).resolve().parent / "results"
    out.mkdir(exist_ok=True)
    path = out / f"{datetime.now(UTC).strftime('%Y%m%dT%H%M%SZ')}-drift.json"
    path.write_text(json.dumps(results, indent=2, default=str))
    print(f"\nresults: {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
