"""The ``local`` deploy target: the serving supervisor (``deploy.local``) owns the endpoint.

The endpoint serves a set of models, one server process for all of them. The candidate is a
server of the live set with the deployed model at its new version (the others at theirs),
started beside the live server on a private port (every model's files checked at load);
``switch`` makes it accept on the stable socket and stops the old one; ``verify`` asks the
endpoint's ``/models/<name>/metadata``. A failed switch starts the previous set again.
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
        self._model = ""

    def prepare(self, model_name: str, version: str) -> None:
        self._status = self.supervisor.ensure_running()
        self.endpoint = self._status["stable_url"]
        self._model = model_name

    def current(self) -> Live | None:
        """The live server, with the deployed model's version in it (None: not served yet)."""
        active = self._status.get("active")
        if not active:
            return None
        version = active["models"].get(self._model)
        return Live(model_name=self._model, version=version,
                    record={"model_name": self._model, "version": version,
                            "models": active["models"], "pid": active["pid"]}, handle=active)

    def start_candidate(self, model_name: str, version: str, live: Live | None) -> Candidate:
        if live and (live.model_name, live.version) == (model_name, version):
            return Candidate(url=self.endpoint, unchanged=True, handle=live.handle,
                             record={"pid": live.handle["pid"],
                                     "private_port": live.handle["private_port"],
                                     "models": live.handle["models"]})
        models = {**(live.handle["models"] if live else {}), model_name: str(version)}
        try:
            # owner: if this task is killed before the switch, the supervisor stops the candidate
            child = self.supervisor.call("start", models=models, owner=os.getpid())["child"]
        except SupervisorError as exc:
            raise DeployRejected(str(exc)) from exc
        return Candidate(url=child["private_url"], handle=child,
                         record={"pid": child["pid"], "private_port": child["private_port"],
                                 "models": child["models"]})

    def switch(self, candidate: Candidate) -> None:
        try:
            self.supervisor.call("activate", pid=candidate.handle["pid"])
        except SupervisorError as exc:
            raise DeployRejected(str(exc)) from exc

    def verify(self, candidate: Candidate, version: str) -> str | None:
        served = _get_json(http.model_url(self.endpoint, self._model) + "/metadata")
        if not served or served.get("model_version") != version:
            return f"it answered {served and served.get('model_version')}"
        return None

    def restore(self, live: Live | None, candidate: Candidate) -> str:
        """Start the set ``live`` served (it was stopped at the switch) and give it the
        endpoint back."""
        if live is None:
            return "nothing served before it"
        models = live.handle["models"]
        what = ", ".join(f"{name} v{v}" for name, v in models.items())
        try:
            child = self.supervisor.call("start", models=models, owner=os.getpid())["child"]
            self.supervisor.call("activate", pid=child["pid"])
        except SupervisorError as exc:
            log.error("could not restore %s: %s", what, exc)
            return f"restoring {what} failed too: {exc}"
        return f"{what} serve{'s' if len(models) == 1 else ''} again"

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
