"""Run Great Expectations: a quiet import, and one checkpoint run that renders Data Docs.

GX is imported inside the functions, so importing this module is cheap (DAG parsing may).
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import re
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from pipeline_tasks.core import storage
from pipeline_tasks.core.names import safe_name

if TYPE_CHECKING:
    import pandas as pd
    from great_expectations.core.expectation_validation_result import (
        ExpectationSuiteValidationResult,
    )

log = logging.getLogger(__name__)

# Not "local_site": the ephemeral context already has a site of that name in a random tmp dir.
DATA_DOCS_SITE = "pipeline_data_docs"


def import_gx():
    """Import GX quietly: no usage statistics, no INFO flood, no progress bars."""
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    for name in ("great_expectations", "great_expectations._docs_decorators"):
        logger = logging.getLogger(name)
        if logger.level == logging.NOTSET:  # leave a level someone chose alone
            logger.setLevel(logging.WARNING)
    import great_expectations as gx

    # This module sets itself to INFO on import and then logs each ephemeral context it makes.
    noisy = logging.getLogger("great_expectations.data_context.types.base")
    if noisy.level == logging.INFO:
        noisy.setLevel(logging.WARNING)
    return gx


def run_checkpoint(
    df: pd.DataFrame, suite, *, docs_uri: str, run_key: str
) -> tuple[ExpectationSuiteValidationResult, str]:
    """Validate ``df`` once with a checkpoint that also renders Data Docs into ``docs_uri``.

    The site is built in a local temporary folder and then copied file by file with atomic writes,
    so the same code serves ``file://`` and remote report stores. Returns the GX result and the
    validation page's path relative to the site.
    """
    gx = import_gx()
    from great_expectations.checkpoint import UpdateDataDocsAction
    from great_expectations.core.run_identifier import RunIdentifier
    from great_expectations.data_context.types.base import ProgressBarsConfig

    with tempfile.TemporaryDirectory(prefix="gx-docs-") as build_dir:
        context = gx.get_context(mode="ephemeral")
        context.variables.progress_bars = ProgressBarsConfig(globally=False)
        context.add_data_docs_site(
            site_name=DATA_DOCS_SITE,
            site_config={
                "class_name": "SiteBuilder",
                "show_how_to_buttons": False,
                "store_backend": {
                    "class_name": "TupleFilesystemStoreBackend",
                    "base_directory": build_dir,
                },
                "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
            },
        )
        asset = context.data_sources.add_pandas("pipeline").add_dataframe_asset("batch")
        batch_definition = asset.add_batch_definition_whole_dataframe("whole_batch")
        suite = context.suites.add(suite)
        definition = context.validation_definitions.add(
            gx.ValidationDefinition(
                name=f"{suite.name}-validation", data=batch_definition, suite=suite
            )
        )
        checkpoint = context.checkpoints.add(
            gx.Checkpoint(
                name=f"{suite.name}-checkpoint",
                validation_definitions=[definition],
                actions=[
                    UpdateDataDocsAction(name="update_data_docs", site_names=[DATA_DOCS_SITE])
                ],
                result_format="SUMMARY",
            )
        )
        run_id = RunIdentifier(run_name=run_name(run_key), run_time=run_time(run_key))
        checkpoint_result = checkpoint.run(batch_parameters={"dataframe": df}, run_id=run_id)
        ((identifier, gx_result),) = checkpoint_result.run_results.items()
        page = "/".join(("validations", *identifier.to_tuple())) + ".html"
        if not (Path(build_dir) / page).is_file():
            page = "index.html"  # rendering failed (GX logs why); the index still lists the run
        for path in sorted(Path(build_dir).rglob("*")):
            if path.is_file():
                rel = path.relative_to(build_dir).as_posix()
                storage.atomic_write_bytes(storage.join(docs_uri, rel), path.read_bytes())
    return gx_result, page


def run_name(run_key: str) -> str:
    """The GX run name of a run key: its last segment without ``run_id=``, made plain."""
    last = run_key.rstrip("/").rpartition("/")[2]
    return safe_name(last.removeprefix("run_id="), "run")


def run_time(run_key: str) -> dt.datetime:
    """The data interval's end when the run key has one, so a retry writes the same page."""
    match = re.search(r"interval_end=(\d{4}-\d{2}-\d{2})", run_key)
    if match:
        return dt.datetime.fromisoformat(match.group(1)).replace(tzinfo=dt.UTC)
    return dt.datetime.now(dt.UTC)
