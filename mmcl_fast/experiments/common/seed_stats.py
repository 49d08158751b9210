"""Summaries of one metric over a run's seeds."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def mean_std(values: Sequence[float]) -> dict[str, float]:
    """{"mean", "std" (sample standard deviation, ddof = 1; 0 for one value), "n"}."""
    a = np.asarray(values, dtype=float)
    if a.size == 0:
        raise ValueError("mean_std needs at least one value")
    return {"mean": float(a.mean()), "std": float(a.std(ddof=1)) if a.size > 1 else 0.0, "n": int(a.size)}
