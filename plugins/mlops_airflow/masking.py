"""Every secret a task may print, registered with Airflow's secrets masker before the task does
anything: the password in each configured URL, the serving token, a SQL connection's URL, the
notification webhook, the credentials of the MLflow and lake connections (``connections.py``).
Task logs (and the supervisor that writes them) then show ``***``.
"""

from __future__ import annotations

import os

#: MLflow's credentials of a tracking server, when they are in the environment.
MLFLOW_SECRET_ENV = ("MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN")

#: Values this process has registered with the secrets masker (each is sent once).
_MASKED: set[str] = set()


def _mask(value: str | None) -> None:
    from airflow.sdk.log import mask_secret  # masks here and in the supervisor that writes logs

    if value and value not in _MASKED:
        _MASKED.add(value)
        mask_secret(value)


def mask_value(value: str | None) -> None:
    """Mask one secret value (a password, a token) in this task's logs."""
    _mask(value)


def mask_url_password(url: str | None) -> None:
    """Mask the password (or token userinfo) in ``url``, not the URL itself."""
    from pipeline_tasks.core.http import url_secrets

    for secret in url_secrets(url or ""):
        _mask(secret)


def mask_url(url: str | None) -> None:
    """Mask a URL that is a secret as a whole (a webhook whose path holds its token) and the
    password in it, as written and decoded."""
    from pipeline_tasks.core.http import url_secrets

    if not url:
        return
    _mask(url)
    for secret in url_secrets(url):
        _mask(secret)


def mask_task_secrets(config=None, *urls: str | None) -> None:
    """Register with Airflow's ``mask_secret`` every secret a task may print: the password in
    each URL of the loaded config (``config.url_values``: tracking, registry and backend store
    URIs, the registry lock URL, storage URIs, labels, listed roots), the secret values of the
    lake's storage options, the serving token (``MLOPS_SERVING_TOKEN``), MLflow's password or
    token (``MLFLOW_TRACKING_PASSWORD``, ``MLFLOW_TRACKING_TOKEN``) and ``urls`` (a connection's URL). Airflow does not mask values shorter than ``[logging]
    min_length_masked_secret`` (5 characters by default)."""
    from pipeline_tasks.core.config import load_config, secret_option_values, url_values
    from pipeline_tasks.core.http import SERVING_TOKEN_ENV, url_secrets

    config = config if config is not None else load_config()
    values = [*urls, *(text for _, _, text in url_values(config))]
    for value in values:
        for secret in url_secrets(value or ""):
            _mask(secret)
    for secret in secret_option_values(config.lake_storage_options):
        _mask(secret)
    for name in (SERVING_TOKEN_ENV, *MLFLOW_SECRET_ENV):
        _mask(os.environ.get(name))
