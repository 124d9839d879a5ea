"""Score one data interval of a source with one registered model version.

``resolve_model`` turns the run's ``model_ref`` (an alias such as ``champion``, or a version
number) into a version once, at the start of the run; every later step scores with that
version, even if the alias moves meanwhile. ``score_interval`` then

1. loads the version the way the model server does (files checked against the digest recorded at
   registration, a trusted skops model only) and reads its input signature and its validation
   suite (the ``validation.suite_uri`` the version was trained with);
2. checks every file's columns against the signature before any row is scored
   (``reader.check_columns``): a missing or retyped input fails the run naming the column;
3. streams the source a chunk at a time: each chunk's rows are sorted (``rows.sort_rows``), the
   accepted ones scored (``serving.predictor.ChunkPredictor``: the model's own predictions, bit
   for bit), and the scores, the rejects and the prediction-log rows written to the attempt's
   staging folder (``outputs.Staging``) in the source's order; up to ``scoring_threads()`` chunks are
   checked and scored at once while this thread reads and writes;
4. fails, publishing nothing, when rejected rows exceed ``max_reject_share`` of the rows (the
   rejects and the summary are kept in the run's quarantine folder to look at); otherwise
   publishes the partition ``lake/scores/<model>/interval_end=<key>/`` and the prediction-log
   files at once.

The interval's lock is held throughout, so two runs of one interval never interleave; a re-run
replaces the partition and the prediction-log rows of the interval exactly.
"""

from __future__ import annotations

import logging
import tempfile
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from pipeline_tasks.core import layout, storage
from pipeline_tasks.core.errors import PipelineInputError
from pipeline_tasks.core.names import safe_name
from pipeline_tasks.core.results import XComResult
from pipeline_tasks.scoring.reader import BatchInputError, Needed, Source

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd
    import pyarrow as pa

    from pipeline_tasks.core.config import PipelineConfig
    from pipeline_tasks.serving.model import ServedModel

log = logging.getLogger(__name__)

#: How long a run waits for another run of the same interval to finish scoring.
LOCK_TIMEOUT_S = 4 * 3600.0
#: Most chunks scored at once (threads; each holds a chunk and its outputs in memory).
MAX_THREADS = 4


class TooManyRejects(PipelineInputError):
    """More rows were rejected than ``batch_max_reject_share`` allows: nothing was published;
    ``result`` says where the rejects were kept."""

    def __init__(self, message: str, result: dict | None = None, advice: str | None = None):
        super().__init__(message, advice=advice)
        self.result = result or {}


@dataclass(frozen=True)
class ScoringModel(XComResult):
    """The model version a batch run scores with, resolved once when the run starts."""

    model_name: str
    version: str
    ref: str
    model_run_id: str
    artifact_sha256: str
    resolved_at: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class BatchScoreResult(XComResult):
    """What a batch run scored and where it put it (small: it travels by XCom)."""

    model_name: str
    model_version: str
    run_id: str
    interval_start: str
    interval_end: str
    interval_key: str
    scores_uri: str
    summary_uri: str
    rejects_uri: str
    rows_read: int
    rows_scored: int
    rows_rejected: int
    reject_share: float
    rows_outside_interval: int = 0
    reject_reasons: dict[str, int] = field(default_factory=dict)
    parts: list[str] = field(default_factory=list)
    prediction_log_files: list[str] = field(default_factory=list)
    source: str = ""
    files: list[str] = field(default_factory=list)
    task_type: str = ""
    classes: list | None = None
    seconds: float = 0.0
    status: str = "published"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def rows_per_s(self) -> float:
        return self.rows_read / self.seconds if self.seconds else 0.0


def resolve_model(model_name: str, ref: str, config: PipelineConfig) -> ScoringModel:
    """The version ``ref`` (alias or number) of ``model_name`` names now."""
    return _scoring_model(model_name, ref, _registered_version(model_name, ref, config))


@dataclass(frozen=True)
class FetchedModel:
    """A resolved version whose files were downloaded into ``folder`` and checked against its
    recorded digest (``fetch_model``); ``tags`` are the version's."""

    scoring: ScoringModel
    folder: str
    tags: dict[str, str]


def fetch_model(model_name: str, ref: str, config: PipelineConfig, dest: str) -> FetchedModel:
    """Resolve ``ref`` of ``model_name`` (as ``resolve_model``) and download the version's files
    into ``dest``, checked against the digest recorded at registration. Only the registry and
    the artifact store are touched (no model is loaded): ``load_fetched`` loads it."""
    from pipeline_tasks.core import model_artifacts

    mv = _registered_version(model_name, ref, config)
    scoring = _scoring_model(model_name, ref, mv)
    folder = model_artifacts.fetch_verified(
        f"models:/{model_name}/{scoring.version}", scoring.artifact_sha256,
        f"{dest}/{safe_name(model_name, 'model')}-v{scoring.version}",
        label=f"model {model_name} v{scoring.version}")
    return FetchedModel(scoring=scoring, folder=str(folder), tags=dict(mv.tags or {}))


def load_fetched(fetched: FetchedModel, config: PipelineConfig) -> ServedModel:
    """The model of a ``fetch_model`` folder, loaded as the server loads it (its files checked
    again against the digest, a trusted skops model only)."""
    from pipeline_tasks.serving import model as serving_model

    scoring = fetched.scoring
    return serving_model.load_dir(config, fetched.folder, scoring.artifact_sha256,
                                  {"model_name": scoring.model_name,
                                   "model_version": scoring.version,
                                   "run_id": scoring.model_run_id, "tags": fetched.tags})


def _registered_version(model_name: str, ref: str, config: PipelineConfig):
    from pipeline_tasks.core import tracking
    from pipeline_tasks.core.errors import ConfigError
    from pipeline_tasks.serving.model import resolve_version

    tracking.configure_mlflow(config)
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    try:
        return resolve_version(MlflowClient(), model_name, ref)
    except MlflowException as exc:  # the registry itself did not answer
        from pipeline_tasks.core.errors import TransientError

        raise TransientError(f"the model registry did not answer for {model_name!r}: "
                             f"{type(exc).__name__}") from exc
    except ConfigError as exc:
        raise BatchInputError(str(exc), advice="Train the model first, or name a version or "
                                               "alias it has.") from exc


def _scoring_model(model_name: str, ref: str, mv) -> ScoringModel:
    from pipeline_tasks.core.model_artifacts import DIGEST_TAG

    log.info("batch scoring uses %s v%s (%s)", model_name, mv.version, ref)
    return ScoringModel(model_name=model_name, version=str(mv.version), ref=str(ref),
                        model_run_id=mv.run_id or "",
                        artifact_sha256=(mv.tags or {}).get(DIGEST_TAG, ""),
                        resolved_at=datetime.now(UTC).isoformat())


def _suite(served: ServedModel, config: PipelineConfig) -> dict | None:
    """The validation suite the version was trained with (its JSON), or None."""
    from pipeline_tasks.core.schema import SUITE_TAG
    from pipeline_tasks.data.suites_io import resolve_suite_ref

    ref = served.tags.get(SUITE_TAG)
    if not ref:
        log.warning("%s v%s records no validation suite: only its signature's rules apply",
                    served.name, served.version)
        return None
    uri = resolve_suite_ref(ref, config)
    if not storage.exists(uri):
        raise BatchInputError(f"{served.name} v{served.version} was validated against the suite "
                              f"{uri}, which no longer exists",
                              advice="Restore the suite file, or score with another version.")
    return storage.read_json(uri)


class _Schemas:
    """The Arrow schemas of the outputs, fixed by the model (so every chunk writes alike)."""

    def __init__(self, served: ServedModel, *, has_time: bool):
        import pyarrow as pa

        from pipeline_tasks.serving.predlog import META_COLUMNS

        #: the Arrow type each input kind is stored as (an integer input as float64: nulls)
        self.kinds = kinds = {"float": pa.float64(), "int": pa.float64(), "str": pa.string(),
                              "bool": pa.bool_(), "datetime": pa.timestamp("us", tz="UTC")}
        inputs = served.contract.columns
        clash = {c.name for c in inputs} & set(META_COLUMNS)
        #: the prediction log's names of the inputs (``feature_`` prefixed on a clash, as online)
        self.logged_names = {c.name: (f"feature_{c.name}" if clash else c.name) for c in inputs}
        features = [pa.field(self.logged_names[c.name], kinds[c.kind]) for c in inputs]
        self.classes = served.classes
        label = _label_type(self.classes)
        self.proba_names = _proba_names(self.classes) if self.classes else []
        self.scores = pa.schema(
            [pa.field("row_id", pa.string()), pa.field("prediction", label)]
            + [pa.field(n, pa.float64()) for n in self.proba_names]
            + ([pa.field("event_time", pa.timestamp("us", tz="UTC"))] if has_time else [])
            + [pa.field("model_name", pa.string()), pa.field("model_version", pa.string()),
               pa.field("run_id", pa.string())])
        self.rejects = pa.schema([pa.field("row_id", pa.string()), pa.field("reason", pa.string()),
                                  *[pa.field(c.name, kinds[c.kind]) for c in inputs]])
        self.predictions = pa.schema(
            features + [pa.field("request_id", pa.string()), pa.field("row_id", pa.string()),
                        pa.field("predicted_at", pa.timestamp("us", tz="UTC")),
                        pa.field("event_time", pa.timestamp("us", tz="UTC")),
                        pa.field("model_name", pa.string()),
                        pa.field("model_version", pa.string()), pa.field("prediction", label)]
            + ([pa.field("score", pa.float64())] if self.classes and len(self.classes) == 2
               else []))


def _label_type(classes: list | None):
    import pyarrow as pa

    if not classes:
        return pa.float64()
    if all(isinstance(c, bool) for c in classes):
        return pa.bool_()
    if all(isinstance(c, int) and not isinstance(c, bool) for c in classes):
        return pa.int64()
    if all(isinstance(c, (int, float)) and not isinstance(c, bool) for c in classes):
        return pa.float64()
    return pa.string()


def _proba_names(classes: list) -> list[str]:
    """``proba_<class>`` per class, as safe, distinct, lower-case column names (plain SQL
    identifiers too: ``proba_true``, ``proba_0``)."""
    names, seen = [], set()
    for cls in classes:
        label = safe_name(str(cls), "class").replace("-", "_").replace(".", "_")[:50]
        base = "proba_" + label.lower()
        name, n = base, 1
        while name in seen:
            n += 1
            name = f"{base}_{n}"
        seen.add(name)
        names.append(name)
    return names


def score_interval(source: str, *, model: ScoringModel, interval_start: str, interval_end: str,
                   config: PipelineConfig, dag_id: str, run_id: str,
                   sql_url: str | None = None, id_column: str | None = None,
                   time_column: str | None = None, chunk_rows: int | None = None,
                   max_reject_share: float | None = None,
                   served: ServedModel | None = None) -> BatchScoreResult:
    """Score ``source``'s rows of ``[interval_start, interval_end)`` with ``model`` and publish
    them (see the module docstring). ``served``: ``model`` already loaded (``load_fetched``),
    else it is loaded here."""
    from pipeline_tasks.core.locks import named_lock
    from pipeline_tasks.data.ingest import as_utc

    started = time.perf_counter()
    if not source or not str(source).strip():
        raise BatchInputError("source is empty: give a file, folder or glob URI, or a SQL query")
    start, end = as_utc(interval_start), as_utc(interval_end)
    key = layout.interval_key(end.isoformat())
    chunk_rows = int(chunk_rows or config.batch_chunk_rows)
    share = config.batch_max_reject_share if max_reject_share is None else float(max_reject_share)
    with tempfile.TemporaryDirectory(prefix="mlops-batch-") as workdir:
        served = _checked(model, served or _load(model, config, workdir))
        rules = _rules(served, config)
        with named_lock(config, f"batch-scores-{model.model_name}-{key}", LOCK_TIMEOUT_S):
            return _score_locked(
                source, served=served, rules=rules, start=start, end=end, key=key,
                config=config, dag_id=dag_id, run_id=run_id, sql_url=sql_url,
                id_column=id_column or None, time_column=time_column or None,
                chunk_rows=chunk_rows, max_share=share, started=started)


def _load(model: ScoringModel, config: PipelineConfig, workdir: str) -> ServedModel:
    from pipeline_tasks.serving import model as serving_model

    return serving_model.load(config, model.model_name, model.version, workdir)


def _checked(model: ScoringModel, served: ServedModel) -> ServedModel:
    """``served`` if it is the version ``model`` resolved, with the same files."""
    if served.name != model.model_name or served.version != model.version:
        raise BatchInputError(f"the loaded model is {served.name} v{served.version}, not the "
                              f"{model.model_name} v{model.version} the run resolved")
    if model.artifact_sha256 and served.digest != model.artifact_sha256:
        raise BatchInputError(f"{model.model_name} v{model.version}: its files changed since "
                              f"the run resolved it (sha256 {served.digest[:16]} is not "
                              f"{model.artifact_sha256[:16]})")
    return served


def _rules(served: ServedModel, config: PipelineConfig):
    from pipeline_tasks.scoring.rows import row_rules

    return row_rules(_suite(served, config), {c.name for c in served.contract.columns})


def _score_locked(source: str, *, served: ServedModel, rules, start: datetime, end: datetime,
                  key: str, config: PipelineConfig, dag_id: str, run_id: str,
                  sql_url: str | None, id_column: str | None, time_column: str | None,
                  chunk_rows: int, max_share: float, started: float) -> BatchScoreResult:
    from pipeline_tasks.data.ingest import detect_time_column
    from pipeline_tasks.scoring.outputs import Staging

    inputs = served.contract.columns
    reader = Source(source, interval_start=start, interval_end=end,
                    needed=Needed(inputs, id_column, time_column), chunk_rows=chunk_rows,
                    sql_url=sql_url)
    if time_column is None and reader.files:  # the time column a training run would detect
        time_column = _detected_time_column(reader, detect_time_column)
        reader.needed = Needed(inputs, id_column, time_column)
    reader.check()  # the contract, before any row is scored
    schemas = _Schemas(served, has_time=bool(time_column))
    staging = Staging(config, served.name, key, part_rows=config.batch_part_rows)
    staging.sweep()
    counts: dict[str, int] = {}
    totals = {"read": 0, "scored": 0, "rejected": 0, "outside": 0}
    chunker = _Chunker(served, schemas, rules, config=config, run_id=run_id, start=start,
                       end=end, key=key, id_column=id_column, time_column=time_column,
                       filter_time=reader.partitioned)

    def write(out: _Scored) -> None:
        totals["read"] += out.rows_read
        totals["outside"] += out.rows_outside
        totals["scored"] += out.scores.num_rows
        totals["rejected"] += out.rejects.num_rows
        for reason, n in out.counts.items():
            counts[reason] = counts.get(reason, 0) + n
        if out.scores.num_rows:
            staging.write_scores(out.scores)
        if out.rejects.num_rows:
            staging.write_rejects(out.rejects)
        for day, rows in out.predictions:
            staging.write_predictions(day, rows)

    try:
        _score_chunks(reader, chunker, write)
        staging.close(scores_schema=schemas.scores, rejects_schema=schemas.rejects)
    except BaseException:
        staging.discard()  # nothing of this attempt stays behind (a kill leaves it for the sweep)
        raise
    if totals["read"] == 0:
        staging.discard()
        raise BatchInputError(f"source {_short(source)}: no rows to score in the interval "
                              f"[{start.isoformat()}, {end.isoformat()})")
    share = totals["rejected"] / totals["read"]
    final = layout.scores_partition(config, served.name, key)
    previous = _previous_summary(final)
    day_files = {day: layout.batch_predictions_file(config, day, served.name, key)
                 for day in staging.days}
    result = BatchScoreResult(
        model_name=served.name, model_version=served.version, run_id=run_id,
        interval_start=start.isoformat(), interval_end=end.isoformat(), interval_key=key,
        scores_uri=final, summary_uri=storage.join(final, layout.SCORES_SUMMARY),
        rejects_uri=storage.join(final, layout.SCORES_REJECTS), rows_read=totals["read"],
        rows_scored=totals["scored"], rows_rejected=totals["rejected"],
        reject_share=round(share, 6), rows_outside_interval=totals["outside"],
        reject_reasons=dict(sorted(counts.items(), key=lambda kv: -kv[1])),
        parts=[storage.join(final, p.rsplit("/", 1)[-1]) for p in staging.parts],
        prediction_log_files=sorted(day_files.values()), source=_short(source, 300),
        files=reader.files, task_type="classification" if served.classes else "regression",
        classes=served.classes, seconds=round(time.perf_counter() - started, 3))
    if share > max_share:
        return _quarantine(staging, result, config, dag_id, max_share)
    staging.write_summary({**result.to_dict(), "dag_id": dag_id,
                           "model_run_id": served.run_id,
                           "published_at": datetime.now(UTC).isoformat()})
    staging.publish(final, day_files, stale=(previous or {}).get("prediction_log_files") or [])
    log.info("scored %d rows of %s with %s v%s in %.1f s (%.0f rows/s): %d rejected, "
             "published %s", result.rows_read, _short(source), served.name, served.version,
             result.seconds, result.rows_per_s, result.rows_rejected, final)
    return result


def scoring_threads() -> int:
    """Chunks scored at once: one per CPU this process may use, at most ``MAX_THREADS``."""
    import os

    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        cpus = os.cpu_count() or 1
    return max(1, min(MAX_THREADS, cpus))


def _score_chunks(reader: Source, chunker: _Chunker, write) -> None:
    """Score the reader's chunks on ``scoring_threads()`` threads and ``write`` the results in
    the source's order from this thread.

    The thread that reads also writes (both mostly in pyarrow, without the GIL), while the
    workers check, predict and shape up to ``threads`` chunks at once; the model's trees release
    the GIL, so the chunks' predictions run in parallel. Each worker's OpenMP team is one thread
    (``predictor.one_openmp_thread``). Row ids are numbered here, in order, so the result does
    not depend on which worker finishes first. About ``threads + 2`` chunks are in memory.
    """
    from collections import deque
    from concurrent.futures import ThreadPoolExecutor

    from pipeline_tasks.serving.predictor import one_openmp_thread

    threads = scoring_threads()
    first_row = 0
    pending: deque = deque()
    pool = ThreadPoolExecutor(threads, thread_name_prefix="batch-score",
                              initializer=one_openmp_thread)
    try:
        for origin, batch in reader.batches():
            pending.append(pool.submit(chunker.score, origin, batch, first_row))
            first_row += batch.num_rows
            while len(pending) > threads or (pending and pending[0].done()):
                write(pending.popleft().result())
        while pending:
            write(pending.popleft().result())
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _detected_time_column(reader: Source, detect) -> str | None:
    """The time column a training run would use: a timestamp column, else a conventional name."""
    import pyarrow as pa

    schema = reader._schema(reader.files[0])
    for name in schema.names:
        if pa.types.is_timestamp(schema.field(name).type):
            return name
    import pandas as pd

    return detect(pd.DataFrame(columns=schema.names))


def _previous_summary(final: str) -> dict | None:
    uri = storage.join(final, layout.SCORES_SUMMARY)
    try:
        return storage.read_json(uri) if storage.exists(uri) else None
    except (OSError, ValueError):
        return None


def _quarantine(staging, result: BatchScoreResult, config: PipelineConfig, dag_id: str,
                max_share: float):
    """Keep the rejects and the summary of a run that rejected too much, publish nothing."""
    run_key = layout.run_partition(dag_id, result.run_id, result.interval_end)
    rejects = layout.quarantine_file(config, run_key, "rejects.parquet")
    summary = layout.quarantine_file(config, run_key, "batch_summary.json")
    storage.copy(storage.join(staging.partition, layout.SCORES_REJECTS), rejects)
    from dataclasses import replace

    kept = replace(result, status="rejected", scores_uri="", parts=[], prediction_log_files=[],
                   rejects_uri=rejects, summary_uri=summary)
    storage.atomic_write_json(summary, {**kept.to_dict(), "dag_id": dag_id,
                                        "max_reject_share": max_share})
    staging.discard()
    top = next(iter(result.reject_reasons.items()), ("", 0))
    raise TooManyRejects(
        f"{result.rows_rejected} of {result.rows_read} rows ({result.reject_share:.2%}) were "
        f"rejected, more than max_reject_share {max_share:.2%}; nothing was published "
        f"(most common: {top[0]}, {top[1]} rows). Rejects: {rejects}",
        result=kept.to_dict(),
        advice="Look at the rejected rows and their reasons; fix the source, or raise "
               "'Largest share of rejected rows' for this run if they are expected.")


def _short(text: str, limit: int = 120) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _repeat(value: str, n: int) -> pa.Array:
    """``value`` ``n`` times, as an Arrow string array."""
    import pyarrow as pa

    return pa.repeat(pa.scalar(value, pa.string()), n)


@dataclass
class _Scored:
    scores: pa.Table
    rejects: pa.Table
    predictions: list[tuple[str, pa.Table]]
    counts: dict[str, int]
    rows_read: int
    rows_outside: int


class _Chunker:
    """Sorts, scores and shapes one chunk at a time."""

    def __init__(self, served: ServedModel, schemas: _Schemas, rules, *, config, run_id: str,
                 start: datetime, end: datetime, key: str, id_column: str | None,
                 time_column: str | None, filter_time: bool):
        self.served, self.schemas, self.rules = served, schemas, rules
        self.max_abs = config.serving_max_abs_value
        self.run_id, self.key = run_id, key
        self.start, self.end = start, end
        self.id_column, self.time_column, self.filter_time = id_column, time_column, filter_time
        self.predictor = served.predictor

    def score(self, origin: str, batch: pa.RecordBatch, first_row: int = 0) -> _Scored:
        """One chunk, whose first row is the source's ``first_row`` (0-based, for the row ids
        when the source has no id column). Safe to call from several threads at once."""
        import numpy as np
        import pyarrow as pa

        from pipeline_tasks.scoring.rows import sort_rows, to_frame

        n_read = batch.num_rows
        when = self._event_times(origin, batch)
        ids = self._ids(origin, batch, first_row)
        outside = 0
        if self.filter_time and self.time_column:
            inside = (when >= np.datetime64(self.start.replace(tzinfo=None), "us")) & \
                (when < np.datetime64(self.end.replace(tzinfo=None), "us"))
            outside = int((~inside).sum())
            if outside:
                keep = pa.array(inside)
                batch, when, ids = batch.filter(keep), when[inside], ids.filter(keep)
        frame = to_frame(batch, self.served.contract.columns)
        sorted_rows = sort_rows(frame, self.served.contract.columns, self.rules,
                                max_abs=self.max_abs)
        accepted = sorted_rows.accepted
        rejected = ~accepted
        rejects = self._rejects(frame[rejected], ids.filter(pa.array(rejected)),
                                sorted_rows.reasons)
        if not accepted.any():
            empty = self.schemas.scores.empty_table()
            return _Scored(empty, rejects, [], sorted_rows.counts, n_read, outside)
        labels, proba = self._predict(sorted_rows.frame)
        acc_ids = ids.filter(pa.array(accepted)) if rejected.any() else ids
        acc_when = when[accepted]
        scores = self._scores(acc_ids, acc_when, labels, proba)
        logged = self._prediction_log(frame[accepted], acc_ids, acc_when, labels, proba)
        return _Scored(scores, rejects, logged, sorted_rows.counts, n_read, outside)

    # -- pieces ------------------------------------------------------------------------------
    def _event_times(self, origin: str, batch: pa.RecordBatch) -> np.ndarray:
        """Each row's event time (UTC, numpy datetime64[us]): its time column, else the
        interval's start."""
        import numpy as np
        import pandas as pd

        if not self.time_column:
            return np.full(batch.num_rows, np.datetime64(self.start.replace(tzinfo=None), "us"))
        column = batch.column(self.time_column).to_pandas()
        if isinstance(column.dtype, pd.DatetimeTZDtype):
            parsed = column.dt.tz_convert("UTC")
        elif pd.api.types.is_datetime64_any_dtype(column):
            parsed = column.dt.tz_localize("UTC")
        else:
            parsed = pd.to_datetime(column, utc=True, errors="coerce", format="ISO8601")
        bad = parsed.isna() & column.notna()
        if bad.any() or parsed.isna().any():
            raise BatchInputError(f"{origin}: time column {self.time_column!r}: "
                                  f"{int(parsed.isna().sum())} value(s) are missing or not "
                                  "timestamps")
        return parsed.dt.tz_localize(None).to_numpy(dtype="datetime64[us]")

    def _ids(self, origin: str, batch: pa.RecordBatch, first: int) -> pa.Array:
        """Each row's id (an Arrow string array): its id column, else ``<key>-<row number>``."""
        import numpy as np
        import pyarrow as pa
        import pyarrow.compute as pc

        n = batch.num_rows
        if self.id_column:
            column = batch.column(self.id_column)
            if column.null_count:
                raise BatchInputError(f"{origin}: id column {self.id_column!r} has empty values")
            column = column.cast(pa.string())
            return column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
        numbers = pa.array(np.arange(first, first + n, dtype=np.int64)).cast(pa.string())
        return pc.binary_join_element_wise(pa.scalar(f"{self.key}-", pa.string()), numbers, "")

    def _predict(self, frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray | None]:
        import numpy as np

        model = self.predictor
        if self.served.classes is None:
            return np.asarray(model.predict(frame), dtype="float64"), None
        proba = model.predict_proba(frame)
        labels = np.asarray(self.served.classes, dtype=object)[proba.argmax(axis=1)]
        return labels, proba

    def _label_array(self, labels):
        import pyarrow as pa

        label_type = self.schemas.scores.field("prediction").type
        if pa.types.is_string(label_type):
            return pa.array([str(v) for v in labels], type=label_type)
        return pa.array(list(labels) if labels.dtype == object else labels, type=label_type)

    def _scores(self, ids, when, labels, proba) -> pa.Table:
        import pyarrow as pa

        n = len(ids)
        columns = {"row_id": ids,
                   "prediction": self._label_array(labels)}
        for i, name in enumerate(self.schemas.proba_names):
            columns[name] = pa.array(proba[:, i], type=pa.float64())
        if "event_time" in self.schemas.scores.names:
            columns["event_time"] = pa.array(when, type=pa.timestamp("us", tz="UTC"))
        columns["model_name"] = _repeat(self.served.name, n)
        columns["model_version"] = _repeat(self.served.version, n)
        columns["run_id"] = _repeat(self.run_id, n)
        return pa.Table.from_pydict(columns, schema=self.schemas.scores)

    def _features(self, frame: pd.DataFrame, names: dict[str, str] | None = None) -> dict:
        import pyarrow as pa

        kinds = self.schemas.kinds
        out = {}
        for col in self.served.contract.columns:
            values = frame[col.name]
            name = (names or {}).get(col.name, col.name)
            out[name] = pa.array(values.to_numpy() if col.kind != "str" else values,
                                 type=kinds[col.kind], from_pandas=True)
        return out

    def _rejects(self, frame: pd.DataFrame, ids, reasons) -> pa.Table:
        import pyarrow as pa

        if not len(frame):
            return self.schemas.rejects.empty_table()
        columns = {"row_id": ids,
                   "reason": pa.array(reasons, type=pa.string()), **self._features(frame)}
        return pa.Table.from_pydict(columns, schema=self.schemas.rejects)

    def _prediction_log(self, frame: pd.DataFrame, ids, when, labels, proba):
        import numpy as np
        import pyarrow as pa

        n = len(ids)
        now = np.datetime64(datetime.now(UTC).replace(tzinfo=None), "us")
        columns = self._features(frame, self.schemas.logged_names)
        columns.update({
            "request_id": _repeat(self.run_id, n),
            "row_id": ids,
            "predicted_at": pa.array(np.full(n, now), type=pa.timestamp("us", tz="UTC")),
            "event_time": pa.array(when, type=pa.timestamp("us", tz="UTC")),
            "model_name": _repeat(self.served.name, n),
            "model_version": _repeat(self.served.version, n),
            "prediction": self._label_array(labels),
        })
        if "score" in self.schemas.predictions.names:
            columns["score"] = pa.array(proba[:, 1], type=pa.float64())
        table = pa.Table.from_pydict(columns, schema=self.schemas.predictions)
        days = when.astype("datetime64[D]")
        unique = np.unique(days)
        if len(unique) == 1:
            return [(str(unique[0]), table)]
        return [(str(day), table.filter(pa.array(days == day))) for day in unique]
