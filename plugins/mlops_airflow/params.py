"""The trigger form of a DAG, made from the one param schema (``pipeline_tasks.core.params``)."""

from __future__ import annotations

from typing import Any

from airflow.sdk import Param

from pipeline_tasks.core.params import ParamSpec, schema_for


def to_param(spec: ParamSpec, config: Any) -> Param:
    """One form field: the declared (or config) default and the JSON-schema bounds."""
    return Param(spec.default_for(config), description=spec.description, **spec.json_schema())


def dag_params(dag_id: str, config: Any) -> dict[str, Param]:
    """``@dag(params=...)`` of ``dag_id``: every param shown in its form, in schema order, with
    its default taken from ``config`` where it overrides (or follows) a config field."""
    return {spec.name: to_param(spec, config) for spec in schema_for(dag_id) if spec.in_form}
