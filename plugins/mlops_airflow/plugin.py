"""The Airflow plugin: the ``/mlops`` reports and lineage app and its entry in the navigation.

The tasks' extra links are attached per task by ``runtime.pipeline_task`` (they are computed on
the worker when a task ends), so the plugin itself only mounts the views.
"""

from __future__ import annotations

from typing import ClassVar

from airflow.plugins_manager import AirflowPlugin

from mlops_airflow.views import app
from pipeline_tasks.lineage.reports import UI_PREFIX


class MlopsPlugin(AirflowPlugin):
    name = "mlops"
    fastapi_apps: ClassVar[list] = [{"app": app, "url_prefix": UI_PREFIX, "name": "MLOps reports and lineage"}]
    external_views: ClassVar[list] = [{
        "name": "Models",
        "href": UI_PREFIX + "/",
        "url_route": "mlops",
        "destination": "nav",
        "nav_top_level": True,
    }]
