"""Learning-rate schedules shared by the trainers."""
from __future__ import annotations

import math

SCHEDULES = ("constant", "cosine")


def learning_rate(schedule: str, base: float, step: int, total: int) -> float:
    """lr at `step` of `total`: "constant" gives `base`; "cosine" gives
    base * (1 + cos(pi * min(step, total) / total)) / 2, decaying from `base` to 0 at `total`."""
    if schedule == "constant":
        return base
    if schedule == "cosine":
        return 0.5 * base * (1.0 + math.cos(math.pi * min(step, total) / max(total, 1)))
    raise ValueError(f"unknown lr_schedule {schedule!r} (choose from {SCHEDULES})")
