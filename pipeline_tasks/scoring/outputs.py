"""What a scoring attempt writes, staged out of sight and then published at once.

An attempt writes everything under its own folder in ``scores/_staging/<model>/<interval>/``:
the scores as ``part-00000.parquet, ...`` (``batch_part_rows`` rows each), ``_rejects.parquet``
(every rejected row with its reason) and ``_summary.json`` in ``partition/``, and one
prediction-log file per day of the rows' event times in ``predictions/``. Parquet is written a
chunk at a time (one row group per chunk), so nothing holds the table.

``publish`` then makes it visible: the partition folder replaces the interval's old one by
renames (readers see the old partition or the new one, never a mix; on an object store, where a
folder cannot be renamed, ``_summary.json`` is written last and marks a complete partition), and
each prediction-log file replaces the interval's file of that day under its fixed name
(``layout.batch_predictions_file``), so a re-run of the interval replaces its rows instead of
adding to them. An attempt that dies leaves only its staging folder, which the next attempt
removes.
"""

from __future__ import annotations

import logging
import os
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pipeline_tasks.core import layout, storage

if TYPE_CHECKING:
    import pyarrow as pa

    from pipeline_tasks.core.config import PipelineConfig

log = logging.getLogger(__name__)


class _Writer:
    """A Parquet file written a table at a time through fsspec."""

    def __init__(self, uri: str, schema: pa.Schema):
        import pyarrow.parquet as pq

        self.uri = uri
        fs, path = storage.url_to_fs(uri)
        fs.makedirs(path.rpartition("/")[0], exist_ok=True)
        self._handle = fs.open(path, "wb")
        self._writer = pq.ParquetWriter(self._handle, schema, compression="snappy")
        self.rows = 0

    def write(self, table: pa.Table) -> None:
        self._writer.write_table(table)
        self.rows += table.num_rows

    def close(self) -> None:
        self._writer.close()
        self._handle.close()


@dataclass
class Staging:
    """One attempt's staged output (see the module docstring)."""

    config: PipelineConfig
    model_name: str
    key: str
    part_rows: int
    root: str = ""
    parts: list[str] = field(default_factory=list)
    days: dict[str, str] = field(default_factory=dict)  # day -> staged prediction-log file
    _part: _Writer | None = None
    _rejects: _Writer | None = None
    _predlog: dict[str, _Writer] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.root = storage.join(layout.scores_staging(self.config, self.model_name, self.key),
                                 f"attempt-{os.getpid()}-{uuid.uuid4().hex[:12]}")

    @property
    def partition(self) -> str:
        return storage.join(self.root, "partition")

    def sweep(self) -> list[str]:
        """Remove what earlier attempts of this interval left (the caller holds the interval's
        lock, so none of them is still writing)."""
        fs, path = storage.url_to_fs(layout.scores_staging(self.config, self.model_name,
                                                            self.key))
        if not fs.exists(path):
            return []
        left = [p for p in fs.ls(path, detail=False) if p.rstrip("/") != self.root]
        for stale in left:
            fs.rm(stale, recursive=True)
        if left:
            log.warning("removed %d unfinished scoring attempt(s) of this interval: %s",
                        len(left), ", ".join(p.rsplit("/", 1)[-1] for p in left))
        return left

    # -- writing -----------------------------------------------------------------------------
    def write_scores(self, table: pa.Table) -> None:
        offset = 0
        while offset < table.num_rows:
            if self._part is None or self._part.rows >= self.part_rows:
                self._roll(table.schema)
            room = self.part_rows - self._part.rows
            piece = table.slice(offset, room)
            self._part.write(piece)
            offset += piece.num_rows

    def _roll(self, schema: pa.Schema) -> None:
        if self._part is not None:
            self._part.close()
        uri = storage.join(self.partition, f"part-{len(self.parts):05d}.parquet")
        self._part = _Writer(uri, schema)
        self.parts.append(uri)

    def write_rejects(self, table: pa.Table) -> None:
        if self._rejects is None:
            self._rejects = _Writer(storage.join(self.partition, layout.SCORES_REJECTS),
                                    table.schema)
        if table.num_rows:
            self._rejects.write(table)

    def write_predictions(self, day: str, table: pa.Table) -> None:
        writer = self._predlog.get(day)
        if writer is None:
            uri = storage.join(self.root, "predictions", f"{day}.parquet")
            writer = self._predlog[day] = _Writer(uri, table.schema)
            self.days[day] = uri
        writer.write(table)

    def close(self, *, scores_schema: pa.Schema, rejects_schema: pa.Schema) -> None:
        """Close every file; a run with no scored (or no rejected) rows still gets a valid
        empty file, so readers need no special case."""
        if self._part is None:
            self._roll(scores_schema)
        if self._rejects is None:
            self.write_rejects(rejects_schema.empty_table())
        for writer in (self._part, self._rejects, *self._predlog.values()):
            writer.close()

    def write_summary(self, summary: dict[str, Any]) -> str:
        uri = storage.join(self.partition, layout.SCORES_SUMMARY)
        storage.atomic_write_json(uri, summary)
        return uri

    def discard(self) -> None:
        fs, path = storage.url_to_fs(self.root)
        if fs.exists(path):
            fs.rm(path, recursive=True)

    # -- publishing ---------------------------------------------------------------------------
    def publish(self, final: str, predictions: dict[str, str], stale: list[str]) -> None:
        """Make the staged partition the interval's partition ``final`` and each staged
        prediction-log file its final name (``predictions``: day -> URI); remove the
        prediction-log files of the interval's previous run that this one did not rewrite."""
        fs, final_path = storage.url_to_fs(final)
        _, staged = storage.url_to_fs(self.partition)
        fs.makedirs(final_path.rpartition("/")[0], exist_ok=True)
        if storage.is_local(final):
            old = None
            if os.path.exists(final_path):
                old = f"{storage.local_path(self.root)}/replaced"
                os.rename(final_path, old)
            os.rename(staged, final_path)  # one rename: the whole partition appears at once
            if old:
                import shutil

                shutil.rmtree(old, ignore_errors=True)
        else:  # an object store: copy the files, the summary last (it marks a complete partition)
            if fs.exists(final_path):
                fs.rm(final_path, recursive=True)
            for name in fs.ls(staged, detail=False):
                if not name.endswith(layout.SCORES_SUMMARY):
                    fs.mv(name, f"{final_path}/{name.rsplit('/', 1)[-1]}")
            fs.mv(f"{staged}/{layout.SCORES_SUMMARY}", f"{final_path}/{layout.SCORES_SUMMARY}")
        for day, target in predictions.items():
            _, target_path = storage.url_to_fs(target)
            fs.makedirs(target_path.rpartition("/")[0], exist_ok=True)
            _, src = storage.url_to_fs(self.days[day])
            if storage.is_local(target):
                os.replace(src, target_path)  # atomic: the old file or the new one
            else:
                fs.mv(src, target_path)
        for uri in stale:
            if uri not in predictions.values():
                sfs, spath = storage.url_to_fs(uri)
                if sfs.exists(spath):
                    sfs.rm(spath)
        self.discard()
