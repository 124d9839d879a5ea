"""Where a model version serves: the small protocol every deploy target implements.

The blue/green orchestrator (``deploy.bluegreen``) drives any target through the same steps:
``prepare`` -> ``current`` -> ``start_candidate`` (beside the live server) -> canary on the
candidate's private URL -> ``switch`` -> ``verify``, then ``retire`` the old server; a candidate
that fails before the switch is ``stop``-ped, and after the switch ``restore`` puts the previous
server back. An endpoint serves a set of models by name; a candidate serves the live set with
the deployed model's version changed, so the other models keep theirs. Implementations:
``local_target.LocalTarget`` (the serving supervisor) and ``docker_target.DockerTarget`` (a
container per model set behind a router). A target object is made for one deployment.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True)
class Live:
    """What serves on the endpoint before the deployment."""

    model_name: str | None
    version: str | None
    record: dict  # what the deployment record keeps of it (``previous``)
    handle: Any = field(default=None, repr=False, compare=False)  # the target's own


@dataclass(frozen=True)
class Candidate:
    """A started version (or, with ``unchanged``, the live one that already is the version)."""

    url: str  # where the canary reaches it
    record: dict  # what the deployment record keeps of it (pid and port, or container and image)
    unchanged: bool = False
    note: str = ""  # appended to the record's outcome ("(container ..., image ...)")
    handle: Any = field(default=None, repr=False, compare=False)


class DeployTarget(Protocol):
    """A serving target, driven by ``deploy.bluegreen.deploy``.

    Steps that find the candidate at fault raise ``DeployRejected`` (the orchestrator records
    why and the live version keeps serving); infrastructure failures raise anything else."""

    name: str  # local | docker: the record's ``target``
    endpoint: str  # the stable URL clients call

    def prepare(self, model_name: str, version: str) -> None:
        """Make the target ready for a candidate (the supervisor runs; the image is built)."""

    def current(self) -> Live | None:
        """What serves on the endpoint now (None: nothing)."""

    def start_candidate(self, model_name: str, version: str, live: Live | None) -> Candidate:
        """Start the version beside ``live`` (``unchanged`` when ``live`` already is it)."""

    def switch(self, candidate: Candidate) -> None:
        """Give the stable endpoint to ``candidate``."""

    def verify(self, candidate: Candidate, version: str) -> str | None:
        """None when the endpoint serves ``version`` after the switch, else what it does."""

    def restore(self, live: Live | None, candidate: Candidate) -> str:
        """After a failed switch: put ``live`` back on the endpoint; says what happened."""

    def stop(self, candidate: Candidate) -> None:
        """Stop a candidate that never took the endpoint."""

    def retire(self, live: Live | None, candidate: Candidate) -> None:
        """After a good switch: stop what served before (if the switch has not already)."""
