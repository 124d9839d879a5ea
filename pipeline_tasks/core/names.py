"""The one sanitiser of names that reach a path, a lock key or a folder: anything from a trigger
form, a model name or a run id goes through ``safe_name`` before it becomes part of a path. And
``printable``: a value from the data shown as a label (a slice, a group) in a reason, a log line
or a report, on one line and of bounded length."""

from __future__ import annotations

import re

_UNSAFE = re.compile(r"[^A-Za-z0-9._=-]+|\.\.+")


def safe_name(value: str, fallback: str = "") -> str:
    """``value`` as one path segment: characters other than letters, digits and ``._=-`` become
    ``_``, and so does ``..``; ``fallback`` if nothing is left."""
    return _UNSAFE.sub("_", value).strip("_") or fallback


_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]+")


def printable(value: object, limit: int = 64) -> str:
    """``str(value)`` with control characters and line breaks as one space each run, cut to
    ``limit`` characters (an ellipsis marks a cut): a data value that cannot forge a log line
    or flood a reason."""
    text = _CONTROL.sub(" ", str(value))
    return text if len(text) <= limit else text[:limit - 1] + "…"
