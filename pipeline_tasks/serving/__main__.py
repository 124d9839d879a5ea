"""Run the model server: ``python -m pipeline_tasks.serving --model NAME [--ref champion]``.

Several models: ``--model NAME[@REF]`` once per model (``REF`` defaults to ``--ref``); the first
is the default model (``/predict``, ``/metadata``), every one answers by name
(``/models/<name>/...``, ``/v2/models/<name>/...``).

Or, for model folders baked in beforehand (the docker image): ``--models-manifest FILE``, JSON
``{"models": [{"dir", "sha256", "model_name", "model_version", "run_id", "tags"}, ...]}`` (``dir``
relative to FILE's folder), or one folder: ``--model-dir DIR --expected-sha256 HEX
[--model-meta FILE]``. Each folder's sha256 must equal the one given (else exit 2).

It resolves the version, checks its files against the sha256 recorded at registration (and
exits with the reason if they differ), loads it, then serves on ``--host``/``--port`` (default
``serving_host``/``serving_port`` of the config) with one uvicorn worker. SIGTERM or Ctrl-C
stops it after a last flush of the prediction log.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import logging
import signal
import socket
import sys
import tempfile
from pathlib import Path

from pipeline_tasks.core.config import load_config
from pipeline_tasks.core.errors import PipelineInputError

log = logging.getLogger("pipeline_tasks.serving")
#: The server's GIL switch interval (``sys.setswitchinterval``), in seconds.
SWITCH_INTERVAL_S = 0.0005


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m pipeline_tasks.serving",
                                     description="Serve registered model versions over HTTP.")
    parser.add_argument("--model", action="append", default=[],
                        help="registered model name, or NAME@REF; once per model (the first is "
                             "the default model)")
    parser.add_argument("--ref", default="champion",
                        help="alias or version number of a --model given without @REF")
    parser.add_argument("--host", help="address to listen on (default: serving_host)")
    parser.add_argument("--port", type=int, help="port to listen on (default: serving_port)")
    parser.add_argument("--workdir", help="where the model's files go (default: a temp dir)")
    parser.add_argument("--no-prediction-log", action="store_true",
                        help="do not log predictions (monitoring then has no live data)")
    parser.add_argument("--model-dir", help="serve this model folder instead of --model/--ref")
    parser.add_argument("--expected-sha256", help="with --model-dir: the folder's sha256")
    parser.add_argument("--model-meta", help="with --model-dir: JSON with model_name, "
                        "model_version, run_id, tags")
    parser.add_argument("--models-manifest",
                        help="serve the model folders this JSON file lists, each with its sha256")
    parser.add_argument("--stable-fd", type=int,
                        help="listening socket shared by the supervisor (serve it on SIGUSR2)")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    sources = [bool(args.model), args.model_dir is not None, args.models_manifest is not None]
    if sum(sources) != 1:
        parser.error("give --model NAME[@REF] (once per model), --models-manifest FILE, or "
                     "--model-dir DIR --expected-sha256 HEX")
    if args.model_dir is not None and not args.expected_sha256:
        parser.error("--model-dir needs --expected-sha256")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config = load_config()

    import uvicorn

    from pipeline_tasks.serving import model
    from pipeline_tasks.serving.app import create_app
    from pipeline_tasks.serving.predlog import PredictionLog

    wanted = [_name_ref(given, args.ref) for given in args.model]
    what = args.models_manifest or args.model_dir or ", ".join(f"{n}@{r}" for n, r in wanted)
    try:
        if args.models_manifest is not None:
            served = model.load_manifest(config, args.models_manifest)
        elif args.model_dir is not None:
            meta = json.loads(Path(args.model_meta).read_text()) if args.model_meta else None
            served = [model.load_dir(config, args.model_dir, args.expected_sha256, meta)]
        else:
            workdir = args.workdir or tempfile.mkdtemp(prefix="mlops-serving-")
            served = [model.load(config, name, ref, workdir) for name, ref in wanted]
    except PipelineInputError as exc:
        log.error("refusing to serve %s: %s", what, exc)
        return 2
    plog = None
    if not args.no_prediction_log:
        plog = PredictionLog(config.predictions_uri, flush_s=config.prediction_log_flush_s,
                             max_rows=config.prediction_log_max_rows,
                             queue_rows=config.prediction_log_queue_rows)
        plog.start()
    app = create_app(served, max_body_bytes=config.serving_max_body_bytes, prediction_log=plog)
    # The model, scikit-learn, pandas and MLflow are long-lived objects: out of the collector's
    # way, so a full collection scans only what requests make (not ~350,000 objects: 200 ms
    # of a stalled event loop every few thousand requests)
    gc.collect()
    gc.freeze()
    # The event loop waits for the GIL whenever the prediction log's collector or the model's
    # thread holds it, and CPython makes a waiting thread wait a whole switch interval (5 ms by
    # default) before it asks for it: a request that meets the collector would wait that long
    sys.setswitchinterval(SWITCH_INTERVAL_S)
    server = uvicorn.Server(uvicorn.Config(
        app, host=args.host or config.serving_host, port=args.port or config.serving_port,
        workers=1, access_log=False, log_level="warning", server_header=False,
        limit_concurrency=1024, timeout_keep_alive=30,
    ))
    log.info("serving %s on http://%s:%s", ", ".join(f"{m.name} v{m.version}" for m in served),
             server.config.host, server.config.port)
    try:
        # the loop uvicorn would pick itself (uvloop when installed)
        with asyncio.Runner(loop_factory=server.config.get_loop_factory()) as runner:
            runner.run(_serve(server, app, args.stable_fd))
    finally:
        if plog is not None:
            plog.close()
    return 0 if server.started else 1


def _name_ref(given: str, default_ref: str) -> tuple[str, str]:
    """``NAME@REF`` (the last ``@``: a version or alias has none) or ``NAME`` at
    ``default_ref``."""
    name, sep, ref = given.rpartition("@")
    return (name, ref or default_ref) if sep else (given, default_ref)


async def _serve(server, app, stable_fd: int | None) -> None:
    """Serve on the own port; with ``stable_fd``, also on that shared socket after SIGUSR2, until
    SIGUSR1 (the drain before a switch stops this server).

    The serving supervisor owns the stable port's listening socket and hands it to every server
    it starts. A new version serves only its own port until it has passed validation; SIGUSR2
    then makes it accept on the shared socket too, next to the old version, which is stopped
    next. Connections waiting in the shared queue are never dropped.
    """
    app.state.stable_active = False
    app.state.stable_listener = None
    if stable_fd is not None:
        stable = socket.socket(fileno=stable_fd)
        loop = asyncio.get_running_loop()

        async def activate() -> None:
            if app.state.stable_active:
                return
            config = server.config

            def protocol(_loop=None):
                return config.http_protocol_class(config=config, server_state=server.server_state,
                                                  app_state=server.lifespan.state, _loop=_loop)

            listener = await loop.create_server(protocol, sock=stable, backlog=config.backlog)
            server.servers.append(listener)  # closed by uvicorn's shutdown
            app.state.stable_listener = listener
            app.state.stable_active = True
            log.info("now also serving the stable endpoint")

        async def deactivate() -> None:
            # stop accepting on the shared socket (this process's copy only): connections in
            # its queue go to the new server; what this one accepted, it still answers
            listener = app.state.stable_listener
            if listener is not None:
                listener.close()
                app.state.stable_listener = None
                log.info("no longer accepting on the stable endpoint (draining)")

        loop.add_signal_handler(signal.SIGUSR2, lambda: loop.create_task(activate()))
        loop.add_signal_handler(signal.SIGUSR1, lambda: loop.create_task(deactivate()))
    await server.serve()


if __name__ == "__main__":
    sys.exit(main())
