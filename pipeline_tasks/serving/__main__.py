"""Run the model server: ``python -m pipeline_tasks.serving --model NAME [--ref champion]``.

It resolves the version, checks its files against the sha256 recorded at registration (and
exits with the reason if they differ), loads it, then serves on ``--host``/``--port`` (default
``serving_host``/``serving_port`` of the config) with one uvicorn worker. SIGTERM or Ctrl-C
stops it after a last flush of the prediction log.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile

from pipeline_tasks.config import load_config
from pipeline_tasks.errors import PipelineInputError

log = logging.getLogger("pipeline_tasks.serving")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline_tasks.serving")
    parser.add_argument("--model", required=True, help="registered model name")
    parser.add_argument("--ref", default="champion", help="alias or version number")
    parser.add_argument("--host")
    parser.add_argument("--port", type=int)
    parser.add_argument("--workdir", help="where the model's files go (default: a temp dir)")
    parser.add_argument("--no-prediction-log", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config = load_config()

    import uvicorn

    from pipeline_tasks.serving import model
    from pipeline_tasks.serving.app import create_app
    from pipeline_tasks.serving.predlog import PredictionLog

    workdir = args.workdir or tempfile.mkdtemp(prefix="mlops-serving-")
    try:
        served = model.load(config, args.model, args.ref, workdir)
    except PipelineInputError as exc:
        log.error("refusing to serve %s@%s: %s", args.model, args.ref, exc)
        return 2
    plog = None
    if not args.no_prediction_log:
        plog = PredictionLog(config.predictions_uri, flush_s=config.prediction_log_flush_s,
                             max_rows=config.prediction_log_max_rows)
        plog.start()
    app = create_app(served, max_body_bytes=config.serving_max_body_bytes, prediction_log=plog)
    server = uvicorn.Server(uvicorn.Config(
        app, host=args.host or config.serving_host, port=args.port or config.serving_port,
        workers=1, access_log=False, log_level="warning", server_header=False,
        limit_concurrency=1024, timeout_keep_alive=30,
    ))
    log.info("serving %s v%s on http://%s:%s", served.name, served.version, server.config.host,
             server.config.port)
    try:
        server.run()
    finally:
        if plog is not None:
            plog.close()
    return 0 if server.started else 1


if __name__ == "__main__":
    sys.exit(main())
