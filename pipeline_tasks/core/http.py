"""The project's own services over the network: free ports, and JSON over HTTP (model servers,
the Airflow API, MLflow).

These are local or internal addresses, so no proxy from the environment is ever used. The model
server's bearer token (``MLOPS_SERVING_TOKEN``) is added by ``serving_headers``.
"""

from __future__ import annotations

import json
import os
import re
import socket
import urllib.error
import urllib.request
from typing import Any
from urllib.parse import quote, unquote, urlsplit

SERVING_TOKEN_ENV = "MLOPS_SERVING_TOKEN"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def model_url(endpoint: str, model_name: str) -> str:
    """Where one model of a model server answers: ``<endpoint>/models/<name>`` (its
    ``/predict`` and ``/metadata`` are below it; the server may serve other models too)."""
    return f"{endpoint.rstrip('/')}/models/{quote(model_name, safe='')}"


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


# --- credentials in URLs ---------------------------------------------------------------------
# A URL may carry a user and password (``postgresql://user:pw@host/db``,
# ``https://user:token@mlflow.example/``). Nothing the UI shows keeps them (``strip_userinfo``),
# printed settings show ``user:***`` (``redact_url``), and task logs mask them
# (``url_secrets``, registered with Airflow's ``mask_secret`` by the plugin's runtime).

_HOST = re.compile(r"(\[[0-9A-Fa-f:.%A-Za-z]+\]|[A-Za-z0-9._~%!$&'()*+,;=-]*)(:[0-9]*)?")
_URL_IN_TEXT = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://\S+")


def split_userinfo(url: str) -> tuple[str, str, str] | None:
    """``(prefix, userinfo, rest)`` of ``scheme://userinfo@rest``; None when the URL has no
    userinfo (or is no URL: a plain path, ``mailto:``).

    Based on ``urllib.parse.urlsplit``: the userinfo ends at the netloc's *last* ``@``, so a raw
    ``@`` or ``:`` in a password is kept in it. A raw ``/`` in a password (not valid in a URL,
    but seen in hand-written settings) ends urlsplit's netloc early; then the userinfo runs to
    the first ``@`` that is followed by a plain ``host[:port]``. A percent-encoded password
    (``%2F``, ``%40``) is one token either way.
    """
    if not isinstance(url, str) or "@" not in url:
        return None
    try:
        parts = urlsplit(url)
    except ValueError:  # e.g. an unbalanced IPv6 bracket: redact what looks like userinfo
        parts = None
    start = url.find("://")
    if start < 1 or (parts is not None and not parts.scheme):
        return None
    start += 3
    prefix, after = url[:start], url[start:]
    netloc = parts.netloc if parts is not None else ""
    if "@" in netloc and after.startswith(netloc):
        userinfo, _, host = netloc.rpartition("@")
        return prefix, userinfo, host + after[len(netloc):]
    first = re.split(r"[/?#]", after, maxsplit=1)[0]
    if ":" not in first or first.startswith("["):
        return None
    if "@" not in first and first.rsplit(":", 1)[1].isdigit():
        return None  # host:port, then a path that happens to hold an "@"
    for at in (i for i, ch in enumerate(after) if ch == "@"):
        host = re.split(r"[/?#]", after[at + 1:], maxsplit=1)[0]
        if host and _HOST.fullmatch(host):
            return prefix, after[:at], after[at + 1:]
    return None


def strip_userinfo(url: str) -> str:
    """``url`` without its user and password: what a page or a link may show."""
    split = split_userinfo(url)
    return url if split is None else split[0] + split[2]


def redact_url(url: str, mask: str = "***") -> str:
    """``url`` with its password replaced by ``mask`` (``user:***@host``); a userinfo without a
    password (often a token) is masked whole. Other values come back unchanged."""
    split = split_userinfo(url)
    if split is None:
        return url
    prefix, userinfo, rest = split
    user, sep, _ = userinfo.partition(":")
    return f"{prefix}{user}:{mask}@{rest}" if sep else f"{prefix}{mask}@{rest}"


def strip_userinfo_in_text(text: str) -> str:
    """Every URL inside ``text`` (an error message, a cell) without its user and password."""
    if not isinstance(text, str) or "://" not in text:
        return text
    return _URL_IN_TEXT.sub(lambda m: strip_userinfo(m.group()), text)


def strip_userinfo_deep(value: Any) -> Any:
    """``value`` (JSON-like: dicts, lists, strings) with every URL in every string stripped of
    its user and password: what a JSON answer of the UI may carry."""
    if isinstance(value, str):
        return strip_userinfo_in_text(value)
    if isinstance(value, dict):
        return {key: strip_userinfo_deep(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [strip_userinfo_deep(item) for item in value]
    return value


def url_secrets(url: str) -> list[str]:
    """What to mask in logs for ``url``: its password as written and decoded (and re-encoded,
    the way clients print it), or a password-less userinfo (a token) the same ways."""
    split = split_userinfo(url)
    if split is None:
        return []
    userinfo = split[1]
    _, sep, password = userinfo.partition(":")
    secret = password if sep else userinfo
    forms = [secret, unquote(secret), quote(unquote(secret), safe=""),
             quote(unquote(secret), safe="!$&'()*+,;=")]
    return [s for s in dict.fromkeys(forms) if s]
