"""Batch scoring as a process of its own: ``mlops batch-score`` (a shell, cron, a container).

The same ``score_interval`` the DAG's task runs, with the start-up a fresh Python process pays
made shorter. In an Airflow worker the libraries are imported once and each task is forked from
it (``pipeline_tasks.ops.preload``); a process of its own imports them itself, about 4 s on a
2-core machine before the first row, and its garbage collector walks every object those imports
made, over and over (about 1.5 s more on the demo model, half of it at exit). So ``score``:

- resolves the version and downloads its files in a forked helper process (MLflow's client and
  its store, the registry queries, the download and the digest check) while this process
  imports what loading and scoring need (``_SCORER_MODULES``), on the machine's second core;
- loads the model from the helper's folder (checked against the digest again, a trusted skops
  model only, as the server loads it);
- keeps the collector off until then and moves everything loaded so far out of its way
  (``gc.freeze``): the scoring's own short-lived objects are still collected.

A helper that fails for any reason is not trusted to explain why: the fetch runs again here,
and its error is the one raised.
"""

from __future__ import annotations

import gc
import logging
import tempfile
from collections.abc import Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from contextlib import contextmanager
from typing import TYPE_CHECKING

from pipeline_tasks.scoring import batch

if TYPE_CHECKING:
    from pipeline_tasks.core.config import PipelineConfig

log = logging.getLogger(__name__)

#: What loading the model and scoring import, in this process while the helper fetches.
_SCORER_MODULES = ("pyarrow.dataset", "pyarrow.parquet", "pyarrow.csv", "pandas",
                   "sklearn.ensemble", "sklearn.pipeline", "sklearn.compose", "skops.io")


def score(model_name: str, source: str, *, ref: str, interval_start: str, interval_end: str,
          config: PipelineConfig, run_id: str, dag_id: str = "mlops_batch_score",
          id_column: str | None = None, time_column: str | None = None,
          chunk_rows: int | None = None,
          max_reject_share: float | None = None) -> batch.BatchScoreResult:
    """Resolve ``ref`` of ``model_name`` and score ``source``'s rows of the interval with it
    (``batch.score_interval``). Meant for a process that does nothing else: the collector's
    state (off, then frozen) is left as the scoring needs it, not as it was."""
    gc.disable()
    try:
        with tempfile.TemporaryDirectory(prefix="mlops-batch-") as workdir:
            with _fetching(model_name, ref, config, workdir) as helper:
                _import_scorer()
                fetched = _fetched(helper, model_name, ref, config, workdir)
            served = batch.load_fetched(fetched, config)
            gc.freeze()  # the libraries and the model live until exit: out of the collector's way
            gc.enable()
            return batch.score_interval(
                source, model=fetched.scoring, served=served, interval_start=interval_start,
                interval_end=interval_end, config=config, dag_id=dag_id, run_id=run_id,
                id_column=id_column, time_column=time_column, chunk_rows=chunk_rows,
                max_reject_share=max_reject_share)
    finally:
        gc.enable()


@contextmanager
def _fetching(model_name: str, ref: str, config: PipelineConfig,
              workdir: str) -> Iterator[Future]:
    """``batch.fetch_model`` started in a forked helper process (this one holds no thread yet,
    so forking is safe); the helper is gone when the block ends."""
    import multiprocessing

    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("fork")) as pool:
        yield pool.submit(_fetch_in_helper, model_name, ref, config, workdir)


def _fetch_in_helper(model_name: str, ref: str, config: PipelineConfig,
                     workdir: str) -> batch.FetchedModel:
    try:
        return batch.fetch_model(model_name, ref, config, workdir)
    finally:
        gc.freeze()  # the helper exits next: no last walk over what its imports made


def _import_scorer() -> None:
    import importlib

    for name in _SCORER_MODULES:
        importlib.import_module(name)


def _fetched(helper: Future, model_name: str, ref: str, config: PipelineConfig,
             workdir: str) -> batch.FetchedModel:
    try:
        return helper.result()
    except Exception as exc:  # noqa: BLE001 - the fetch again here raises the real error
        log.info("fetching %s@%s in a helper process failed (%s): fetching it here",
                 model_name, ref, type(exc).__name__)
    return batch.fetch_model(model_name, ref, config, f"{workdir}/again")
