"""``requirements.lock``: every pinned package with the sha256 of its files (``make lock``).

``read_lock`` parses it (uv's ``--generate-hashes`` format) for the image builds, which install
from it in hash-checking mode: the Airflow image (``containers.prepare_image_wheels``) and the
serving image (``deploy.docker_image.prepare_wheels``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from pipeline_tasks.core.config import PROJECT_DIR
from pipeline_tasks.core.errors import ConfigError

LOCK_FILE = PROJECT_DIR / "requirements.lock"


@dataclass(frozen=True)
class LockedPin:
    """One entry of the lock: ``name==version`` (and marker) with the sha256 of its files."""

    name: str
    version: str
    hashes: tuple[str, ...]  # "sha256:<hex>", every file of that version on the index
    marker: str = ""
    line: int = 0  # where the entry starts in the lock

    @property
    def pin(self) -> str:
        return f"{self.name}=={self.version}"

    def requirement(self) -> str:
        """The entry as a requirements-file line, hashes included (pip/uv hash-checking mode)."""
        head = self.pin + (f" ; {self.marker}" if self.marker else "")
        return " \\\n    ".join([head, *(f"--hash={h}" for h in self.hashes)])


_HASH = re.compile(r"--hash=(sha256:[0-9a-f]{64})")


def read_lock(lock: Path = LOCK_FILE, require_hashes: bool = True) -> dict[str, LockedPin]:
    """The entries of ``lock`` (uv's ``--generate-hashes`` format: ``name==version \\`` then
    ``--hash=sha256:...`` continuation lines), by canonical name.

    Raises ``ConfigError`` naming the file and line of an entry that is not ``name==version``,
    or (with ``require_hashes``) has no sha256 hash.
    """
    from packaging.requirements import InvalidRequirement, Requirement
    from packaging.utils import canonicalize_name

    entries: list[tuple[int, str]] = []
    pending: list[str] = []
    start = 0
    for number, raw in enumerate(lock.read_text().splitlines(), 1):
        text = raw.split(" #", 1)[0].strip() if not raw.lstrip().startswith("#") else ""
        if not pending:
            start = number
        if text.endswith("\\"):
            pending.append(text[:-1])
            continue
        pending.append(text)
        joined = " ".join(part.strip() for part in pending if part.strip())
        pending = []
        if joined:
            entries.append((start, joined))
    pins: dict[str, LockedPin] = {}
    for number, entry in entries:
        where = f"{lock}:{number}"
        spec, _, options = entry.partition(" --")
        options = f"--{options}" if options else ""
        hashes = tuple(_HASH.findall(options))
        if len(hashes) != len(options.split()):
            raise ConfigError(f"{where}: only --hash=sha256:<64 hex> options may follow a pin, "
                              f"got {options[:120]!r}")
        try:
            req = Requirement(spec)
        except InvalidRequirement as exc:
            raise ConfigError(f"{where}: expected name==version, got {spec!r} ({exc})") from exc
        specs = list(req.specifier)
        if len(specs) != 1 or specs[0].operator != "==" or req.url or req.extras:
            raise ConfigError(f"{where}: expected name==version, got {spec!r}")
        if require_hashes and not hashes:
            raise ConfigError(f"{where}: {req.name}=={specs[0].version} has no --hash: the lock "
                              "must carry the sha256 of every pin (regenerate it: make lock)")
        pins[canonicalize_name(req.name)] = LockedPin(req.name, specs[0].version, hashes,
                                                      str(req.marker or ""), number)
    if not pins:
        raise ConfigError(f"{lock}: expected name==version lines")
    return pins


def lock_pins(lock: Path = LOCK_FILE) -> list[str]:
    """The ``name==version`` of every entry of the lock (each with its hashes)."""
    return [entry.pin for entry in read_lock(lock).values()]
