"""Suite I/O: find a model's expectation suite, read and check suite files, name them for MLflow.

Suite files are GX's own ExpectationSuite JSON (``suite.to_json_dict()``), so a reviewer can edit
them and copy them into the repo; where they live comes from ``core.layout`` (reviewed suites in
``config.repo_suites_dir``, inferred ones in ``config.suites_uri``). A model version records its
suite as a ``suite_ref``: ``repo:<file>`` for a reviewed repo suite (its path differs between
checkouts), else the suite's URI.

Great Expectations is imported inside the functions: importing this module is cheap.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline_tasks.core import layout, storage
from pipeline_tasks.core.errors import ConfigError
from pipeline_tasks.data.gx_runner import import_gx

if TYPE_CHECKING:
    from pipeline_tasks.core.config import PipelineConfig
    from pipeline_tasks.core.schema import ModelContract

#: What to do about a suite file that cannot be used (the failure summary shows it).
SUITE_ADVICE = ("Fix the suite file named above (GX ExpectationSuite JSON: an object whose "
                "'expectations' list holds entries with a 'type' and 'kwargs'), then clear this "
                "task to re-run.")

#: ``suite_ref`` prefix of a reviewed suite in the repo (its path differs between checkouts).
REPO_REF = "repo:"

# Keys of an expectation in GX's suite JSON that we pass on; "id" and "rendered_content" belong to
# a stored context and are dropped so that an edited or copied file loads anywhere.
_EXPECTATION_KEYS = ("type", "kwargs", "meta", "notes", "description", "severity")


def find_suite_uri(model_name: str, config: PipelineConfig,
                   champion: ModelContract | None = None,
                   dataset_name: str | None = None) -> str | None:
    """The champion's suite, else the model's reviewed repo suite, else one inferred on its
    first run, else the reviewed repo suite of its dataset, else ``None``. A champion whose
    recorded suite is gone is an error, not a silent fallback."""
    if champion is not None and champion.suite_uri:
        uri = resolve_suite_ref(champion.suite_uri, config)
        if not storage.exists(uri):
            raise ConfigError(
                f"champion v{champion.version} of {model_name} was validated against the suite "
                f"{uri}, which no longer exists: restore it, or re-run with 'Allow schema change'",
                advice="Restore the suite file the champion was validated against, or trigger "
                       "with 'Allow schema change' to check the batch against a suite inferred "
                       "from it.",
            )
        return uri
    candidates = [layout.repo_suite(config, f"{model_name}.json"),
                  layout.inferred_suite(config, model_name)]
    if dataset_name and dataset_name != model_name:
        candidates.append(layout.repo_suite(config, f"{dataset_name}.json"))
    for uri in candidates:
        if storage.exists(uri):
            return uri
    return None


def suite_ref(uri: str, config: PipelineConfig) -> str:
    """How a model version names its suite: ``repo:<file>`` for a reviewed repo suite."""
    repo = storage.join(layout.repo_suites_root(config), "")
    if uri.startswith(repo):
        return REPO_REF + uri[len(repo):]
    return as_uri(uri)


def resolve_suite_ref(ref: str, config: PipelineConfig) -> str:
    """The file a ``suite_ref`` names in this checkout (the inverse of ``suite_ref``)."""
    if ref.startswith(REPO_REF):
        return layout.repo_suite(config, ref[len(REPO_REF):])
    return ref


def proposed_suite_uri(model_name: str, suite_json: dict, config: PipelineConfig) -> str:
    """Where a suite inferred for a schema change is kept: named by its content, so versions
    that record it keep finding the same file."""
    import hashlib
    import json

    digest = hashlib.sha256(json.dumps(suite_json, sort_keys=True, default=str).encode())
    return layout.proposed_suite(config, model_name, digest.hexdigest()[:16])


def as_uri(uri: str) -> str:
    """Plain local paths become ``file://`` URIs; URIs are returned as they are."""
    if "://" in uri:
        return uri
    return Path(uri).resolve().as_uri()


def load_suite(uri: str, *, default_name: str):
    """Read an ExpectationSuite JSON file (``suite.to_json_dict()`` format) and check every entry.

    GX silently drops an expectation it cannot build; here a bad entry is a ``ConfigError`` that
    says which one, so a typo in a reviewed suite cannot switch a check off.
    """
    try:
        data = storage.read_json(uri)
    except ValueError as exc:
        raise ConfigError(f"suite {uri} is not valid JSON: {exc}", advice=SUITE_ADVICE) from exc
    return suite_from_dict(data, default_name=default_name, source=uri)


def suite_from_dict(data: Any, *, default_name: str, source: str = "suite"):
    """An ExpectationSuite from its JSON dict, each entry checked (``ConfigError`` naming it)."""
    gx = import_gx()
    from great_expectations.expectations.expectation_configuration import (
        ExpectationConfiguration,
    )

    if not isinstance(data, dict) or not isinstance(data.get("expectations", []), list):
        raise ConfigError(f"{source}: expected a JSON object with an 'expectations' list",
                          advice=SUITE_ADVICE)
    expectations = []
    for index, raw in enumerate(data.get("expectations") or []):
        if not isinstance(raw, dict):
            raise ConfigError(f"{source}: expectation #{index} is not an object",
                              advice=SUITE_ADVICE)
        entry = dict(raw)
        if "type" not in entry and "expectation_type" in entry:  # GX 0.x files
            entry["type"] = entry.pop("expectation_type")
        entry = {key: entry[key] for key in _EXPECTATION_KEYS if entry.get(key) is not None}
        entry.setdefault("kwargs", {})
        try:
            expectations.append(ExpectationConfiguration(**entry).to_domain_obj())
        except Exception as exc:  # GX raises several types here; re-raised with the entry named
            raise ConfigError(
                f"{source}: expectation #{index} ({entry.get('type')}) is not valid: {exc}",
                advice=SUITE_ADVICE,
            ) from exc
    return gx.ExpectationSuite(
        name=str(data.get("name") or default_name),
        expectations=expectations,
        suite_parameters=data.get("suite_parameters") or None,
        meta=data.get("meta") or None,
        notes=data.get("notes"),
    )


def with_expectations(suite, extra: list):
    """``suite`` plus the run-time checks it does not already hold. A new suite object: adding
    to a loaded one would need a GX data context to store it in."""
    if not extra:
        return suite
    gx = import_gx()
    kept = list(suite.expectations)
    for exp in extra:
        if not any(type(suite)._expectations_are_equalish(exp, old) for old in kept):
            kept.append(exp)
    return gx.ExpectationSuite(name=suite.name, expectations=kept,
                               suite_parameters=suite.suite_parameters or None,
                               meta=suite.meta or None, notes=suite.notes)
