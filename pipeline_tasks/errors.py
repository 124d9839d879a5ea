"""Named exceptions raised by the pipeline stages.

``PipelineInputError`` subclasses mean the *input* is wrong: retrying cannot help, so the DAG
fails the task at once instead of retrying it.
"""


class PipelineError(Exception):
    """Base class of every error the library raises on purpose. ``advice`` (optional) says what
    to do; the failure summary shows it instead of its type's general advice."""

    def __init__(self, message: str = "", *args, advice: str | None = None):
        super().__init__(message, *args)
        self.advice = advice


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
