"""Synthetic tabular data with a planted, known drift (a test helper, not part of the library).

Shared by the drift calibration tests (``test_drift.py``) and ``benchmarks/bench_drift.py``, which
puts this folder on ``sys.path`` to import it as ``synthetic_data``: the same generator makes
the 20-seed calibration frames and the 1M-row benchmark frames, so the benchmark measures the
data whose detection power the tests show. Numeric columns are normal with per-column scales;
categorical columns are pandas ``category`` (one byte per row, as Parquet dictionary columns
read back), drawn from a fixed category mix.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd

CATEGORIES = ("red", "green", "blue", "cyan", "magenta", "yellow")
# The reference mix, and the changed mix of a "mixed" categorical column: the dominant category
# halves and the rare ones grow. Jensen-Shannon distance 0.17, over Evidently's default 0.1.
CATEGORY_MIX = (0.30, 0.25, 0.18, 0.12, 0.09, 0.06)
CATEGORY_MIX_SHIFTED = (0.15, 0.20, 0.20, 0.15, 0.15, 0.15)


def numeric_name(i: int) -> str:
    return f"num_{i:02d}"


def categorical_name(i: int) -> str:
    return f"cat_{i:02d}"


def drift_frames(
    rows_reference: int,
    rows_current: int,
    *,
    numeric: int = 10,
    categorical: int = 0,
    shifted: Sequence[str] = (),
    shift_sigma: float = 0.3,
    mixed: Sequence[str] = (),
    seed: int = 0,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A reference and a current frame with the same columns.

    ``num_00..`` are normal with mean ``10 * i`` and standard deviation ``1 + i % 3``; in the
    current frame the ``shifted`` ones move by ``shift_sigma`` standard deviations. ``cat_00..``
    follow ``CATEGORY_MIX``; the ``mixed`` ones follow ``CATEGORY_MIX_SHIFTED`` in the current
    frame. Everything else is drawn from the same distribution on both sides.
    """
    import numpy as np
    import pandas as pd

    numeric_names = [numeric_name(i) for i in range(numeric)]
    categorical_names = [categorical_name(i) for i in range(categorical)]
    unknown = sorted((set(shifted) - set(numeric_names)) | (set(mixed) - set(categorical_names)))
    if unknown:
        raise ValueError(f"drift_frames: no such column(s) to drift: {', '.join(unknown)}")
    rng = np.random.default_rng(seed)

    def frame(rows: int, is_current: bool) -> pd.DataFrame:
        data: dict[str, object] = {}
        for i, name in enumerate(numeric_names):
            mean, std = 10.0 * i, 1.0 + i % 3
            if is_current and name in shifted:
                mean += shift_sigma * std
            data[name] = rng.normal(mean, std, rows)
        for name in categorical_names:
            mix = CATEGORY_MIX_SHIFTED if is_current and name in mixed else CATEGORY_MIX
            codes = rng.choice(len(CATEGORIES), size=rows, p=mix).astype(np.int8)
            data[name] = pd.Categorical.from_codes(codes, categories=list(CATEGORIES))
        return pd.DataFrame(data)

    return frame(rows_reference, False), frame(rows_current, True)
