"""The runs of each preset (the paper's tables and figures, the quick CPU default) and the loop
that trains, resumes and reports them."""
from __future__ import annotations

import csv
import json
from dataclasses import replace
from pathlib import Path

from .config import SimConfig
from .figures import FIG5_GROUPS, plot_preset
from .report import report
from .training import train

TABLE1_ROWS = [  # (p_change, statistical, causal), the rows of paper Tables 1 and 4
    (1.0, False, False), (0.75, False, False), (0.75, True, False), (0.75, False, True),
    (0.75, True, True)]

# The quick CPU default (~5 min of training on 2 cores). Smaller batches with more steps and a
# higher, decaying learning rate learned fastest per second in a short search (content R^2 after
# 3000 steps: lr 1e-3 0.43, 3e-3 0.53, 1e-2 0.34; batch 2048 no better per step at 3x the cost).
# Kaiming init: with PyTorch's default init the fifth content direction was still unlearned after
# 20k steps (content R^2 0.78 on three seeds; docs/experiments/identifiability.md and `encoder`).
# The quick preset keeps the estimator it was tuned and validated with (symmetric InfoNCE over the
# batch's other pairs); `--loss lpsimclr` gives the paper's. It evaluates on 1,000 + 1,000 samples.
QUICK = dict(hidden=(64, 256, 256, 64), batch_size=512, steps=20000, lr=3e-3, lr_schedule="cosine",
             init="kaiming", eval_samples=2000, n_cond_draws=5000, loss="symmetric_infonce")


FIG5_CLASSES = tuple(range(3, 11))

# Quick-scale grids of the figures (a CPU-sized subset of the paper's axes, fixed before any run):
# Fig. 5 at k = 3, 5, 10 with one seed (``seeds`` seeds at k = 5); Fig. 6 at n_s, n_m = 2, 5, 10 with
# one shared n_s = n_m = 5 run. The paper gave its discrete runs more steps than its continuous ones
# (600k style/modality, 3M content, vs 300k); at quick scale the discrete-content runs get twice the
# quick budget and the others the quick budget itself.
FIG5_QUICK_CLASSES = (3, 5, 10)
FIG5_QUICK_CONTENT_STEPS = 2 * QUICK["steps"]
FIG6_QUICK_DIMS = (2, 5, 10)

PRESETS = ("quick", "paper", "table1a", "table1b", "table4a", "table4b", "fig5", "fig6", "fig7", "fig8")


SCALES = ("paper", "quick")


def preset_runs(name: str, seeds: int = 3, scale: str = "paper") -> list[tuple[str, SimConfig]]:
    """The runs of a preset as (label, config) pairs: the paper's hyperparameters and grid, or
    (``scale="quick"``) the quick preset's encoder, batch, steps and optimiser on every run, with the
    figures' quick grids."""
    if scale not in SCALES:
        raise ValueError(f"scale must be one of {SCALES}, got {scale!r}")
    if scale == "quick" and name not in ("quick", "paper"):
        return _quick_runs(name, seeds)
    base = SimConfig()
    if name == "quick":
        return [("quick", replace(base, **QUICK))]
    if name == "paper":
        return [("paper", base)]
    table = {"table1a": dict(multimodal=False, n_m=0), "table1b": dict(multimodal=True),
             "table4a": dict(multimodal=False, n_m=0), "table4b": dict(multimodal=True, n_m=0),
             "fig8": dict(multimodal=True, intervention=True, steps=3_000_000)}
    if name in table:
        return [(f"p={p} stat={int(st)} caus={int(ca)} seed={s}",
                 replace(base, p_change=p, statistical=st, causal=ca, seed=s, **table[name]))
                for p, st, ca in TABLE1_ROWS for s in range(seeds)]
    if name == "fig6":  # vary n_s (a, b) and n_m (c, d), multimodal, independent factors
        return ([(f"n_s={n} seed={s}", replace(base, n_s=n, seed=s)) for n in (5, 10, 20, 40) for s in range(seeds)]
                + [(f"n_m={n} seed={s}", replace(base, n_m=n, seed=s)) for n in (5, 10, 20, 40) for s in range(seeds)])
    if name == "fig5":  # one discrete group with k classes; the paper trained 600k / 3M steps
        return [(f"discrete={d} k={k} seed={s}",
                 replace(base, discrete=d, n_classes=k, seed=s, steps=3_000_000 if d == "content" else 600_000))
                for d in FIG5_GROUPS for k in FIG5_CLASSES for s in range(seeds)]
    if name == "fig7":  # validation loss vs encoding size; the elbow should sit at n_c
        return [(f"enc={k} seed={s}", replace(base, encoding_size=k, seed=s))
                for k in range(1, 11) for s in range(seeds)]
    raise ValueError(f"unknown preset {name!r}; choose from {PRESETS}")


def _quick_runs(name: str, seeds: int) -> list[tuple[str, SimConfig]]:
    base = replace(SimConfig(), **QUICK)
    if name == "fig5":
        return [(f"discrete={d} k={k} seed={s}",
                 replace(base, discrete=d, n_classes=k, seed=s,
                         steps=FIG5_QUICK_CONTENT_STEPS if d == "content" else base.steps))
                for d in FIG5_GROUPS for k in FIG5_QUICK_CLASSES for s in range(seeds if k == 5 else 1)]
    if name == "fig6":
        runs = [(f"n_s={n} seed={s}", replace(base, n_s=n, seed=s)) for n in FIG6_QUICK_DIMS for s in range(seeds)]
        return runs + [(f"n_m={n} seed={s}", replace(base, n_m=n, seed=s))
                       for n in FIG6_QUICK_DIMS if n != base.n_s for s in range(seeds)]
    return [(label, replace(cfg, **QUICK)) for label, cfg in preset_runs(name, seeds)]


def run_directory(label: str) -> str:
    """The folder of one run, named by its label ("p=0.75 stat=1 caus=0 seed=0" ->
    "p-0.75_stat-1_caus-0_seed-0"), so that a preset resumed with more seeds finds its earlier runs."""
    return label.replace(" ", "_").replace("=", "-")


def run_preset(name: str, out_dir: Path, overrides: dict, seeds: int = 3, progress: bool = True,
               scale: str = "paper") -> list[dict]:
    """Run (or resume) every run of a preset at ``scale``, with ``overrides`` (explicit flags) on
    top; write results.csv/json, report.md and a figure."""
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    runs = preset_runs(name, seeds=seeds, scale=scale)
    for i, (label, cfg) in enumerate(runs):
        cfg = replace(cfg, **overrides)
        if progress:
            print(f"[{i + 1}/{len(runs)}] {label}")
        rows.append(train(cfg, out_dir / run_directory(label), progress=progress))
    write_preset_outputs(name, out_dir, rows)
    return rows


def finished_runs(name: str, out_dir: Path, seeds: int = 3, scale: str = "paper") -> list[dict]:
    """The results of a preset's runs that have finished in ``out_dir`` (others are skipped), for
    a report while the rest still train."""
    found = [out_dir / run_directory(label) / "results.json"
             for label, _ in preset_runs(name, seeds=seeds, scale=scale)]
    return [json.loads(f.read_text()) for f in found if f.exists()]


def write_preset_outputs(name: str, out_dir: Path, rows: list[dict]) -> None:
    """results.json / results.csv (one row per run), report.md (mean ± sd per setting, next to
    the paper) and the preset's figure, if it has one."""
    (out_dir / "results.json").write_text(json.dumps(rows, indent=1))
    with open(out_dir / "results.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["p_change", "statistical", "causal", "discrete", "n_classes", "n_s", "n_m", "encoding_size",
                    "seed", "steps",
                    "content", "style", "modality", "val_loss", "train_seconds"])
        for r in rows:
            c = r["config"]
            w.writerow([c["p_change"], c["statistical"], c["causal"], c["discrete"], c["n_classes"], c["n_s"], c["n_m"],
                        c["encoding_size"], c["seed"], r["steps"], r["summary"]["content"],
                        r["summary"]["style"], r["summary"]["modality"], r["val_loss"], r["train_seconds"]])
    (out_dir / "report.md").write_text(report(name, rows) + "\n")
    plot_preset(name, rows, out_dir / f"{name}.png")
