"""Command line: ``python -m pipeline_tasks {config,airflow,land-demo-data,demo}``."""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import time
from datetime import UTC, date, datetime, timedelta

from pipeline_tasks.config import load_config

DAG_ID = "ml_training_pipeline"


def _cmd_config(args: argparse.Namespace) -> int:
    print(json.dumps(load_config().to_dict(), indent=2, sort_keys=True))
    return 0


def _cmd_airflow(args: argparse.Namespace) -> int:
    from pipeline_tasks.stack import run_airflow_cli

    return run_airflow_cli(load_config(), args.args)


def _cmd_land(args: argparse.Namespace) -> int:
    from pipeline_tasks.demo_data import land_demo_data, land_flights_feed

    config = load_config()
    if args.first_day:
        result = land_flights_feed(config, args.first_day, args.last_day or args.first_day)
    else:
        result = land_demo_data(config, datetime.now(UTC).date())
    print(json.dumps(result.to_dict(), indent=2))
    return 0


def _say(text: str) -> None:
    print(text, flush=True)


def _cmd_demo(args: argparse.Namespace) -> int:
    from pipeline_tasks.demo_data import land_demo_data
    from pipeline_tasks.stack import AirflowAPI, Stack

    config = load_config()
    stack = Stack(config)
    _stop_on_signals()
    _say(f"==> starting Airflow (api-server, scheduler, dag-processor, triggerer) and the MLflow "
         f"UI; logs in {config.logs_dir}")
    try:
        stack.start()
        today = datetime.now(UTC).date()
        _say(f"==> landing the demo flights feed in {config.demo_source_uri}")
        landed = land_demo_data(config, today)
        _say(f"    2013 and {landed.first_day} .. {landed.last_day}: "
             f"{landed.files_written} new file(s)")
        api = AirflowAPI(config.airflow_url)
        _say(f"==> waiting for the dag-processor to parse {DAG_ID}")
        api.wait_for_dag(DAG_ID)
        # The latest complete nightly interval, with the logical date the scheduler gives it:
        # unpausing then does not schedule a second run of the same interval.
        end = datetime.combine(today, datetime.min.time(), UTC)
        start = end - timedelta(days=1)
        run = api.run_at(DAG_ID, start)
        if run is None:
            run = api.trigger_interval(DAG_ID, start, end)
            verb = "triggered"
        else:
            verb = "found the existing run"
        api.set_paused(DAG_ID, False)
        run_id = run["dag_run_id"]
        _say(f"==> {verb} {run_id} (data interval {run['data_interval_start']} .. "
             f"{run['data_interval_end']}) and unpaused the nightly schedule")
        started = datetime.now()

        def show(task_id: str, state: str | None) -> None:
            elapsed = (datetime.now() - started).total_seconds()
            _say(f"    [{elapsed:5.0f}s] {task_id:<9} {state or 'waiting'}")

        final = api.wait_for_run(DAG_ID, run_id, timeout=args.timeout, on_change=show)
        _summary(api, config, run_id, final["state"])
        if final["state"] != "success":
            return 1
        if args.no_serve:
            return 0
        _say("\nServing the UIs until Ctrl-C.")
        while True:
            stack.check_alive()
            time.sleep(2)
    except KeyboardInterrupt:
        _say("\n==> stopping every process the demo started")
        return 0
    finally:
        stack.stop()


def _stop_on_signals() -> None:
    """Ctrl-C, a closed terminal or a plain ``kill`` all end the demo through its cleanup.

    SIGINT is set explicitly: a shell starts background jobs with it ignored, and Python then
    keeps it ignored.
    """
    def interrupt(signum, frame):
        raise KeyboardInterrupt(signal.Signals(signum).name)

    signal.signal(signal.SIGINT, signal.default_int_handler)
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, interrupt)


def _summary(api, config, run_id: str, state: str) -> None:
    from pipeline_tasks.reports import page_url

    _say("")
    _say(f"Airflow UI : {config.airflow_url}/dags/{DAG_ID}/runs/{run_id}")
    _say("             login is turned off in the demo ([core] simple_auth_manager_all_admins); "
         "everyone who can reach it is admin")
    _say(f"MLflow UI  : {config.mlflow_ui_url}")
    _say(f"Run state  : {state}")
    if state != "success":
        failed = [ti for ti in api.task_instances(DAG_ID, run_id) if ti["state"] == "failed"]
        for ti in failed:
            _say(f"Failed task: {ti['task_id']} - see its log in the Airflow UI")
        return
    trained = api.xcom(DAG_ID, run_id, "train")
    decision = api.xcom(DAG_ID, run_id, "evaluate")
    registered = api.xcom(DAG_ID, run_id, "register")
    metrics = ", ".join(f"{k}={v:.4f}" for k, v in sorted(trained["metrics"].items()))
    _say(f"Model      : {registered['model_name']} version {registered['version']} "
         f"(aliases: {', '.join(registered['aliases']) or 'none'})")
    _say(f"Dataset    : version {trained['dataset_version'][:16]}, "
         f"{trained['n_train']} training rows, {trained['n_holdout']} holdout rows")
    _say(f"Metrics    : {metrics}")
    _say(f"Decision   : {'blessed' if decision['blessed'] else 'rejected'} - {decision['reason']}")
    _say(f"Promotion  : {'promoted to champion' if registered['promoted'] else 'not promoted'}"
         f" - {registered['reason']}")
    lineage = page_url(config.airflow_url, "models", registered["model_name"], "versions",
                       registered["version"])
    _say(f"Lineage    : {lineage} (source to deployment, with the reports; "
         "also under 'Models' in the Airflow UI)")
    tasks = {ti["task_id"]: ti["state"] for ti in api.task_instances(DAG_ID, run_id)}
    if tasks.get("deploy") == "success":
        deployed = api.xcom(DAG_ID, run_id, "deploy")
        _say(f"Serving    : {deployed['endpoint']} ({deployed['model_name']} "
             f"v{deployed['version']}, {deployed['status']}); API: /predict /metadata /metrics")
        _say("Try it     : " + _example_curl(deployed["endpoint"], trained))
    else:
        _say(f"Serving    : not deployed by this run (deploy {tasks.get('deploy')})")


def _example_curl(endpoint: str, trained: dict) -> str:
    """A ``curl`` that predicts one holdout row, ready to paste."""
    from pipeline_tasks import storage
    from pipeline_tasks.deploy import json_values

    row = storage.read_parquet(trained["holdout_uri"])[trained["feature_columns"]].head(1)
    body = json.dumps({"records": [{c: json_values(row[c])[0] for c in row.columns}]})
    return (f"curl -s {endpoint}/predict -H 'Content-Type: application/json' "
            f"-d '{body}'")


def _day(text: str) -> date:
    return date.fromisoformat(text)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    parser = argparse.ArgumentParser(prog="python -m pipeline_tasks")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("config", help="print the resolved configuration as JSON").set_defaults(
        func=_cmd_config)
    p_airflow = sub.add_parser("airflow", help="run an Airflow CLI command on the embedded default")
    p_airflow.add_argument("args", nargs=argparse.REMAINDER)
    p_airflow.set_defaults(func=_cmd_airflow)
    p_land = sub.add_parser("land-demo-data", help="drop the demo flights feed into landing/")
    p_land.add_argument("--from", dest="first_day", type=_day)
    p_land.add_argument("--to", dest="last_day", type=_day)
    p_land.set_defaults(func=_cmd_land)
    p_demo = sub.add_parser("demo", help="start the stack, train once, serve the UIs")
    p_demo.add_argument("--timeout", type=float, default=1800.0)
    p_demo.add_argument("--no-serve", action="store_true", help="stop after the first run")
    p_demo.set_defaults(func=_cmd_demo)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
