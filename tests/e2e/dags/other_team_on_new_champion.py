"""Another team's DAG, as a user of the package writes one: it runs each time the e2e model
``flights_is_late`` has a new champion in service (the champion asset that the training DAG's
``deploy`` and the rollback DAG announce) and returns what the triggering events said.

The e2e stack loads this folder as a second DAG bundle beside ``dags/``."""

from __future__ import annotations

from datetime import datetime

from airflow.sdk import dag, task
from mlops_airflow.assets import champion_asset

CHAMPION = champion_asset("flights_is_late")


@dag(schedule=[CHAMPION], start_date=datetime(2013, 1, 1), catchup=False,
     is_paused_upon_creation=False, default_args={"retries": 0}, tags=["e2e"])
def other_team_on_new_champion():
    @task
    def read_champion_events(*, triggering_asset_events=None) -> list[dict]:
        return [{"uri": event.asset.uri, "version": event.extra.get("version"),
                 "model_uri": event.extra.get("model_uri"),
                 "source_dag_id": event.source_dag_id}
                for event in triggering_asset_events[CHAMPION]]

    read_champion_events()


other_team_on_new_champion()
