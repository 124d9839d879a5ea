"""The seam between a stage's typed result and its XCom payload.

Stages take and return small frozen dataclasses; only the Airflow glue stores them as XCom
dicts. ``XComResult`` gives a result type both directions: ``to_xcom()`` (its ``to_dict()``
unless the type says otherwise: the keys the UI links, notifications and tests read) and
``from_xcom(payload)`` (keys the type does not know are ignored, so an older or richer
payload still reads).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, Self


class XComResult:
    """Mixin for a frozen dataclass that travels between tasks as an XCom dict."""

    def to_xcom(self) -> dict[str, Any]:
        """The XCom payload: the type's ``to_dict()``."""
        return self.to_dict()  # type: ignore[attr-defined]

    @classmethod
    def from_xcom(cls, payload: Mapping[str, Any]) -> Self:
        """The result back from its XCom payload; unknown keys are ignored."""
        names = {f.name for f in dataclasses.fields(cls) if f.init}  # type: ignore[arg-type]
        return cls(**{key: value for key, value in payload.items() if key in names})


def typed(cls: type, value: Any) -> Any:
    """``value`` as ``cls``: an XCom dict is converted (``from_xcom``); a value that already is
    one, or None (a skipped upstream task), is returned as it is."""
    if isinstance(value, Mapping):
        return cls.from_xcom(value)
    return value
