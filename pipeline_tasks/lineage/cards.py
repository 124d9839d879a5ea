"""The model card of each registered version: gathered from what the pipeline recorded, stored
with the version in MLflow, and read back for the UI.

``register`` calls ``write_model_card`` once the version exists (a retry writes the same files
again). The card is built from the training result, the evaluation decision (slices, fairness,
the gate's reason), the registration and the snapshot's manifest, rendered by ``model_card``, and
logged to the version's run as ``model_card/model_card.html``, ``.md`` and ``.json``; the version's
``model_card`` tag names the HTML file. ``read_model_card`` fetches one for the ``/mlops`` views.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from pipeline_tasks.core import layout, storage, tracking
from pipeline_tasks.core.schema import SUITE_TAG
from pipeline_tasks.lineage.links import mlflow_model_version_url, mlflow_run_url
from pipeline_tasks.lineage.model_card import ModelCard, render_html, render_markdown

if TYPE_CHECKING:
    from pipeline_tasks.core.config import PipelineConfig
    from pipeline_tasks.model.policy import EvaluationDecision
    from pipeline_tasks.model.registry import RegistrationResult
    from pipeline_tasks.model.train import TrainResult

log = logging.getLogger(__name__)

CARD_DIR = "model_card"
CARD_FILES = {"html": "model_card.html", "md": "model_card.md", "json": "model_card.json"}
CARD_TAG = "model_card"


def build_model_card(*, trained: TrainResult, decision: EvaluationDecision,
                     registered: RegistrationResult, lineage: dict[str, str],
                     config: PipelineConfig) -> ModelCard:
    """The card of ``registered`` (see the module docstring)."""
    manifest = _manifest(trained.dataset_version, config)
    interval = manifest.get("interval") or {}
    source = manifest.get("source") or lineage.get("source", "")
    schema = manifest.get("schema") or {}
    inputs = set(trained.feature_columns)
    columns = [{"name": name, "type": dtype + ("" if name in inputs or name == trained.target
                                               else " (not an input)")}
               for name, dtype in schema.items()]
    validation = manifest.get("validation") or {}
    limits = [f"{s['column']}={s['value']}: {s['rows']} rows, {s['note']}"
              for s in decision.slices if not s.get("gated") and s.get("note")]
    for fair in decision.fairness:
        for group in fair.get("small_groups") or []:
            limits.append(f"{fair['column']}={group}: too few rows to judge its fairness "
                          f"(min_slice_rows {config.min_slice_rows})")
    if not decision.slices:
        limits.append("no slices configured (slice_columns): the gate judged the whole "
                      "holdout only")
    limits.append(f"judged on a holdout of {trained.n_holdout} rows from the training window; "
                  "data unlike it (another season, a new source) may score differently")
    kind = "classifier" if trained.task_type == "classification" else "regressor"
    suite = lineage.get(SUITE_TAG)
    checked = ("passed" if validation.get("success") else "see the validation report") + (
        f" against {suite}" if suite else "")
    return ModelCard(
        model_name=registered.model_name, version=str(registered.version),
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
        purpose=(f"A scikit-learn {kind} that predicts {trained.target!r} from "
                 f"{len(trained.feature_columns)} inputs, trained nightly by "
                 f"{lineage.get('airflow.dag_id') or 'the pipeline'} and promoted only when it "
                 "beats the baseline, the champion and every gated slice."),
        target=trained.target, task_type=trained.task_type,
        primary_metric=trained.primary_metric, greater_is_better=trained.greater_is_better,
        training={
            "snapshot": trained.dataset_version, "rows": manifest.get("rows"),
            "window_start": interval.get("window_start"),
            "interval_start": interval.get("interval_start"),
            "interval_end": interval.get("interval_end"), "source": source,
            "airflow_dag_id": lineage.get("airflow.dag_id"),
            "airflow_run_id": lineage.get("airflow.run_id"), "columns": columns,
            "train_rows": trained.n_train, "holdout_rows": trained.n_holdout,
        },
        metrics={"candidate": decision.candidate_metrics,
                 "champion": decision.champion_metrics, "baseline": decision.baseline_metrics},
        slices=list(decision.slices), fairness=list(decision.fairness),
        decision={
            "blessed": decision.blessed, "reason": decision.reason, "forced": decision.forced,
            "force_reason": decision.force_reason, "gate_passed": decision.gate_passed,
            "champion_version": decision.champion_version,
            "max_slice_regression": config.max_slice_regression,
            "min_slice_rows": config.min_slice_rows, "max_fairness_gap": config.max_fairness_gap,
            "promoted": registered.promoted, "registration": registered.reason,
        },
        limits=limits,
        lineage=[
            {"step": "source", "value": source, "url": None},
            {"step": "validation", "value": checked, "url": None},
            {"step": "snapshot", "value": trained.dataset_version, "url": None},
            {"step": "training run", "value": trained.run_id,
             "url": mlflow_run_url(config, trained.experiment_id, trained.run_id)},
            {"step": "evaluation", "value": decision.reason, "url": None},
            {"step": "model version", "value": f"{registered.model_name} v{registered.version}",
             "url": mlflow_model_version_url(config, registered.model_name,
                                             str(registered.version))},
        ],
    )


def _manifest(version_id: str, config: PipelineConfig) -> dict:
    uri = layout.snapshot_manifest(config, version_id)
    try:
        return storage.read_json(uri) if storage.exists(uri) else {}
    except (OSError, ValueError) as exc:
        log.warning("the snapshot manifest %s cannot be read (%s): the card leaves it out", uri,
                    exc)
        return {}


def write_model_card(card: ModelCard, run_id: str, config: PipelineConfig) -> str:
    """Log ``card`` (HTML, Markdown, JSON) to the version's run and tag the version with it;
    returns the HTML artifact's path in the run."""
    import json

    tracking.configure_mlflow(config)
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    texts = {"html": render_html(card), "md": render_markdown(card),
             "json": json.dumps(card.to_dict(), indent=2, sort_keys=True)}
    for kind, text in texts.items():
        client.log_text(run_id, text, f"{CARD_DIR}/{CARD_FILES[kind]}")
    path = f"{CARD_DIR}/{CARD_FILES['html']}"
    client.set_model_version_tag(card.model_name, card.version, CARD_TAG, path)
    log.info("model card of %s v%s stored with its run (%s)", card.model_name, card.version, path)
    return path


def read_model_card(model_name: str, version: str, config: PipelineConfig,
                    kind: str = "html") -> bytes:
    """The stored card of ``model_name`` v``version`` (``kind``: html, md or json);
    ``FileNotFoundError`` when the version has none."""
    import tempfile
    from pathlib import Path

    tracking.configure_mlflow(config)
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    try:
        mv = client.get_model_version(model_name, str(version))
    except MlflowException as exc:
        raise FileNotFoundError(f"{model_name} has no version {version}") from exc
    if CARD_TAG not in (mv.tags or {}):
        raise FileNotFoundError(f"{model_name} v{version} has no model card (registered before "
                                "cards were made)")
    with tempfile.TemporaryDirectory(prefix="mlops-card-") as tmp:
        try:
            local = client.download_artifacts(mv.run_id, f"{CARD_DIR}/{CARD_FILES[kind]}", tmp)
        except (MlflowException, OSError) as exc:
            raise FileNotFoundError(f"{model_name} v{version}: its model card cannot be read "
                                    f"({type(exc).__name__})") from exc
        return Path(local).read_bytes()
