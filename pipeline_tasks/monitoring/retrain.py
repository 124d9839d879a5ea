"""The retrain policy: drift or a performance drop asks for retraining, at most once per
``retrain_cooldown_days`` of data time per model.

Decisions are recorded (``layout.retrain_requests_dir``), under the model's named lock, and a
re-run of the same monitoring run gives the same decision, so the asset event the DAG emits is not
repeated.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from pipeline_tasks.core import layout, storage
from pipeline_tasks.core.names import safe_name
from pipeline_tasks.core.results import XComResult
from pipeline_tasks.data.ingest import as_utc
from pipeline_tasks.monitoring.sources import served_version

if TYPE_CHECKING:
    from pipeline_tasks.core.config import PipelineConfig
    from pipeline_tasks.monitoring.drift_check import DriftCheck
    from pipeline_tasks.monitoring.performance import PerformanceCheck

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RetrainDecision(XComResult):
    """Whether to retrain, why, and the asset event's extra when so."""

    model_name: str
    retrain: bool
    reason: str
    interval_end: str
    drift_run_id: str
    drifted_columns: list[str]
    cooldown_until: str | None
    last_request: dict | None
    asset_extra: dict

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _as_dict(check: Any) -> dict | None:
    """A check (``DriftCheck``, ``PerformanceCheck``) as its dict; a dict or None as it is."""
    return check if check is None or isinstance(check, dict) else check.to_dict()


def retrain_causes(drift: DriftCheck | dict | None,
                   performance: PerformanceCheck | dict | None) -> list[str]:
    """Why the verdicts ask for retraining (empty: they do not)."""
    drift, performance = _as_dict(drift), _as_dict(performance)
    causes = []
    if drift and drift.get("drift_detected"):
        causes.append(f"drift on {len(drift['drifted_columns'])} column(s) "
                      f"({', '.join(drift['drifted_columns'])}), share "
                      f"{drift['drifted_share']:.2f} >= {drift['share_threshold']:.2f}")
    if performance and performance.get("degraded"):
        causes.append(f"performance drop: {performance['reason']}")
    return causes


def decide_retrain(*, model_name: str, drift: DriftCheck | dict | None,
                   performance: PerformanceCheck | dict | None,
                   interval_end: str, dag_id: str, run_id: str,
                   config: PipelineConfig) -> RetrainDecision:
    """Ask for retraining when drift is real or performance dropped, at most once per
    ``retrain_cooldown_days`` (measured on data intervals) per model."""
    from pipeline_tasks.core.locks import named_lock
    from pipeline_tasks.deploy.bluegreen import serving_place

    drift, performance = _as_dict(drift), _as_dict(performance)
    end = as_utc(interval_end)
    causes = retrain_causes(drift, performance)
    columns = list((drift or {}).get("drifted_columns") or [])
    root = layout.retrain_requests_dir(config, model_name)
    base = {"model_name": model_name, "interval_end": end.isoformat(), "drift_run_id": run_id,
            "drifted_columns": columns}
    if not causes:
        return RetrainDecision(**base, retrain=False, reason="no drift and no performance drop",
                               cooldown_until=None, last_request=None, asset_extra={})
    # the shared named lock: a PostgreSQL advisory lock when workers run on several machines
    with named_lock(config, f"{model_name}.retrain", timeout=120):
        fs, path = storage.url_to_fs(root)
        records = ([storage.read_json(fs.unstrip_protocol(p))
                    for p in sorted(fs.glob(path.rstrip("/") + "/*.json"))]
                   if fs.exists(path) else [])
        mine = [r for r in records if r["drift_run_id"] == run_id and r["dag_id"] == dag_id]
        if mine:  # a retry or re-run of this monitoring run: the same decision, not a new one
            return RetrainDecision(**base, retrain=True, reason=mine[0]["reason"],
                                   cooldown_until=mine[0]["cooldown_until"],
                                   last_request=mine[0], asset_extra=mine[0]["asset_extra"])
        window = timedelta(days=config.retrain_cooldown_days)
        recent = [r for r in records if abs(as_utc(r["interval_end"]) - end) < window]
        if recent:
            last = max(recent, key=lambda r: r["interval_end"])
            until = (as_utc(last["interval_end"]) + window).isoformat()
            return RetrainDecision(**base, retrain=False, reason=(
                f"{'; '.join(causes)}; but a retrain was already requested for the interval "
                f"ending {last['interval_end'][:10]} (run {last['drift_run_id']}): cool-down of "
                f"{config.retrain_cooldown_days} day(s) until {until[:10]}"),
                cooldown_until=until, last_request=last, asset_extra={})
        reason = "; ".join(causes)
        served = (drift or {}).get("model_version") or (performance or {}).get("model_version")
        extra = {"model_name": model_name, "reason": reason, "drift_dag_id": dag_id,
                 "drift_run_id": run_id, "drifted_columns": columns,
                 "interval_end": end.isoformat(), "served_version": served}
        if served:
            info = served_version(model_name, served, config)
            extra.update(source=info.source, target=info.target)
        extra.update(serving_place(model_name, config))
        until = (end + window).isoformat()
        record = {**base, "dag_id": dag_id, "reason": reason, "cooldown_until": until,
                  "asset_extra": extra, "requested_at": datetime.now(UTC).isoformat()}
        storage.atomic_write_json(storage.join(root, f"{end:%Y-%m-%dT%H%M%S}-"
                                                     f"{safe_name(run_id)}.json"), record)
    log.info("retraining %s requested: %s", model_name, reason)
    return RetrainDecision(**base, retrain=True, reason=reason, cooldown_until=until,
                           last_request=None, asset_extra=extra)
