"""The project's own services over the network: free ports, and JSON over HTTP (model servers,
the Airflow API, MLflow).

These are local or internal addresses, so no proxy from the environment is ever used. The model
server's bearer token (``MLOPS_SERVING_TOKEN``) is added by ``serving_headers``.
"""

from __future__ import annotations

import json
import os
import socket
import urllib.error
import urllib.request
from typing import Any

SERVING_TOKEN_ENV = "MLOPS_SERVING_TOKEN"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def opener() -> urllib.request.OpenerDirector:
    return urllib.request.build_opener(urllib.request.ProxyHandler({}))


def serving_headers() -> dict[str, str]:
    """JSON content type, and the model server's bearer token when one is configured."""
    headers = {"Content-Type": "application/json"}
    if os.environ.get(SERVING_TOKEN_ENV):
        headers["Authorization"] = f"Bearer {os.environ[SERVING_TOKEN_ENV]}"
    return headers


def fetch_json(url: str, body: Any = None, *, timeout: float = 30.0,
               headers: dict[str, str] | None = None) -> Any:
    """GET (or POST ``body`` as JSON) and parse the answer. Raises ``urllib.error.HTTPError``
    for an error status, ``OSError`` when unreachable, ``ValueError`` for a non-JSON answer."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data,
                                 headers=headers or {"Content-Type": "application/json"})
    with opener().open(req, timeout=timeout) as resp:
        return json.loads(resp.read())


def try_json(url: str, body: Any = None, *, timeout: float = 30.0,
             headers: dict[str, str] | None = None) -> Any:
    """Like ``fetch_json``, but None when unreachable or not JSON, and
    ``{"status": <code>, "error": <start of the body>}`` for an error status."""
    try:
        return fetch_json(url, body, timeout=timeout, headers=headers)
    except urllib.error.HTTPError as exc:
        return {"status": exc.code, "error": exc.read().decode(errors="replace")[:300]}
    except (OSError, ValueError):
        return None


def ok(url: str, timeout: float = 5.0) -> bool:
    """The URL answers 200."""
    try:
        with opener().open(url, timeout=timeout) as resp:
            return resp.status == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False
