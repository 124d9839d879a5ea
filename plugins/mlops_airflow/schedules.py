"""The asset that closes the loop, and the schedules built from configuration.

``ml_drift_monitoring`` emits an event on ``RETRAIN_REQUESTS`` when drift or a performance drop
is real (and the cool-down allows it); ``ml_training_pipeline`` runs nightly **or** on that
asset (Airflow 3's ``AssetOrTimeSchedule``). The event's extra names the model, the interval, the
monitoring run and the drifted columns; ``runtime.run_spec`` turns it into the training run.

The things the pipeline makes (snapshots, model versions, champions, drift reports) are assets
too, one per model, announced through aliases: ``mlops_airflow.assets`` (``champion_asset(model)``
is what a DAG schedules on to run on a new champion).
"""

from __future__ import annotations

from airflow.sdk import Asset, AssetOrTimeSchedule, CronDataIntervalTimetable

RETRAIN_REQUESTS = Asset(name="mlops_retrain_requests", uri="mlops://monitoring/retrain-requests",
                         group="mlops")

_OFF = {"", "none", "off", "manual"}


def cron(expression: str):
    """A daily-style cron timetable in UTC, or ``None`` (triggered runs only) for "none"."""
    if expression.strip().lower() in _OFF:
        return None
    return CronDataIntervalTimetable(expression, timezone="UTC")


def cron_or_asset(expression: str, asset: Asset = RETRAIN_REQUESTS):
    """The cron schedule or the asset, whichever comes first; only the asset for "none"."""
    timetable = cron(expression)
    if timetable is None:
        return [asset]
    return AssetOrTimeSchedule(timetable=timetable, assets=[asset])
