"""Learning-rate schedules shared by the trainers."""
from __future__ import annotations

import math

SCHEDULES = ("constant", "cosine")


def learning_rate(schedule: str, base: float, step: int, total: int, warmup: int = 0) -> float:
    """lr at `step` of `total`: "constant" gives `base`; "cosine" gives
    base * (1 + cos(pi * min(step, total) / total)) / 2, decaying from `base` to 0 at `total`.
    ``warmup`` > 0 multiplies either by the linear ramp min(1, (step + 1) / warmup)."""
    if warmup < 0:
        raise ValueError(f"warmup must be >= 0, got {warmup}")
    ramp = min(1.0, (step + 1) / warmup) if warmup else 1.0
    if schedule == "constant":
        return base * ramp
    if schedule == "cosine":
        return ramp * 0.5 * base * (1.0 + math.cos(math.pi * min(step, total) / max(total, 1)))
    raise ValueError(f"unknown lr_schedule {schedule!r} (choose from {SCHEDULES})")
