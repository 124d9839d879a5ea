"""The ``local`` deploy target: the serving supervisor (``deploy.local``) owns the endpoint.

The candidate starts beside the live server on a private port (its files' sha256 checked at
load); ``switch`` makes it accept on the stable socket and stops the old one; ``verify`` asks the
endpoint's ``/metadata``. A failed switch starts the previous version again.
"""

from __future__ import annotations

import logging
import os
import time

from pipeline_tasks.core import http
from pipeline_tasks.core.config import PipelineConfig
from pipeline_tasks.core.errors import DeployRejected
from pipeline_tasks.deploy.local import SupervisorClient, SupervisorError
from pipeline_tasks.deploy.targets import Candidate, Live

log = logging.getLogger(__name__)


class LocalTarget:
    """The supervisor of ``config.serving_port`` as a ``DeployTarget``."""

    name = "local"

    def __init__(self, config: PipelineConfig):
        self.config = config
        self.endpoint = config.serving_url
        self.supervisor = SupervisorClient(config)
        self._status: dict = {}

    def prepare(self, model_name: str, version: str) -> None:
        self._status = self.supervisor.ensure_running()
        self.endpoint = self._status["stable_url"]

    def current(self) -> Live | None:
        active = self._status.get("active")
        if not active:
            return None
        return Live(model_name=active["model"], version=active["version"],
                    record={"model_name": active["model"], "version": active["version"],
                            "pid": active["pid"]}, handle=active)

    def start_candidate(self, model_name: str, version: str, live: Live | None) -> Candidate:
        if live and (live.model_name, live.version) == (model_name, version):
            return Candidate(url=self.endpoint, unchanged=True, handle=live.handle,
                             record={"pid": live.handle["pid"],
                                     "private_port": live.handle["private_port"]})
        try:
            # owner: if this task is killed before the switch, the supervisor stops the candidate
            child = self.supervisor.call("start", model=model_name, version=version,
                                         owner=os.getpid())["child"]
        except SupervisorError as exc:
            raise DeployRejected(str(exc)) from exc
        return Candidate(url=child["private_url"], handle=child,
                         record={"pid": child["pid"], "private_port": child["private_port"]})

    def switch(self, candidate: Candidate) -> None:
        try:
            self.supervisor.call("activate", pid=candidate.handle["pid"])
        except SupervisorError as exc:
            raise DeployRejected(str(exc)) from exc

    def verify(self, candidate: Candidate, version: str) -> str | None:
        served = _get_json(self.endpoint + "/metadata")
        if not served or served.get("model_version") != version:
            return f"it answered {served and served.get('model_version')}"
        return None

    def restore(self, live: Live | None, candidate: Candidate) -> str:
        """Start ``live`` (it was stopped at the switch) and give it the endpoint back."""
        if live is None:
            return "nothing served before it"
        try:
            child = self.supervisor.call("start", model=live.model_name, version=live.version,
                                         owner=os.getpid())["child"]
            self.supervisor.call("activate", pid=child["pid"])
        except SupervisorError as exc:
            log.error("could not restore %s v%s: %s", live.model_name, live.version, exc)
            return f"restoring {live.model_name} v{live.version} failed too: {exc}"
        return f"{live.model_name} v{live.version} serves again"

    def stop(self, candidate: Candidate) -> None:
        self.supervisor.call("stop", pid=candidate.handle["pid"])

    def retire(self, live: Live | None, candidate: Candidate) -> None:
        """Nothing to do: the switch stopped the old server once the new one accepted."""


def _get_json(url: str) -> dict | None:
    for _ in range(20):
        answer = http.try_json(url, headers=http.serving_headers())
        if answer is not None:
            return answer
        time.sleep(0.25)
    return None
