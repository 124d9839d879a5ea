"""Airflow assets for the things the pipeline makes: snapshots, model versions, champions and
drift reports, announced as asset events so Airflow's asset view shows
training → model → monitoring, and another team's DAG can run on "a new champion of model X".

A DAG cannot know the model a run trains while it is parsed (a trigger param, or a retrain
request), so each task declares one ``AssetAlias`` per kind in its ``outlets``, and at run time
the alias resolves to the concrete asset of the run's model (``asset_for``):

| task (DAG) | alias | asset (uri) |
|---|---|---|
| ``version`` (training) | ``mlops_dataset_snapshots`` | ``mlops://models/<model>/snapshots`` |
| ``register`` (training) | ``mlops_model_versions`` | ``mlops://models/<model>/versions`` |
| ``deploy`` (training), ``rollback`` | ``mlops_champions`` | ``mlops://models/<model>/champion`` |
| ``check_drift`` (monitoring) | ``mlops_drift_reports`` | ``mlops://models/<model>/drift-reports`` |

``check_drift`` and ``check_performance`` read the monitored model's champion: it is in their
``inlets`` (``champion_asset`` of the monitoring DAG's default model), which the asset view's
data graph draws as champion -> monitoring.

The asset's name is ``mlops.<kind>.<model>``. Schedule on a new champion of ``flights_is_late``
with ``schedule=[Asset(name="mlops.champion.flights_is_late",
uri="mlops://models/flights_is_late/champion")]`` (or ``champion_asset("flights_is_late")``);
the event's extra names the version, its ``models:/`` URI and the endpoint. A task that is skipped
(``deploy`` of a version that was not promoted) announces nothing. The model name is checked by
the param schema (letters, digits, ``.``, ``_``, ``-``) and is quoted into the URI all the same.
"""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import quote

from airflow.sdk import Asset, AssetAlias

log = logging.getLogger(__name__)

SNAPSHOTS = AssetAlias(name="mlops_dataset_snapshots", group="mlops")
MODEL_VERSIONS = AssetAlias(name="mlops_model_versions", group="mlops")
CHAMPIONS = AssetAlias(name="mlops_champions", group="mlops")
DRIFT_REPORTS = AssetAlias(name="mlops_drift_reports", group="mlops")

#: alias name -> the kind of thing (the asset's last URI segment)
KINDS = {SNAPSHOTS.name: "snapshots", MODEL_VERSIONS.name: "versions",
         CHAMPIONS.name: "champion", DRIFT_REPORTS.name: "drift-reports"}


def asset_for(kind: str, model_name: str) -> Asset:
    """The concrete asset of ``kind`` (``snapshots``, ``versions``, ``champion``,
    ``drift-reports``) for one model."""
    if kind not in KINDS.values():
        raise ValueError(f"unknown asset kind {kind!r}: one of {sorted(KINDS.values())}")
    if not model_name:
        raise ValueError("an asset needs the model name")
    # no group: an asset made by an alias event gets Airflow's default one, and a consumer's
    # ``Asset(name=..., uri=...)`` must be the same asset
    return Asset(name=f"mlops.{kind}.{model_name}",
                 uri=f"mlops://models/{quote(model_name, safe='')}/{kind}")


def champion_asset(model_name: str) -> Asset:
    """The asset that gets an event each time ``model_name`` has a new champion in service."""
    return asset_for("champion", model_name)


def model_uri(model_name: str, version: Any) -> str:
    return f"models:/{quote(str(model_name), safe='')}/{quote(str(version), safe='')}"


def event_extra(kind: str, result: Any, context: dict[str, Any]) -> dict[str, Any]:
    """What the event says about the thing, from the stage's typed result (JSON values only)."""
    dag_run = context.get("dag_run")
    base = {"dag_id": getattr(dag_run, "dag_id", None), "run_id": getattr(dag_run, "run_id", None)}
    if kind == "snapshots":
        return {**base, "version_id": result.version_id, "data_uri": result.data_uri,
                "manifest_uri": result.manifest_uri, "rows": result.rows,
                "created": bool(result.created)}
    if kind == "versions":
        return {**base, "model_name": result.model_name, "version": str(result.version),
                "model_uri": model_uri(result.model_name, result.version),
                "mlflow_run_id": result.run_id, "promoted": bool(result.promoted),
                "awaiting_approval": bool(result.awaiting_approval)}
    if kind == "champion":
        return {**base, "model_name": result.model_name, "version": str(result.version),
                "model_uri": model_uri(result.model_name, result.version),
                "endpoint": result.endpoint, "action": result.action,
                "previous": None if result.previous is None else str(result.previous),
                "deployment_id": result.deployment_id}
    # drift reports
    return {**base, "model_name": result.model_name,
            "model_version": None if result.model_version is None else str(result.model_version),
            "status": result.status, "drift_detected": bool(result.drift_detected),
            "report_uri": result.report_uri, "interval_end": result.interval_end}


def model_of(kind: str, result: Any, context: dict[str, Any]) -> str | None:
    """The model the event is about: from the result, else the run's (``runtime.run_spec``)."""
    name = getattr(result, "model_name", None)
    if name:
        return str(name)
    from mlops_airflow.runtime import run_spec

    return run_spec(context).model_name


def announce(outlets, result: Any, payload: Any, context: dict[str, Any]) -> None:
    """Fill the task's outlet events from its result: an ``Asset`` outlet gets the result's
    ``asset_extra`` as its extra; an alias outlet (``KINDS``) gets an event on the run's model's
    asset. ``payload``: the result's XCom dict."""
    events = context["outlet_events"]
    for outlet in outlets:
        if isinstance(outlet, AssetAlias):
            kind = KINDS.get(outlet.name)
            if kind is None:
                continue
            if kind == "drift-reports" and not getattr(result, "report_uri", None):
                continue  # no report (too little traffic): nothing to announce
            try:
                asset = asset_for(kind, model_of(kind, result, context))
                events[outlet].add(asset, extra=event_extra(kind, result, context))
            except Exception:  # the stage's work is done: a missing event must not undo it
                log.exception("could not announce the %s asset event", outlet.name)
                continue
            log.info("asset event: %s (%s)", asset.uri, outlet.name)
        else:
            extra = payload.get("asset_extra") if isinstance(payload, dict) else None
            events[outlet].extra = dict(extra or {})
