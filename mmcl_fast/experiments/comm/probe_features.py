"""Which frozen features of a CoMM / baseline run hold R, U (and S)? The run's checkpoint, and a
randomly initialised model of the same configuration, probed on every feature kind of
:attr:`.training.CommRun.FEATURE_KINDS` with the trainer's own linear probe.

    python -m mmcl_fast.experiments.comm.probe_features runs/comm/comm/unbiased/seed0 --out probe.json
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from ..common.checkpoint import CHECKPOINT_NAME
from .config import CommConfig
from .training import CommRun
from .trifeatures import render_split


def probe_features(run_dir: str | Path, kinds=CommRun.FEATURE_KINDS, random_init: bool = True,
                   threads: int = 1) -> dict:
    """{"trained/<kind>": scores, "random_init/<kind>": scores} for the run in ``run_dir``."""
    torch.set_num_threads(threads)
    path = Path(run_dir) / CHECKPOINT_NAME
    if not path.exists():
        raise FileNotFoundError(f"no {CHECKPOINT_NAME} in {run_dir}")
    ckpt = torch.load(path, weights_only=True)
    cfg = CommConfig(**ckpt["config"])
    trained = CommRun(cfg)
    runs = {"trained": trained}
    if random_init:
        runs["random_init"] = CommRun(cfg, trained.train_data)  # built before the state is loaded: seed's init
    trained.load_state_dict(ckpt["state"])
    test = render_split("test", seed=cfg.seed, rendering=cfg.rendering)
    out = {"config": ckpt["config"], "step": ckpt["step"]}
    for name, run in runs.items():
        for kind in kinds:
            t0 = time.perf_counter()
            out[f"{name}/{kind}"] = run.evaluate(test, kind)
            print(f"{name:12s} {kind:15s} " + " ".join(f"{k} {v:.3f}" for k, v in out[f"{name}/{kind}"].items()
                                                       if k in ("R", "U1", "U2", "U", "S"))
                  + f"  ({time.perf_counter() - t0:.0f} s)", flush=True)
    return out


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(prog="python -m mmcl_fast.experiments.comm.probe_features", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dir", help="a run folder holding checkpoint.pt")
    p.add_argument("--kinds", nargs="+", default=list(CommRun.FEATURE_KINDS), choices=CommRun.FEATURE_KINDS)
    p.add_argument("--no-random-init", action="store_true", help="probe the trained model only")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", help="write the scores as JSON here")
    args = p.parse_args(argv)
    out = probe_features(args.run_dir, args.kinds, not args.no_random_init, args.threads)
    if args.out:
        Path(args.out).write_text(json.dumps(out, indent=1))
    return out


if __name__ == "__main__":
    main()
