"""``mmcl-fast simulate``: the numerical simulation of Daunhawer et al. (ICLR 2023, Sec. 5.1).

Configuration: :mod:`.config`; training and evaluation: :mod:`.training`; the paper's tables and
figures as presets: :mod:`.presets`; reports: :mod:`.report`, :mod:`.figures`.

    mmcl-fast simulate                                  # the quick default, a few minutes on CPU
    mmcl-fast simulate --preset table1b --out runs/t1b  # paper Table 1 (b), 300k steps per run
    mmcl-fast simulate --preset table1b --scale quick --seeds 1   # the same rows at CPU size
    python -m mmcl_fast.experiments.identifiability.simulate --preset quick --steps 500
"""
from __future__ import annotations

import argparse
from pathlib import Path

from ..common.config_flags import add_config_flags, config_overrides
from ..common.lr_schedule import SCHEDULES
from .config import INITS, LOSSES, SimConfig
from .presets import PRESETS, QUICK, finished_runs, preset_runs, run_preset, write_preset_outputs
from .report import format_r2_table
from .sim_data import DISCRETE_GROUPS


def build_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    p = parser or argparse.ArgumentParser(prog="mmcl-fast simulate", description=__doc__,
                                          formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="quick", choices=PRESETS,
                   help="quick (the CPU default), paper (one run), or a table/figure of the paper")
    p.add_argument("--out", default=None, help="output folder (default runs/simulate-PRESET)")
    p.add_argument("--seeds", type=int, default=3, help="seeds per setting for table/figure presets")
    p.add_argument("--scale", choices=("paper", "quick"), default="paper",
                   help="table/figure presets: the paper's hyperparameters, or the quick preset's "
                        "encoder, batch, steps and optimiser (a CPU-sized version of every run; Figs. 5 and 6 on "
                        "a smaller grid, see presets.py)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--report-only", action="store_true",
                   help="train nothing: write the report of the preset's runs already finished in --out")
    add_config_flags(p, SimConfig, {
        "lr_schedule": dict(choices=SCHEDULES),
        "init": dict(choices=INITS),
        "loss": dict(choices=LOSSES),
        "discrete": dict(choices=DISCRETE_GROUPS),
        "hidden": dict(type=int, nargs="+")})
    return p


def main(argv=None, args=None) -> list[dict]:
    args = args or build_parser().parse_args(argv)
    overrides = config_overrides(args, SimConfig)
    if args.scale == "quick" and args.preset == "paper":
        overrides = {**QUICK, **overrides}
    if "hidden" in overrides:
        overrides["hidden"] = tuple(overrides["hidden"])
    if "seed" in overrides and args.preset not in ("quick", "paper"):
        raise SystemExit("--seed applies to single runs; table presets use --seeds")
    out = Path(args.out or f"runs/simulate-{args.preset}")
    if args.report_only:
        rows = finished_runs(args.preset, out, seeds=args.seeds, scale=args.scale)
        if not rows:
            raise SystemExit(f"no finished run of preset {args.preset!r} in {out}")
        write_preset_outputs(args.preset, out, rows)
        print((out / "report.md").read_text())
        total = len(preset_runs(args.preset, seeds=args.seeds, scale=args.scale))
        print(f"{len(rows)} of {total} runs finished; wrote {out}/")
        return rows
    rows = run_preset(args.preset, out, overrides, seeds=args.seeds, progress=not args.no_progress,
                      scale=args.scale)
    if len(rows) == 1:
        r = rows[0]
        print(f"\n{args.preset}: {r['steps']} steps in {r['train_seconds']:.0f}s, evaluation "
              f"{r['eval_seconds']:.0f}s, validation loss {r['val_loss']:.4f}\n")
        print(format_r2_table(r))
        s = r["summary"]
        print(f"\ncontent R² {s['content']:.3f}   style R² {s['style']:.3f}   modality R² {s['modality']:.3f}"
              f"   ({s['regression']} regression, mean of both encoders)")
    else:
        print((out / "report.md").read_text())
    print(f"\nwrote {out}/")
    return rows


if __name__ == "__main__":
    main()
