"""Celery settings of the production profile's workers (``[celery] celery_config_options``).

Airflow's defaults, plus ``imports``: each worker imports ``pipeline_tasks.ops.preload`` (pandas,
scikit-learn, MLflow, Great Expectations) once when it starts, before it forks its pool, so every
task process (forked from a pool process) inherits them instead of spending seconds importing
them again. The LocalExecutor gets the same from ``mp_forkserver_preload`` (airflow.cfg.example).
Upgrading one of those libraries needs a worker restart; the pipeline's own modules are not
preloaded, so an edit to ``pipeline_tasks/`` takes effect at the next task.
"""

from __future__ import annotations

from airflow.providers.celery.executors.default_celery import DEFAULT_CELERY_CONFIG

CELERY_CONFIG = {
    **DEFAULT_CELERY_CONFIG,
    "imports": (*DEFAULT_CELERY_CONFIG.get("imports", ()), "pipeline_tasks.ops.preload"),
}
