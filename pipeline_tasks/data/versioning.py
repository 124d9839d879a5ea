"""Version: a content-addressed, immutable snapshot of a validated dataset, with lineage.

The version id is the sha256 of the data's content (column names, dtypes and every value, in
order), not of the file's bytes, so the same data gives the same id whatever wrote the file.
Layout under ``lake/snapshots/<version_id>/``:

- ``data.parquet``: the rows;
- ``manifest.json``: schema, rows, source, interval, validation result. Written last, so a
  snapshot without a manifest is incomplete and is never returned;
- ``lineage/<run>.json``: one record per run that produced this same content.

Whatever reads a snapshot back (``read_snapshot``: version reuse, training, the drift reference)
hashes it again: a file whose content no longer matches its id (bit rot, a hand edit) is refused
by name (``CorruptSnapshotError``), never used as if it were the data the id names.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from pipeline_tasks.core import layout, storage
from pipeline_tasks.core.errors import PipelineInputError
from pipeline_tasks.core.results import XComResult

if TYPE_CHECKING:
    import pandas as pd

    from pipeline_tasks.core.config import PipelineConfig

log = logging.getLogger(__name__)

_SHA256_HEX = frozenset("0123456789abcdef")


class CorruptSnapshotError(PipelineInputError):
    """A stored snapshot's rows no longer hash to its id (or cannot be read at all)."""


@dataclass(frozen=True)
class DatasetVersion(XComResult):
    version_id: str
    uri: str
    data_uri: str
    manifest_uri: str
    rows: int
    columns: list[str]
    created: bool  # False when the same content was already snapshotted
    # the suite the data passed (``ValidationResult.suite_ref``): it travels on to the model
    # version and becomes the next run's suite (set by the ``version`` stage)
    suite_uri: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


def content_hash(df: pd.DataFrame) -> str:
    """sha256 over column names, dtypes and row values (index ignored)."""
    import pandas as pd

    digest = hashlib.sha256()
    for name, dtype in df.dtypes.items():
        digest.update(f"{name}\x1f{dtype}\x1e".encode())
    digest.update(pd.util.hash_pandas_object(df, index=False).values.tobytes())
    return digest.hexdigest()


def snapshot_dataset(
    data_uri: str,
    *,
    config: PipelineConfig,
    run_key: str,
    source: str,
    interval: dict[str, Any],
    validation: dict[str, Any],
    lineage: dict[str, Any] | None = None,
) -> DatasetVersion:
    """Snapshot the validated data at ``data_uri``; reuse the existing snapshot of equal content."""
    df = storage.read_parquet(data_uri)
    version_id = content_hash(df)
    root = layout.snapshot_dir(config, version_id)
    data_out = layout.snapshot_data(config, version_id)
    manifest_uri = layout.snapshot_manifest(config, version_id)
    created = not storage.exists(manifest_uri)
    if created:
        storage.atomic_write_parquet(df, data_out)
        manifest = {
            "version_id": version_id,
            "hash": "sha256 of column names, dtypes and pandas row hashes",
            "rows": len(df),
            "schema": {str(c): str(t) for c, t in df.dtypes.items()},
            "source": source,
            "interval": interval,
            "validation": validation,
            "raw_uri": data_uri,
            "first_run": run_key,
            "lineage": lineage or {},
        }
        storage.atomic_write_json(manifest_uri, manifest)
        log.info("new dataset version %s (%d rows)", version_id[:12], len(df))
    else:
        try:
            verify_snapshot_file(data_out, version_id)
            log.info("dataset version %s already exists; no second copy", version_id[:12])
        except CorruptSnapshotError as exc:
            # this batch is the content the id names: write it back, loudly
            log.error("%s; rewriting it from this run's batch %s, which hashes to the id",
                      exc, data_uri)
            storage.atomic_write_parquet(df, data_out)
            verify_snapshot_file(data_out, version_id)
    record = {"run": run_key, "source": source, "interval": interval, "raw_uri": data_uri,
              "lineage": lineage or {}, "validation_success": validation.get("success")}
    storage.atomic_write_json(layout.snapshot_lineage_record(config, version_id, run_key), record)
    return DatasetVersion(
        version_id=version_id,
        uri=root,
        data_uri=data_out,
        manifest_uri=manifest_uri,
        rows=len(df),
        columns=[str(c) for c in df.columns],
        created=created,
    )


def snapshot_data_uri(version_id: str, config: PipelineConfig) -> str:
    """The rows of a complete snapshot (one with a manifest), or FileNotFoundError."""
    load_manifest(version_id, config)
    return layout.snapshot_data(config, version_id)


def is_version_id(value: str) -> bool:
    """A content id (64 lowercase hex digits), as ``content_hash`` makes."""
    return len(value) == 64 and set(value) <= _SHA256_HEX


def verify_snapshot_file(data_uri: str, version_id: str) -> pd.DataFrame:
    """The rows at ``data_uri``, checked to still hash to ``version_id``."""
    try:
        df = storage.read_parquet(data_uri)
    except (OSError, ValueError) as exc:  # pyarrow's errors are both
        raise CorruptSnapshotError(f"snapshot {data_uri} cannot be read ({exc}): it is not the "
                                   f"data of dataset version {version_id}") from exc
    found = content_hash(df)
    if found != version_id:
        raise CorruptSnapshotError(
            f"snapshot {data_uri} is corrupt: its rows hash to {found[:12]}, not to its id "
            f"{version_id[:12]}. Restore the file from a backup or re-ingest the interval; "
            "nothing was trained on it")
    return df


def read_snapshot(version_id: str, config: PipelineConfig) -> pd.DataFrame:
    """The rows of dataset version ``version_id``, verified against the id."""
    return verify_snapshot_file(snapshot_data_uri(version_id, config), version_id)


def load_manifest(version_id: str, config: PipelineConfig) -> dict[str, Any]:
    """The manifest of a snapshot, or FileNotFoundError if the version does not exist."""
    uri = layout.snapshot_manifest(config, version_id)
    if not storage.exists(uri):
        raise FileNotFoundError(f"dataset version {version_id} not found at {uri}")
    return storage.read_json(uri)
