"""Benchmark: how long parsing the DAG files takes, this checkout vs another one, side by side.

Each measurement is a fresh interpreter (as a DAG processor's parse of a changed file is): it
imports ``airflow.sdk`` first (not counted: the same for any checkout), then times Airflow's
``DagBag`` over the checkout's ``dags/`` with its ``plugins/`` and library on the path. The two
checkouts alternate (A B A B ...) so a drift in the machine's speed hits both alike; the medians and
their ratio are printed.

    .venv/bin/python benchmarks/bench_dag_parse.py                       # this checkout alone
    git worktree add /tmp/base <ref>
    .venv/bin/python benchmarks/bench_dag_parse.py --vs /tmp/base        # vs another checkout

Not a test: never asserts times.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

PROBE = r"""
import json, os, sys, time
root = os.environ["CHECKOUT"]
sys.path[:0] = [root, os.path.join(root, "plugins"), os.path.join(root, "dags")]
import airflow.sdk  # Airflow itself: the same cost for any checkout, not counted
from airflow.dag_processing.dagbag import DagBag
start = time.perf_counter()
bag = DagBag(dag_folder=os.path.join(root, "dags"), safe_mode=False)
elapsed = time.perf_counter() - start
assert not bag.import_errors, bag.import_errors
print(json.dumps({"seconds": elapsed, "dags": len(bag.dags),
                  "modules": sorted({m.split('.')[0] for m in sys.modules})}))
"""


def parse_once(checkout: Path, home: Path) -> dict:
    env = dict(os.environ, CHECKOUT=str(checkout), AIRFLOW_HOME=str(home / "airflow"),
               MLOPS_HOME=str(home), PYTHONPATH=str(checkout))
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True,
                         check=True, timeout=300)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vs", type=Path, help="another checkout to compare with")
    parser.add_argument("--rounds", type=int, default=9, help="parses per checkout")
    args = parser.parse_args()
    checkouts = {"this": ROOT, **({"other": args.vs.resolve()} if args.vs else {})}
    times: dict[str, list[float]] = {name: [] for name in checkouts}
    with tempfile.TemporaryDirectory() as tmp:
        for name, path in checkouts.items():  # warm-up (page cache, .pyc)
            first = parse_once(path, Path(tmp) / name)
            print(f"{name:>5}: {path} ({first['dags']} DAGs)")
        for _ in range(args.rounds):
            for name, path in checkouts.items():
                times[name].append(parse_once(path, Path(tmp) / name)["seconds"])
    for name, values in times.items():
        print(f"{name:>5}: median {statistics.median(values) * 1000:7.1f} ms  "
              f"(min {min(values) * 1000:.1f}, max {max(values) * 1000:.1f}, n={len(values)})")
    if args.vs:
        ratios = [a / b for a, b in zip(times["this"], times["other"], strict=True)]
        print(f"ratio this/other: median {statistics.median(ratios):.2f} "
              f"(min {min(ratios):.2f}, max {max(ratios):.2f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
