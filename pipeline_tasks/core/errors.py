"""Named exceptions raised by the library, each saying whether a retry can help.

Every error carries ``retryable`` (would the same call succeed later?) and ``advice`` (what a
person should do). The Airflow glue reads only these: a non-retryable error fails the task at
once with a summary, a retryable one is retried by Airflow, and ``StageSkipped`` skips it.

- ``PipelineInputError``: the input is wrong (data, a trigger param, a failed quality gate).
  ``ConfigError`` is the configuration case only: a config value or a trigger param.
- ``TransientError``: something this pipeline relies on failed in a way that may pass (a Docker
  engine or a package index not answering, a compose command that failed): retried.
- Programmer errors are Python's own (``ValueError``, ``TypeError``), never these.
"""


class PipelineError(Exception):
    """Base class of every error the library raises on purpose.

    ``advice`` (optional) says what to do; the failure summary shows it instead of its type's
    general advice. ``retryable`` defaults to the class's own and may be set per raise."""

    retryable: bool = False

    def __init__(self, message: str = "", *args, advice: str | None = None,
                 retryable: bool | None = None):
        super().__init__(message, *args)
        self.advice = advice
        if retryable is not None:
            self.retryable = retryable


class TransientError(PipelineError):
    """A service or tool the pipeline relies on failed in a way that may pass: worth a retry."""

    retryable = True


class PipelineInputError(PipelineError):
    """Bad input or a failed quality gate: deterministic, never worth a retry."""


class ConfigError(PipelineInputError):
    """A configuration value or trigger param is invalid."""


class IngestError(PipelineInputError):
    """The source could not be read, or it holds no usable rows for the run."""


class DataValidationError(PipelineInputError):
    """A critical expectation failed: the batch is quarantined and the run stops."""

    def __init__(self, message: str, result: dict | None = None):
        super().__init__(message)
        self.result = result or {}


class EvaluationError(PipelineInputError):
    """The candidate cannot be compared with the champion (a champion whose files cannot be read,
    or that cannot score a holdout its contract says it can): retrying cannot help."""


class DriftInputError(PipelineInputError):
    """The drift check cannot compare the data: no shared column, a numeric column holding text,
    or a setting out of range."""


class DeployRejected(PipelineInputError):
    """The new version did not start or did not pass validation; the old one keeps serving."""

    def __init__(self, message: str, result: dict | None = None):
        super().__init__(message)
        self.result = result or {}


class StageSkipped(PipelineError):
    """Nothing to do for this run (for example: no blessed model to deploy). Not a failure."""

    def __init__(self, message: str, result: dict | None = None):
        super().__init__(message)
        self.result = result or {}


class ModelNotPromoted(StageSkipped):
    """A gate kept the candidate from ``champion`` (not blessed, or beaten by a champion that
    moved meanwhile): the run stops before ``deploy`` and the champion keeps serving."""


class BreakingChangeBlocked(ModelNotPromoted):
    """The candidate's inputs break the champion's contract: registered as a blocked challenger,
    never promoted on its own (only with ``force_promote`` and a reason, or an approval)."""


class NoLabels(StageSkipped):
    """The model has no source of true outcomes: its served performance cannot be checked. Not
    an error: the drift check and the retrain decision go on without it."""


class RetrainWithheld(StageSkipped):
    """Drift was real or performance dropped, but a guard rail (the cool-down) held the retrain
    back: no retrain is requested for this interval."""
