"""What monitoring reads: the served model version (from its registry lineage tags), the champion,
the version's training snapshot (the reference), the prediction log of an interval, and a CSV or
Parquet file given by the operator (``current`` data or labels).

The reference is always the training snapshot of the version that served the rows, found through
its ``dataset_version`` tag, never "the latest file".
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from pipeline_tasks.core import layout, storage, tracking
from pipeline_tasks.core.errors import PipelineInputError

if TYPE_CHECKING:
    import pandas as pd

    from pipeline_tasks.core.config import PipelineConfig

log = logging.getLogger(__name__)


class MonitoringInputError(PipelineInputError):
    """Monitoring inputs that cannot be used (a corrupt log file, labels without a key...)."""


# ------------------------------------------------------------------------------- served version

@dataclass(frozen=True)
class ServedVersion:
    """What monitoring needs to know of a registered model version, from its lineage tags."""

    model_name: str
    version: str
    run_id: str
    dataset_version: str
    target: str
    task_type: str
    feature_columns: list[str]
    primary_metric: str
    offline_metric: float | None
    source: str


def served_version(model_name: str, version: str, config: PipelineConfig) -> ServedVersion:
    """The lineage of ``model_name`` v``version`` that monitoring needs (see ``ServedVersion``)."""
    tracking.configure_mlflow(config)
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    from pipeline_tasks.deploy.bluegreen import version_inputs

    client = MlflowClient()
    try:
        mv = client.get_model_version(model_name, str(version))
    except MlflowException as exc:
        raise MonitoringInputError(f"model {model_name!r} has no version {version!r} in the "
                                   "registry") from exc
    run = client.get_run(mv.run_id)
    tags, params = run.data.tags, run.data.params
    dataset_version = mv.tags.get("dataset_version") or tags.get("dataset_version")
    if not dataset_version:
        raise MonitoringInputError(f"{model_name} v{version} has no dataset_version tag: its "
                                   "training snapshot cannot be found")
    value = mv.tags.get("primary_metric_value")
    return ServedVersion(
        model_name=model_name, version=str(version), run_id=mv.run_id,
        dataset_version=dataset_version, target=tags.get("target") or params.get("target", ""),
        task_type=tags.get("task_type") or params.get("task_type", ""),
        feature_columns=version_inputs(model_name, str(version), config)[1],
        primary_metric=mv.tags.get("primary_metric") or params.get("primary_metric", ""),
        offline_metric=float(value) if value else None, source=mv.tags.get("source", ""))


def champion_source(model_name: str, config: PipelineConfig) -> str | None:
    """The source the champion was trained on (its ``source`` tag), or None (no champion)."""
    version = champion_version(model_name, config)
    if version is None:
        return None
    from mlflow.tracking import MlflowClient

    return MlflowClient().get_model_version(model_name, version).tags.get("source") or None


def champion_version(model_name: str, config: PipelineConfig) -> str | None:
    """The version the ``champion`` alias points at, or None."""
    tracking.configure_mlflow(config)
    from mlflow.tracking import MlflowClient

    from pipeline_tasks.model.registry import current_champion

    return current_champion(model_name, MlflowClient())


def reference_frame(served: ServedVersion, config: PipelineConfig) -> pd.DataFrame:
    """The training snapshot of ``served`` (the data its model was fitted and checked on)."""
    from pipeline_tasks.data.versioning import read_snapshot

    try:
        return read_snapshot(served.dataset_version, config)
    except FileNotFoundError as exc:
        raise MonitoringInputError(f"{served.model_name} v{served.version}: {exc}") from exc


# ---------------------------------------------------------------------------- current traffic

def interval_days(start: datetime, end: datetime) -> list[str]:
    """The days (``YYYY-MM-DD``) that [start, end) touches, in order."""
    day, days = start.date(), []
    while datetime(day.year, day.month, day.day, tzinfo=UTC) < end:
        days.append(day.isoformat())
        day += timedelta(days=1)
    return days


def read_prediction_log(config: PipelineConfig, model_name: str, start: datetime,
                        end: datetime) -> pd.DataFrame:
    """The logged predictions of ``model_name`` with ``start <= event_time < end``.

    Only the model's partitions of the interval's days are read (``date=<day>/model=<name>``;
    files directly under ``date=<day>``, from before the log had a partition per model, too). A file that cannot be read fails the
    call with its name; nothing is deleted or moved, so the other partitions stay as they are.
    """
    import pandas as pd

    from pipeline_tasks.serving.predlog import READ_COLUMNS, read_log_file

    frames = []
    for day in interval_days(start, end):
        fs, folder = storage.url_to_fs(layout.predictions_day_dir(config, day))
        if not fs.exists(folder):
            continue
        _, own = storage.url_to_fs(layout.predictions_model_dir(config, day, model_name))
        # the model's partition, and files logged before partitions per model (filtered below)
        paths = sorted(fs.glob(own.rstrip("/") + "/*.parquet")) + sorted(
            fs.glob(folder.rstrip("/") + "/*.parquet"))
        for path in paths:
            try:
                with fs.open(path, "rb") as handle:
                    frame = read_log_file(handle)
            except Exception as exc:  # pyarrow raises several types for a damaged file
                raise MonitoringInputError(f"prediction log file {path} cannot be read "
                                           f"({type(exc).__name__}: {exc}); move it out of "
                                           "the log or restore it, then re-run") from exc
            frames.append(frame[frame["model_name"] == model_name])
    if not frames:
        return pd.DataFrame(columns=list(READ_COLUMNS))
    rows = pd.concat(frames, ignore_index=True)
    when = pd.to_datetime(rows["event_time"], utc=True)
    return rows[(when >= start) & (when < end)].reset_index(drop=True)


def read_table(uri: str) -> pd.DataFrame:
    """One CSV or Parquet file (``current`` or a labels file), read by the data package's one
    reader (``data.ingest.read_table``), its errors given as ``MonitoringInputError``."""
    from pipeline_tasks.data.ingest import read_table as read_data_table

    try:  # a header with no rows is an empty interval here (no labels yet), not an error
        return read_data_table(uri, allow_empty=True, require_suffix=True,
                               error=MonitoringInputError)
    except (OSError, ValueError) as exc:  # a store that failed under the reader
        raise MonitoringInputError(f"{uri} cannot be read: {type(exc).__name__}: {exc}") from exc
