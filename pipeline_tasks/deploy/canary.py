"""The canary: a candidate server must answer holdout rows exactly as the model does offline.

Used by the blue/green orchestrator on every target (the candidate's private URL), before the
candidate may take the stable endpoint; ``version_inputs`` finds the rows and columns to send.
"""

from __future__ import annotations

import logging

from pipeline_tasks.core import http, storage, tracking
from pipeline_tasks.core.config import PipelineConfig
from pipeline_tasks.core.errors import DeployRejected

log = logging.getLogger(__name__)

CANARY_ROWS = 200


def canary_check(url: str, model_name: str, version: str, holdout_uri: str | None,
                 feature_columns: list[str], config: PipelineConfig) -> int:
    """Send holdout rows to ``url``; its answers must equal the model's offline predictions."""
    if not holdout_uri:
        raise DeployRejected("no holdout rows to validate with")
    tracking.configure_mlflow(config)
    import numpy as np

    from pipeline_tasks.core import model_artifacts

    holdout = storage.read_parquet(holdout_uri)
    missing = [c for c in feature_columns if c not in holdout.columns]
    if missing:
        raise DeployRejected(f"holdout {holdout_uri} lacks column(s) {missing}")
    frame = holdout[feature_columns].head(CANARY_ROWS)
    try:  # the sha256 recorded at registration, skops with trusted types, as the server does
        offline = model_artifacts.load_verified(f"models:/{model_name}/{version}").model
    except model_artifacts.ModelRefused as exc:
        raise DeployRejected(f"canary: {exc}") from exc
    expected = offline.predict(frame).tolist()
    body = {"columns": {c: json_values(frame[c]) for c in feature_columns}}
    # by name: the candidate serves the endpoint's other models too
    path = http.model_url(url, model_name) + "/predict"
    answer = _post_json(path, body)
    if answer is None or "predictions" not in answer:
        raise DeployRejected(f"POST {path} gave no predictions: {answer}")
    got = answer["predictions"]
    if len(got) != len(expected):
        raise DeployRejected(f"{len(got)} predictions for {len(expected)} canary rows")
    if isinstance(expected[0], float):
        same = np.allclose(np.asarray(got, dtype=float), np.asarray(expected, dtype=float),
                           rtol=1e-9, atol=1e-9)
    else:
        same = [str(g) for g in got] == [str(e) for e in expected]
    if not same:
        differ = sum(str(g) != str(e) for g, e in zip(got, expected, strict=True))
        raise DeployRejected(f"{differ} of {len(expected)} canary predictions differ from the "
                             "model's offline predictions")
    if str(answer.get("model_version")) != str(version):  # the same answers from another one
        raise DeployRejected(f"POST {path} answered as v{answer.get('model_version')}, "
                             f"not v{version}")
    log.info("canary: %d holdout rows predicted as offline by %s", len(expected), url)
    return len(expected)


def json_values(column) -> list:
    """A column as JSON-ready values: None for missing, ISO strings for date-times."""
    import pandas as pd

    if pd.api.types.is_datetime64_any_dtype(column):
        return [None if pd.isna(v) else v.isoformat() for v in column]
    values = column.astype(object).where(column.notna(), None).tolist()
    return [v.item() if hasattr(v, "item") else v for v in values]


def _post_json(url: str, body: dict) -> dict | None:
    return http.try_json(url, body, headers=http.serving_headers())


def version_inputs(model_name: str, version: str, config: PipelineConfig):
    """The holdout of the version's training run and its input columns (from the model's
    signature), for the canary and for monitoring."""
    tracking.configure_mlflow(config)
    from mlflow.models import get_model_info
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    mv = client.get_model_version(model_name, version)
    holdout_uri = client.get_run(mv.run_id).data.tags.get("holdout_uri") if mv.run_id else None
    signature = get_model_info(f"models:/{model_name}/{version}").signature
    return holdout_uri, signature.inputs.input_names()
