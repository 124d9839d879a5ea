"""A short, readable summary of why a quality gate stopped a run: what failed, where the report
is, and what to do. The Airflow task puts it at the head of its failure in the log, and the
failure notification carries it. A gate that stops a run without failing it (a model that was
not promoted: ``deploy`` is skipped) puts the same summary in the skipped task's log.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from pipeline_tasks.core.config import PipelineConfig
from pipeline_tasks.lineage.reports import page_url, report_url

#: What to do, per exception type (by name).
ADVICE = {
    "DataValidationError": "Open the Data Docs, fix the source data (or, if the data is right, "
                           "review the suite's bounds), then clear this task to re-run. The batch "
                           "is quarantined and nothing downstream ran.",
    "IngestError": "Check the 'Source' param and the files for this interval (the message names "
                   "the file), then trigger the run again.",
    "ConfigError": "Correct the trigger param or setting named above and trigger the run again.",
    "ModelNotPromoted": "Nothing was deployed; the champion keeps serving. Open the version's "
                        "page for the evaluation decision and metrics. If the data is right, "
                        "train on more data or change the gate thresholds; to promote anyway, "
                        "trigger with 'Force promotion' and a reason.",
    "BreakingChangeBlocked": "Nothing was deployed; the champion keeps serving and its clients "
                             "keep working. The candidate's inputs differ from the champion's "
                             "(see the schema change on the version's page). To switch clients "
                             "over, update them first, then trigger with 'Force promotion' and "
                             "a reason, or with 'Require approval' so a person decides.",
    "DeployRejected": "The previous version keeps serving and holds the champion alias again. "
                      "Look at the deployment record and the model server log, fix the cause, "
                      "then clear this task (the new version takes the title back).",
    "NoLabels": "Nothing is wrong: the drift check and the retrain decision go on without it. To "
                "check this model's served performance, land its true outcomes (row_id, "
                "event_time and the target) and set the 'labels' param, or a model_labels entry "
                "for this model in the config.",
    "RetrainWithheld": "The live data drifted from the champion's training data (or its "
                       "performance dropped), and a retrain was already requested within the "
                       "cool-down. Open the drift report; if the last retrain did not help, "
                       "trigger ml_training_pipeline on recent data or roll back.",
}
DEFAULT_ADVICE = "Read the message above, fix the input, then clear this task to re-run it."
#: Keys of an error's ``result`` that point at its report, in order of preference.
REPORT_KEYS = ("data_docs_uri", "report_uri", "result_uri", "record_uri", "verdict_uri")


@dataclass(frozen=True)
class FailureSummary:
    task_id: str
    error: str
    message: str
    report: str | None
    advice: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def text(self) -> str:
        lines = [f"=== {self.task_id} stopped the run ===",
                 f"What failed: {self.error}: {self.message}",
                 f"Report:      {self.report or 'none for this failure'}",
                 f"What to do:  {self.advice}"]
        return "\n".join(lines)

    def text_without_message(self) -> str:
        """The summary for a notification: the message can quote the data (a bad value, a
        column name), so it stays in the task log behind the UI's login."""
        lines = [f"=== {self.task_id} stopped the run ===",
                 f"What failed: {self.error} (the details are in the task log)",
                 f"Report:      {self.report or 'none for this failure'}",
                 f"What to do:  {self.advice}"]
        return "\n".join(lines)


def summarize_failure(task_id: str, exc: BaseException, config: PipelineConfig,
                      base_url: str = "") -> FailureSummary:
    """The summary of ``exc`` raised by task ``task_id``; ``base_url`` is the Airflow UI's."""
    name = type(exc).__name__
    result = getattr(exc, "result", None) or {}
    report = None
    for key in REPORT_KEYS:
        uri = result.get(key) if isinstance(result, dict) else None
        if uri:
            report = report_url(uri, config, base_url) or uri
            break
    if report is None and isinstance(result, dict) and result.get("model_name") \
            and result.get("version"):  # a model version: its lineage page
        report = page_url(base_url, "models", result["model_name"], "versions",
                          str(result["version"]))
    return FailureSummary(task_id=task_id, error=name, message=str(exc), report=report,
                          advice=advice_for(exc))


def notification_text(task_id: str, exc: BaseException | None, config: PipelineConfig,
                      base_url: str = "") -> str:
    """What a failure notification says: the summary of the library error behind ``exc`` (the
    Airflow exception that failed the task wraps it) without its message."""
    if exc is None:
        return f"=== {task_id} stopped the run ===\nthe task failed; see its log"
    cause = exc.__cause__ if exc.__cause__ is not None else exc
    return summarize_failure(task_id, cause, config, base_url).text_without_message()


def advice_for(exc: BaseException) -> str:
    """The error's own advice, else that of its type or of the nearest base type that has one
    (a subclass of ``DeployRejected`` gets its advice, not the generic text)."""
    own = getattr(exc, "advice", None)
    if own:
        return own
    for cls in type(exc).__mro__:
        if cls.__name__ in ADVICE:
            return ADVICE[cls.__name__]
    return DEFAULT_ADVICE
