"""How the labelled rows are split into training and holdout sides.

With a time column the last ``holdout_fraction`` of the time range is the holdout (rows sharing
the cutoff timestamp all go to it); otherwise a seeded random split, stratified for
classification when every class has two rows.
"""

from __future__ import annotations

import logging

from pipeline_tasks.core.config import PipelineConfig
from pipeline_tasks.core.errors import PipelineInputError
from pipeline_tasks.model.metrics import CLASSIFICATION

log = logging.getLogger(__name__)


def split_rows(frame, y, task_type: str, time_col: str | None, config: PipelineConfig):
    """Row positions of the training and holdout sides, and how they were chosen."""
    import numpy as np
    import pandas as pd
    from sklearn.model_selection import train_test_split

    n = len(frame)
    positions = np.arange(n)
    if time_col is not None:
        stamps = frame[time_col]
        if stamps.dt.tz is not None:
            stamps = stamps.dt.tz_convert("UTC").dt.tz_localize(None)
        order = np.argsort(stamps.to_numpy(), kind="stable")
        times = stamps.to_numpy()[order]
        cut = times[min(int(n * (1 - config.holdout_fraction)), n - 1)]
        # Rows sharing the cutoff timestamp all go to the holdout: no same-time leak across sides.
        boundary = int(np.searchsorted(times, cut, side="left"))
        if boundary == 0:
            raise PipelineInputError(
                f"time split impossible: every row shares the first timestamp of {time_col!r}"
            )
        info = {"split": "time", "cutoff_utc": pd.Timestamp(cut).isoformat()}
        return order[:boundary], order[boundary:], info
    stratify = None
    if task_type == CLASSIFICATION:
        if y.value_counts().min() >= 2:
            stratify = y
        else:
            log.info("a class has a single row: random split instead of stratified")
    train_idx, holdout_idx = train_test_split(
        positions, test_size=config.holdout_fraction, random_state=config.seed, stratify=stratify
    )
    info = {"split": "stratified" if stratify is not None else "random"}
    return np.sort(train_idx), np.sort(holdout_idx), info
