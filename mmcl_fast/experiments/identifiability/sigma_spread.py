"""How much style leaks under statistical dependence, per drawn Σ: one table row's runs over many
seeds, each seed's Σ_s, and the spread of the 3-seed means the paper reports.

With statistical dependence (paper Sec. 5.1) every seed draws its own Σ_s ~ Wishart(n_s, I), and
the style change s~ = s + M ε, ε ~ N(0, Σ_s), M = diag(Bernoulli(p)) per dimension, replaces a
fraction of each style direction v's variance:

    Var(vᵀ M ε) / Var(vᵀ s) = p² + p (1 - p) · vᵀ D v / vᵀ Σ_s v,        D = diag(Σ_s).

Its minimum over v, p² + p (1 - p) / λ_max(R) with R = D^(-1/2) Σ_s D^(-1/2) the correlation
matrix, is the *least-changed* style direction (p for Σ_s = I): the closer it is to p², the more
that direction behaves like content, and the more of it an encoder may keep.

    python -m mmcl_fast.experiments.identifiability.sigma_spread --table table4b \\
        runs/table4b_quick/p-0.75_stat-1_caus-0_seed-{0,1,2} runs/t4b_stat_seeds/seed-* \\
        --out results/identifiability/table4b_statistical_sigma_spread

writes OUT.json and OUT.md: per seed the content and style R², log10 cond(Σ_s), λ_max(R) and the
least-changed fraction; the Spearman correlation of style with each statistic; the mean ± sd
over all seeds next to the paper; and the distribution of the means of every 3 seeds, with the
share of them that meet the reproduction's style target (paper_comparison.py).
"""
from __future__ import annotations

import argparse
import itertools
import json
from pathlib import Path

import numpy as np

from .config import SimConfig
from .paper_comparison import targets
from .report import paper_table
from .sim_data import LatentSampler

# Fields a row's runs may differ in: the seed, and the evaluation and bookkeeping settings.
FREE_FIELDS = ("seed", "checkpoint_every", "eval_samples", "nonlinear_eval")


def least_changed_fraction(sigma: np.ndarray, p_change: float) -> float:
    """min over directions v of Var(vᵀ M ε) / Var(vᵀ s) for s, ε ~ N(0, sigma), M = diag(Bernoulli(p))."""
    sigma = np.asarray(sigma, dtype=np.float64)
    if sigma.ndim != 2 or sigma.shape[0] != sigma.shape[1] or sigma.shape[0] == 0:
        raise ValueError(f"sigma must be a non-empty square matrix, got shape {sigma.shape}")
    if not 0.0 <= p_change <= 1.0:
        raise ValueError(f"p_change must lie in [0, 1], got {p_change}")
    d = np.sqrt(np.diag(sigma))
    if not np.all(d > 0):
        raise ValueError("sigma must have a positive diagonal")
    lam_max = float(np.linalg.eigvalsh(sigma / np.outer(d, d))[-1])
    return p_change ** 2 + p_change * (1.0 - p_change) / lam_max


def style_sigma(config: dict) -> np.ndarray:
    """The Σ_s of a run, rebuilt by the run's own latent sampler from its configuration."""
    allowed = set(SimConfig.__dataclass_fields__)
    cfg = SimConfig(**{k: v for k, v in config.items() if k in allowed})
    chol = LatentSampler(cfg.spec(), seed=cfg.seed).chol["s"].double().numpy()
    return chol @ chol.T


def load_runs(folders: list[Path]) -> list[dict]:
    """The results.json of each folder; all must be one table row (statistical dependence) that
    differs only in the seed, and no seed may repeat."""
    runs = []
    for f in folders:
        path = Path(f) / "results.json"
        if not path.exists():
            raise ValueError(f"{f}: no results.json (an unfinished run?)")
        r = json.loads(path.read_text())
        runs.append(r[0] if isinstance(r, list) else r)
    if not runs:
        raise ValueError("no runs given")
    first = runs[0]["config"]
    if not first.get("statistical"):
        raise ValueError("the runs have no statistical dependence: Σ_s is the identity")
    for f, r in zip(folders, runs):
        diff = {k: (r["config"].get(k), first.get(k)) for k in set(first) | set(r["config"])
                if k not in FREE_FIELDS and r["config"].get(k) != first.get(k)}
        if diff:
            raise ValueError(f"{f} differs from {folders[0]} in more than the seed: {diff}")
    seeds = [r["config"]["seed"] for r in runs]
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"a seed occurs twice: {sorted(seeds)}")
    return runs


def spread(runs: list[dict], table: str, group: int = 3) -> dict:
    """Per-seed rows, correlations, all-seed means and the distribution of ``group``-seed means."""
    from scipy.stats import spearmanr

    cfg = runs[0]["config"]
    paper = paper_table(table)
    if paper is None:
        raise ValueError(f"the paper has no table for preset {table!r}")
    key = (float(cfg["p_change"]), bool(cfg["statistical"]), bool(cfg["causal"]))
    refs = [dict(zip(paper["columns"], row)) for row in paper["rows"]]
    ref = next((r for r in refs if (float(r["p_chg"]), bool(r["statistical"]), bool(r["causal"])) == key), None)
    if ref is None:
        raise ValueError(f"table {table!r} has no row with p(chg.), stat., caus. = {key}")
    if len(runs) < group:
        raise ValueError(f"need at least {group} seeds for {group}-seed means, got {len(runs)}")
    rows = []
    for r in sorted(runs, key=lambda r: r["config"]["seed"]):
        sigma = style_sigma(r["config"])
        d = np.sqrt(np.diag(sigma))
        ev = np.linalg.eigvalsh(sigma)
        rows.append({"seed": r["config"]["seed"], "content": r["summary"]["content"], "style": r["summary"]["style"],
                     "log10_cond": float(np.log10(ev[-1] / ev[0])),
                     "lambda_max_corr": float(np.linalg.eigvalsh(sigma / np.outer(d, d))[-1]),
                     "least_changed": least_changed_fraction(sigma, cfg["p_change"]),
                     "train_seconds": r.get("train_seconds")})
    style = np.array([r["style"] for r in rows])
    content = np.array([r["content"] for r in rows])
    corr = {}
    for stat in ("least_changed", "lambda_max_corr", "log10_cond"):
        res = spearmanr(style, [r[stat] for r in rows])
        corr[stat] = {"spearman": float(res.statistic), "p_value": float(res.pvalue)}
    paper_row = {k: ref[k] for k in paper["columns"][3:]}
    means = np.array([style[list(ix)].mean() for ix in itertools.combinations(range(len(rows)), group)])
    in_band = [targets(1.0, m, float("nan"), paper_row)["style"] for m in means]
    first = float(style[[i for i, r in enumerate(rows) if r["seed"] < group]].mean()) \
        if sum(r["seed"] < group for r in rows) == group else float("nan")
    return {"table": table, "p_change": key[0], "statistical": key[1], "causal": key[2],
            "config": {k: v for k, v in cfg.items() if k not in FREE_FIELDS},
            "paper": paper_row, "seeds": len(rows), "per_seed": rows,
            "style": {"mean": float(style.mean()), "sd": float(style.std(ddof=1))},
            "content": {"mean": float(content.mean()), "sd": float(content.std(ddof=1))},
            "targets_met_all_seeds": targets(float(content.mean()), float(style.mean()), float("nan"), paper_row),
            "style_spearman": corr,
            "group_means": {"group": group, "count": int(means.size), "min": float(means.min()),
                            "max": float(means.max()), "share_meeting_style_target": float(np.mean(in_band)),
                            "share_at_or_below_paper": float(np.mean(means <= paper_row["style_r2"])),
                            "seeds_below_group_mean": first,
                            "share_at_or_above_seeds_below_group": float(np.mean(means >= first - 1e-12))}}


def markdown(s: dict) -> str:
    p, g = s["paper"], s["group_means"]
    lines = [f"{s['table']}, p(chg.) = {s['p_change']}, stat. = {int(s['statistical'])}, "
             f"caus. = {int(s['causal'])}: {s['seeds']} seeds",
             "", "| seed | content R² | style R² | log10 cond(Σ_s) | λ_max(corr Σ_s) | least-changed fraction "
             "| train s |",
             "|---|---|---|---|---|---|---|"]
    for r in s["per_seed"]:
        t = "—" if r["train_seconds"] is None else f"{r['train_seconds']:.0f}"
        lines.append(f"| {r['seed']} | {r['content']:.3f} | {r['style']:.3f} | {r['log10_cond']:.2f} | "
                     f"{r['lambda_max_corr']:.2f} | {r['least_changed']:.3f} | {t} |")
    lines += ["", f"All seeds: content {s['content']['mean']:.3f} ± {s['content']['sd']:.3f}, style "
              f"{s['style']['mean']:.3f} ± {s['style']['sd']:.3f}; "
              f"paper {p['content_r2']:.2f} ± {p['content_sd']:.2f}, "
              f"{p['style_r2']:.2f} ± {p['style_sd']:.2f}. Targets met with all seeds: "
              + ", ".join(f"{k} {'yes' if v else 'NO'}" for k, v in s["targets_met_all_seeds"].items()) + ".",
              "", "Spearman correlation of style R² with: "
              + "; ".join(f"{k} {v['spearman']:+.2f} (p = {v['p_value']:.3f})" for k, v in s["style_spearman"].items())
              + ".", "", f"Means of every {g['group']} seeds ({g['count']}): {g['min']:.3f} to {g['max']:.3f}; "
              f"{100 * g['share_meeting_style_target']:.0f} % meet the style target, "
              f"{100 * g['share_at_or_below_paper']:.0f} % lie at or below the paper's {p['style_r2']:.2f}."]
    if not np.isnan(g["seeds_below_group_mean"]):
        lines[-1] += (f" The table preset's seeds 0-{g['group'] - 1} average {g['seeds_below_group_mean']:.3f}; "
                      f"{100 * g['share_at_or_above_seeds_below_group']:.1f} % of the means are as high.")
    return "\n".join(lines)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(prog="python -m mmcl_fast.experiments.identifiability.sigma_spread",
                                 description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+", help="finished run folders (results.json) of one row, one per seed")
    ap.add_argument("--table", required=True, help="the paper table of the row (e.g. table4b)")
    ap.add_argument("--group", type=int, default=3, help="seeds per mean in the spread of means (the paper: 3)")
    ap.add_argument("--out", required=True, help="output prefix: writes OUT.json and OUT.md")
    args = ap.parse_args(argv)
    if args.group < 1:
        raise SystemExit(f"--group must be >= 1, got {args.group}")
    try:
        s = spread(load_runs([Path(f) for f in args.runs]), args.table, args.group)
    except ValueError as err:
        raise SystemExit(str(err)) from None
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(s, indent=1))
    text = markdown(s)
    out.with_suffix(".md").write_text(text + "\n")
    print(text)
    return s


if __name__ == "__main__":
    main()
