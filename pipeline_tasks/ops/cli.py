"""The command line a person runs by hand: ``mlops`` (the console script) or ``python -m
pipeline_tasks``. ``--help`` lists the commands and says what each does; ``build_parser`` is
their one list, so no other list of them is kept here."""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import time
from datetime import UTC, date, datetime, timedelta

from pipeline_tasks.core.config import load_config

DAG_ID = "ml_training_pipeline"


def _cmd_config(args: argparse.Namespace) -> int:
    print(json.dumps(load_config().to_dict(), indent=2, sort_keys=True))
    return 0


def _cmd_airflow(args: argparse.Namespace) -> int:
    from pipeline_tasks.ops.airflow_home import run_airflow_cli

    return run_airflow_cli(load_config(), args.args)


def _cmd_production_env(args: argparse.Namespace) -> int:
    from pipeline_tasks.ops.production import TEMPLATE, write_env_file

    print(write_env_file(args.out, args.template or TEMPLATE))
    return 0


def _cmd_image_wheels(args: argparse.Namespace) -> int:
    from pipeline_tasks.ops.containers import WHEELS_DIR, prepare_image_wheels

    wheels = prepare_image_wheels(load_config())
    print(f"{len(wheels)} wheels in {WHEELS_DIR}")
    return 0


def _cmd_create_databases(args: argparse.Namespace) -> int:
    import os

    from pipeline_tasks.ops.production import profile_databases, provision

    if not profile_databases(dict(os.environ)):
        print("no PostgreSQL database in the environment: load the profile first "
              "(make production-db PROFILE=production.env)", file=sys.stderr)
        return 2
    created = provision(dict(os.environ))  # the role, the databases, the broker's Redis user
    print(f"databases created: {', '.join(created) or 'none, all existed'}")
    return 0


def _cmd_land(args: argparse.Namespace) -> int:
    from pipeline_tasks.ops.demo_data import land_demo_data, land_flights_feed

    config = load_config()
    if args.first_day:
        result = land_flights_feed(config, args.first_day, args.last_day or args.first_day)
    else:
        result = land_demo_data(config, datetime.now(UTC).date())
    print(json.dumps(result.to_dict(), indent=2))
    return 0


def _cmd_replay(args: argparse.Namespace) -> int:
    from pipeline_tasks.ops.replay import ReplayError, replay

    try:
        result = replay(load_config(), args.first_day, args.last_day or args.first_day,
                        url=args.url, batch_rows=args.batch_rows, concurrency=args.concurrency,
                        outcomes=not args.no_outcomes, progress=_say)
    except ReplayError as exc:
        print(f"replay failed: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(result.to_dict(), indent=2))
    return 0


def _cmd_reproduce(args: argparse.Namespace) -> int:
    from pipeline_tasks.ops.reproduce import DIFFERS, IDENTICAL, INPUT_GONE, LineageInputGone
    from pipeline_tasks.ops.reproduce import reproduce as rebuild

    if not _model_name_ok(args.model):
        return INPUT_GONE
    if not args.version.isdigit() or len(args.version) > 9:
        print("error: VERSION must be a version number such as 3", file=sys.stderr)
        return INPUT_GONE
    try:
        outcome = rebuild(args.model, args.version, load_config())
    except LineageInputGone as exc:
        print(f"error: {exc}", file=sys.stderr)
        return INPUT_GONE
    print(json.dumps(outcome.to_dict(), indent=2) if args.json else outcome.text())
    return IDENTICAL if outcome.identical else DIFFERS


def _model_name_ok(name: str) -> bool:
    """A registered model name as the trigger forms take it; else says so on stderr."""
    import re

    from pipeline_tasks.core.params import MODEL_NAME_PATTERN, MODEL_NAME_RULE

    if re.fullmatch(MODEL_NAME_PATTERN, name) and len(name) <= 200:
        return True
    print(f"error: MODEL must be {MODEL_NAME_RULE}", file=sys.stderr)
    return False


def _cmd_batch_score(args: argparse.Namespace) -> int:
    from pipeline_tasks.core.errors import PipelineError
    from pipeline_tasks.scoring import standalone
    from pipeline_tasks.scoring.batch import TooManyRejects

    if not _model_name_ok(args.model):
        return 2
    end = args.end or datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    start = args.start or end - timedelta(days=1)
    if start >= end:
        print(f"error: --start {start.isoformat()} is not before --end {end.isoformat()}",
              file=sys.stderr)
        return 2
    try:
        result = standalone.score(
            args.model, args.source, ref=args.ref, interval_start=start.isoformat(),
            interval_end=end.isoformat(), config=load_config(),
            run_id=args.run_id or f"cli__{datetime.now(UTC).isoformat(timespec='seconds')}",
            id_column=args.id_column, time_column=args.time_column, chunk_rows=args.chunk_rows,
            max_reject_share=args.max_reject_share)
    except PipelineError as exc:  # bad input, too many rejects, the registry away: say which
        print(f"error: {exc}" + (f"\n{exc.advice}" if exc.advice else ""), file=sys.stderr)
        return 1 if isinstance(exc, TooManyRejects) else 3 if exc.retryable else 2
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
    else:
        print(f"{result.model_name} v{result.model_version}: {result.rows_read:,} rows of "
              f"[{result.interval_start}, {result.interval_end}), {result.rows_scored:,} scored, "
              f"{result.rows_rejected:,} rejected, in {result.seconds:.1f} s\n"
              f"scores : {result.scores_uri}\nrejects: {result.rejects_uri}\n"
              f"summary: {result.summary_uri}")
    return 0


def _instant(text: str) -> datetime:
    """An ISO date or time; a naive one is UTC."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text[:40]!r} is not an ISO date or time such as "
                                         "2026-12-01 or 2026-12-01T06:00:00+01:00") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _say(text: str) -> None:
    print(text, flush=True)


def _cmd_demo(args: argparse.Namespace) -> int:
    from pipeline_tasks.ops.stack import Stack

    config = load_config()
    _say(f"==> starting Airflow (api-server, scheduler, dag-processor, triggerer) and the MLflow "
         f"UI; logs in {config.logs_dir}")
    return _run_stack(Stack(config, extra_env=DEMO_ENV), lambda: _first_run(config, args),
                      args.no_serve)


#: The demo's server accepts any event time: `make replay` sends 2013's flights with their own
#: (a deployment keeps the default window, see docs/serving.md).
DEMO_ENV = {"MLOPS_SERVING_EVENT_TIME_WINDOW": "none"}


def _first_run(config, args: argparse.Namespace) -> int:
    """Land the demo data, run the latest nightly interval, print what it did."""
    from pipeline_tasks.ops.airflow_api import stack_api
    from pipeline_tasks.ops.airflow_home import login_enabled, stack_env
    from pipeline_tasks.ops.demo_data import land_demo_data

    today = datetime.now(UTC).date()
    _say(f"==> landing the demo flights feed in {config.demo_source_uri}")
    landed = land_demo_data(config, today)
    _say(f"    2013 and {landed.first_day} .. {landed.last_day}: "
         f"{landed.files_written} new file(s)")
    api = stack_api(config)
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
    _summary(api, config, run_id, final["state"], login_enabled(stack_env(config)))
    return 0 if final["state"] == "success" else 1


#: The monitoring demo's stack: only the runs it triggers (and the retrains they ask for), and a
#: cool-down of three weekly checks, so both a retrain and a held-back request show.
MONITORING_DEMO_ENV = {"MLOPS_TRAINING_SCHEDULE": "none", "MLOPS_DRIFT_SCHEDULE": "none",
                       "MLOPS_BATCH_SCORING_SCHEDULE": "none",
                       "MLOPS_RETRAIN_COOLDOWN_DAYS": "21", **DEMO_ENV}


def _cmd_demo_monitoring(args: argparse.Namespace) -> int:
    from pipeline_tasks.ops.stack import Stack

    config = load_config()
    _say(f"==> starting Airflow and the MLflow UI (time schedules off, retrain cool-down "
         f"21 days); logs in {config.logs_dir}")
    return _run_stack(Stack(config, extra_env=MONITORING_DEMO_ENV),
                      lambda: _monitoring_loop(config, args), args.no_serve)


def _monitoring_loop(config, args: argparse.Namespace) -> int:
    from pipeline_tasks.core import layout
    from pipeline_tasks.ops import demo_monitoring as monitoring_demo
    from pipeline_tasks.ops.airflow_api import stack_api

    summary = monitoring_demo.run(config, stack_api(config), _say,
                                  until=args.until, timeout=args.timeout)
    _say("")
    _say(f"Weeks checked: {summary['weeks']}, drifted: {summary['drifted']}, retrains: "
         f"{len(summary['retrains'])}")
    _say(f"Airflow UI : {config.airflow_url}/dags/{monitoring_demo.MONITORING} "
         "(login is turned off in the demo: everyone who can reach it is admin)")
    _say(f"MLflow UI  : {config.mlflow_ui_url} - experiment {monitoring_demo.MODEL}-monitoring,"
         " run drift-over-time: the drift_share chart")
    _say(f"Reports    : {layout.model_monitoring_dir(config, monitoring_demo.MODEL)}/")
    _say(f"Champion   : http://{config.serving_host}:{config.serving_port + 1}/metadata")
    return 0


def _run_stack(stack, body, no_serve: bool) -> int:
    """Start ``stack``, run ``body``, then keep the UIs up until Ctrl-C (or SIGTERM/SIGHUP);
    every process is stopped on the way out, whatever happens."""
    _stop_on_signals()
    try:
        stack.start()
        code = body()
        if code or no_serve:
            return code
        _say("\nServing the UIs until Ctrl-C.")
        checked = time.monotonic()
        while True:
            stack.check_alive()
            if time.monotonic() - checked > SERVING_CHECK_S:
                _restore_serving(stack.config)  # a killed supervisor took its servers with it
                checked = time.monotonic()
            time.sleep(2)
    except KeyboardInterrupt:
        _say("\n==> stopping every process the demo started")
        return 0
    finally:
        stack.stop()


#: How often ``make demo`` checks that every endpoint serves what its deployment records say.
SERVING_CHECK_S = 15.0


def _restore_serving(config) -> list[dict]:
    from pipeline_tasks.core.errors import PipelineError
    from pipeline_tasks.deploy.bluegreen import restore_serving

    try:
        report = restore_serving(config)
    except (OSError, RuntimeError, PipelineError) as exc:  # RuntimeError: SupervisorError
        _say(f"==> the serving check could not run: {exc}")
        return [{"endpoint": "", "action": "failed", "error": str(exc)}]
    for entry in report:
        if entry["action"] != "none":
            _say(f"==> {entry['endpoint']}: {entry['model_name']} v{entry['version']} was not "
                 f"answering; {entry['action']}{': ' + entry['error'] if 'error' in entry else ''}")
    return report


def _cmd_serving_check(args: argparse.Namespace) -> int:
    """Every local endpoint serves what its deployment records say, or is brought back."""
    report = _restore_serving(load_config())
    for entry in report:
        print(json.dumps(entry))
    if not report:
        print("no live local deployment is recorded")
    return 1 if any(e["action"] == "failed" for e in report) else 0


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


def _summary(api, config, run_id: str, state: str, login: bool = False) -> None:
    from pipeline_tasks.lineage.reports import page_url

    _say("")
    _say(f"Airflow UI : {config.airflow_url}/dags/{DAG_ID}/runs/{run_id}")
    if login:
        _say(f"             login: admin, password in {config.airflow_home}/"
             "simple_auth_manager_passwords.json.generated")
    else:
        _say("             login is turned off in the demo ([core] simple_auth_manager_all_"
             "admins); everyone who can reach it is admin")
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
    from pipeline_tasks.core import storage
    from pipeline_tasks.deploy.canary import json_values

    row = storage.read_parquet(trained["holdout_uri"])[trained["feature_columns"]].head(1)
    body = json.dumps({"records": [{c: json_values(row[c])[0] for c in row.columns}]})
    return (f"curl -s {endpoint}/predict -H 'Content-Type: application/json' "
            f"-d '{body}'")


def _day(text: str) -> date:
    return date.fromisoformat(text)


def build_parser() -> argparse.ArgumentParser:
    """The CLI: ``mlops`` (the console script) or ``python -m pipeline_tasks``."""
    prog = "python -m pipeline_tasks" if sys.argv[0].endswith("__main__.py") else "mlops"
    parser = argparse.ArgumentParser(prog=prog, description="The MLOps pipeline's commands.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    sub.add_parser("config", help="print the resolved configuration as JSON").set_defaults(
        func=_cmd_config)
    p_airflow = sub.add_parser("airflow", help="run an Airflow CLI command on the embedded default")
    p_airflow.add_argument("args", nargs=argparse.REMAINDER, help="the Airflow CLI's arguments")
    p_airflow.set_defaults(func=_cmd_airflow)
    p_land = sub.add_parser("land-demo-data", help="drop the demo flights feed into landing/")
    p_land.add_argument("--from", dest="first_day", type=_day, help="first day (YYYY-MM-DD)")
    p_land.add_argument("--to", dest="last_day", type=_day, help="last day (YYYY-MM-DD)")
    p_land.set_defaults(func=_cmd_land)
    p_replay = sub.add_parser("replay", help="send each day's demo flights to the model server")
    p_replay.add_argument("--from", dest="first_day", type=_day, required=True,
                          help="first day to send (YYYY-MM-DD)")
    p_replay.add_argument("--to", dest="last_day", type=_day,
                          help="last day to send (default: the first)")
    p_replay.add_argument("--url", help="server address (default: the configured serving_url)")
    p_replay.add_argument("--batch-rows", type=int, default=250, help="rows per request (250)")
    p_replay.add_argument("--concurrency", type=int, default=4,
                          help="requests in flight at once (4)")
    p_replay.add_argument("--no-outcomes", action="store_true",
                          help="do not land the flights' outcomes in the outcome feed")
    p_replay.set_defaults(func=_cmd_replay)
    p_mon = sub.add_parser("demo-monitoring",
                           help="train on January, replay the seasons, watch the drift loop")
    p_mon.add_argument("--until", type=_day, default=date(2013, 5, 31),
                       help="last day of traffic to replay (default 2013-05-31)")
    p_mon.add_argument("--timeout", type=float, default=1800.0,
                       help="seconds to wait for each DAG run (1800)")
    p_mon.add_argument("--no-serve", action="store_true", help="stop when the loop is done")
    p_mon.set_defaults(func=_cmd_demo_monitoring)
    p_env = sub.add_parser("production-env",
                           help="write the production profile's env file with fresh secrets")
    p_env.add_argument("--out", default="production.env", help="file to write (production.env)")
    p_env.add_argument("--template", help="default: docker/production.env.example")
    p_env.set_defaults(func=_cmd_production_env)
    sub.add_parser("image-wheels", help="download requirements.lock's wheels into docker/wheels/ "
                   "for an offline build of docker/airflow.Dockerfile").set_defaults(
        func=_cmd_image_wheels)
    sub.add_parser("create-databases", help="create the PostgreSQL databases the profile in "
                   "the environment names").set_defaults(func=_cmd_create_databases)
    sub.add_parser("serving-check", help="check that every local model endpoint serves the "
                   "version its deployment records say is live; restart it if not").set_defaults(
        func=_cmd_serving_check)
    p_rep = sub.add_parser(
        "reproduce", help="rebuild a registered version from its lineage (snapshot, params, "
        "seed, code key) into a scratch experiment and compare its predictions on the "
        "version's holdout: exit 0 identical, 1 differs, 2 an input of the lineage is gone")
    p_rep.add_argument("model", help="registered model name")
    p_rep.add_argument("version", help="version number")
    p_rep.add_argument("--json", action="store_true", help="print the outcome as JSON")
    p_rep.set_defaults(func=_cmd_reproduce)
    p_bat = sub.add_parser(
        "batch-score", help="score one data interval of a file, folder or glob with a registered "
        "version and publish it, as the ml_batch_scoring DAG's task does (docs/batch.md): exit "
        "0 published, 1 too many rows rejected, 2 bad input, 3 a service did not answer (worth "
        "a retry)")
    p_bat.add_argument("model", help="registered model name")
    p_bat.add_argument("source", help="a CSV or Parquet file, a folder or a glob (local or an "
                       "object store URI); a SQL source needs the DAG and an Airflow connection")
    p_bat.add_argument("--ref", default="champion",
                       help="alias or version number to score with (champion)")
    p_bat.add_argument("--start", type=_instant,
                       help="interval start, ISO date or time, UTC unless it says (default: "
                       "the day before --end)")
    p_bat.add_argument("--end", type=_instant,
                       help="interval end, exclusive (default: today 00:00 UTC)")
    p_bat.add_argument("--id-column", help="the rows' key column (default: generated ids)")
    p_bat.add_argument("--time-column", help="the rows' event time column (default: detected)")
    p_bat.add_argument("--chunk-rows", type=int, help="rows per chunk (batch_chunk_rows)")
    p_bat.add_argument("--max-reject-share", type=float,
                       help="largest share of rejected rows that still publishes "
                       "(batch_max_reject_share)")
    p_bat.add_argument("--run-id", help="recorded with every score (default: cli__<UTC time>)")
    p_bat.add_argument("--json", action="store_true", help="print the result as JSON")
    p_bat.set_defaults(func=_cmd_batch_score)
    p_demo = sub.add_parser("demo", help="start the stack, train once, serve the UIs")
    p_demo.add_argument("--timeout", type=float, default=1800.0,
                        help="seconds to wait for the first run (1800)")
    p_demo.add_argument("--no-serve", action="store_true", help="stop after the first run")
    p_demo.set_defaults(func=_cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    from pipeline_tasks.core.errors import ConfigError

    try:
        return args.func(args)
    except ConfigError as exc:  # bad settings or files: the message says which and why
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
