"""Checkpoints of a training run: one file format and one resume rule for every trainer.

A trainer's run object (``Checkpointable``) exposes its configuration dataclass ``cfg``, its
``step_count`` and ``state_dict()`` / ``load_state_dict()`` of its models, optimiser and random
streams. A checkpoint file holds

    {"config": asdict(cfg), "step": step_count, "state": run.state_dict(),
     "torch_rng": torch.get_rng_state()}

written atomically (a temporary file renamed over the old one, so an interrupted save never
leaves a truncated checkpoint) and read with ``torch.load(weights_only=True)``.

A run resumes only from a checkpoint whose configuration equals its own in every field except
those the trainer declares free (the step budget, evaluation settings, ...). Any other
difference raises ``CheckpointMismatch`` naming each differing field with both values: training
on from another configuration's weights would silently mix two experiments.
"""
from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import asdict
from pathlib import Path
from typing import Any, Protocol

import torch

CHECKPOINT_NAME = "checkpoint.pt"


class Checkpointable(Protocol):
    cfg: Any
    step_count: int

    def state_dict(self) -> dict: ...

    def load_state_dict(self, state: dict) -> None: ...


class CheckpointMismatch(ValueError):
    """A checkpoint was written by a different configuration."""


def _plain(v):
    """Config values as they compare after a save/load round trip (tuples become lists)."""
    if isinstance(v, (tuple, list)):
        return [_plain(x) for x in v]
    return v


def config_differences(saved: dict, current: dict, free_fields: Iterable[str] = ()) -> dict[str, tuple]:
    """{field: (saved value, current value)} for every field that differs and is not free."""
    free = set(free_fields)
    keys = (saved.keys() | current.keys()) - free
    missing = object()
    diff = {}
    for k in sorted(keys):
        a, b = _plain(saved.get(k, missing)), _plain(current.get(k, missing))
        if a != b:
            diff[k] = (None if a is missing else a, None if b is missing else b)
    return diff


def save_checkpoint(run: Checkpointable, path: str | Path) -> None:
    path = Path(path)
    state = {"config": {k: _plain(v) for k, v in asdict(run.cfg).items()}, "step": run.step_count,
             "state": run.state_dict(), "torch_rng": torch.get_rng_state()}
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def restore_checkpoint(run: Checkpointable, path: str | Path, free_fields: Iterable[str] = ()) -> bool:
    """Load ``path`` into ``run`` when it exists; False when there is none.

    Raises ``CheckpointMismatch`` when the checkpoint's configuration differs from ``run.cfg`` in a
    field outside ``free_fields``.
    """
    path = Path(path)
    if not path.exists():
        return False
    ckpt = torch.load(path, weights_only=True)
    if not {"config", "step", "state", "torch_rng"} <= ckpt.keys():
        raise CheckpointMismatch(f"{path} is not in this version's checkpoint format (keys: {sorted(ckpt)}); "
                                 "delete it to start the run over")
    diff = config_differences(ckpt["config"], asdict(run.cfg), free_fields)
    if diff:
        fields = "; ".join(f"{k}: {a!r} in the checkpoint, {b!r} now" for k, (a, b) in diff.items())
        raise CheckpointMismatch(f"{path} was written by a different configuration ({fields}); "
                                 "use another output folder, or delete the checkpoint to start over")
    run.load_state_dict(ckpt["state"])
    run.step_count = ckpt["step"]
    torch.set_rng_state(ckpt["torch_rng"])
    return True
