"""The resumable training loop shared by the trainers: reuse a finished run, resume from its
checkpoint, step with a progress bar, checkpoint every ``checkpoint_every`` steps and at the end."""
from __future__ import annotations

import json
import time
from collections.abc import Iterable
from dataclasses import asdict
from pathlib import Path

import numpy as np

from .checkpoint import CHECKPOINT_NAME, Checkpointable, restore_checkpoint, save_checkpoint


def finished_result(out: Path | None, cfg, resume: bool) -> dict | None:
    """out/results.json when it was written by exactly ``cfg`` (a finished run to reuse)."""
    if out is None or not resume or not (out / "results.json").exists():
        return None
    previous = json.loads((out / "results.json").read_text())
    return previous if previous.get("config") == json.loads(json.dumps(asdict(cfg))) else None


def run_steps(run: Checkpointable, steps: int, out: Path | None, resume: bool, free_fields: Iterable[str],
              checkpoint_every: int, desc: str, progress: bool) -> tuple[list[float], float]:
    """Resume ``run`` from out/checkpoint.pt (when resuming), call ``run.step()`` until
    ``run.step_count == steps``, checkpointing on the way. Returns (losses of this call, seconds)."""
    from tqdm.auto import tqdm

    ckpt = out / CHECKPOINT_NAME if out is not None else None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        if resume:
            restore_checkpoint(run, ckpt, free_fields)
    losses: list[float] = []
    t0 = time.perf_counter()
    bar = tqdm(total=steps, initial=run.step_count, disable=not progress, dynamic_ncols=True, mininterval=0.5,
               desc=desc)
    while run.step_count < steps:
        losses.append(run.step())
        bar.update(1)
        if run.step_count % 20 == 0:
            bar.set_postfix(loss=f"{np.mean(losses[-20:]):.4f}")
        if ckpt is not None and (run.step_count % checkpoint_every == 0 or run.step_count == steps):
            save_checkpoint(run, ckpt)
    bar.close()
    return losses, time.perf_counter() - t0
