"""The one sanitiser of names that reach a path, a lock key or a folder: anything from a trigger
form, a model name or a run id goes through ``safe_name`` before it becomes part of a path."""

from __future__ import annotations

import re

_UNSAFE = re.compile(r"[^A-Za-z0-9._=-]+|\.\.+")


def safe_name(value: str, fallback: str = "") -> str:
    """``value`` as one path segment: characters other than letters, digits and ``._=-`` become
    ``_``, and so does ``..``; ``fallback`` if nothing is left."""
    return _UNSAFE.sub("_", value).strip("_") or fallback
