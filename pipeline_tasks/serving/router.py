"""The stable endpoint of the docker target: a TCP router in front of per-version containers.

It listens on one port (the container's 8000, published on the stable host port) and pipes every
new connection to the backend named in a state file (``/state/backend.json``:
``{"host": <container name>, "port": 8000, ...}``). The deployer switches versions by replacing
that file atomically: connections opened afterwards go to the new backend, connections already
open finish on the old one, so a switch refuses no request. The file is checked (one ``stat``) at
each new connection.

Standard library only: it runs from its own small image (``docker/router.Dockerfile``) as
``python3 router.py``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import sys

log = logging.getLogger("mlops.router")

STATE = os.environ.get("ROUTER_STATE", "/state/backend.json")
LISTEN_PORT = int(os.environ.get("ROUTER_PORT", "8000"))
CONNECT_TIMEOUT_S = 5.0
CONNECT_ATTEMPTS = 3
CHUNK = 256 * 1024


class Backend:
    """The current backend, re-read when the state file changes."""

    def __init__(self, path: str):
        self.path = path
        self.stamp: tuple[int, int] | None = None
        self.address: tuple[str, int] | None = None

    def current(self) -> tuple[str, int] | None:
        try:
            stat = os.stat(self.path)
        except FileNotFoundError:
            return None
        stamp = (stat.st_mtime_ns, stat.st_ino)
        if stamp != self.stamp:
            try:
                with open(self.path, encoding="utf-8") as handle:
                    state = json.load(handle)
                self.address = (str(state["host"]), int(state["port"]))
                self.stamp = stamp
                log.info("backend: %s:%s (%s v%s)", *self.address, state.get("model_name"),
                         state.get("model_version"))
            except (OSError, ValueError, KeyError, TypeError) as exc:
                log.error("cannot read %s (%s); keeping %s", self.path, exc, self.address)
        return self.address


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(CHUNK):
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except (ConnectionError, OSError):
        pass
    finally:
        if not writer.can_write_eof():
            writer.close()


async def _connect(backend: Backend):
    last: Exception | None = None
    for attempt in range(CONNECT_ATTEMPTS):
        address = backend.current()
        if address is None:
            raise ConnectionError("no backend configured")
        try:
            return await asyncio.wait_for(asyncio.open_connection(*address),
                                          CONNECT_TIMEOUT_S)
        except (TimeoutError, OSError) as exc:
            last = exc
            await asyncio.sleep(0.2 * (attempt + 1))
    raise ConnectionError(f"backend {backend.address} unreachable: {last}")


async def _handle(backend: Backend, client_r: asyncio.StreamReader,
                  client_w: asyncio.StreamWriter) -> None:
    try:
        upstream_r, upstream_w = await _connect(backend)
    except ConnectionError as exc:
        log.error("%s", exc)
        client_w.close()
        return
    try:
        await asyncio.gather(_pipe(client_r, upstream_w), _pipe(upstream_r, client_w))
    finally:
        for writer in (upstream_w, client_w):
            writer.close()


async def serve(state: str = STATE, port: int = LISTEN_PORT) -> None:
    backend = Backend(state)
    backend.current()
    server = await asyncio.start_server(lambda r, w: _handle(backend, r, w), host="0.0.0.0",
                                        port=port, backlog=2048, reuse_address=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    log.info("router on :%d, state %s", port, state)
    async with server:
        await stop.wait()
    log.info("router stopped")


def main() -> int:
    logging.basicConfig(level=logging.INFO, stream=sys.stdout,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    asyncio.run(serve())
    return 0


if __name__ == "__main__":
    sys.exit(main())
