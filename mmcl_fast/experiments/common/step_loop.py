"""The resumable training loop shared by the trainers: reuse a finished run, resume from its
checkpoint, step with a progress bar, checkpoint every ``checkpoint_every`` steps and at the end."""
from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict
from pathlib import Path

import numpy as np

from .checkpoint import CHECKPOINT_NAME, Checkpointable, config_differences, restore_checkpoint, save_checkpoint


def finished_result(out: Path | None, cfg, resume: bool, result_free_fields: Iterable[str] = ()) -> dict | None:
    """out/results.json when it was written by ``cfg`` (a finished run to reuse): every field of
    the stored configuration equals ``cfg``'s, except ``result_free_fields`` (bookkeeping that
    cannot change a result, such as the thread count or the checkpoint interval)."""
    if out is None or not resume or not (out / "results.json").exists():
        return None
    previous = json.loads((out / "results.json").read_text())
    differences = config_differences(previous.get("config", {}), asdict(cfg), result_free_fields)
    return None if differences else previous


def run_steps(run: Checkpointable, steps: int, out: Path | None, resume: bool, free_fields: Iterable[str],
              checkpoint_every: int, desc: str, progress: bool,
              on_step: Callable[[int, float], None] | None = None) -> tuple[list[float], float]:
    """Resume ``run`` from out/checkpoint.pt (when resuming; a checkpoint of another configuration
    is refused, naming the fields, unless they are in ``free_fields``), call ``run.step()`` until
    ``run.step_count == steps``, checkpointing every ``checkpoint_every`` steps and at the end.
    ``on_step(step_count, loss)`` runs after every step. Returns (losses of this call, seconds)."""
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
        if on_step is not None:
            on_step(run.step_count, losses[-1])
        if run.step_count % 20 == 0:
            rate = len(losses) / (time.perf_counter() - t0)
            bar.set_postfix(loss=f"{np.mean(losses[-20:]):.4f}", steps_per_s=f"{rate:.2f}")
        if ckpt is not None and (run.step_count % checkpoint_every == 0 or run.step_count == steps):
            save_checkpoint(run, ckpt)
    bar.close()
    return losses, time.perf_counter() - t0
