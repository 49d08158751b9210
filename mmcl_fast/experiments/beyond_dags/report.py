"""Tables of Beyond-DAGs runs: mean +- std over seeds of every (setting, violation), next to the
reproduction targets: sphere orthogonal-Procrustes R^2 >= 0.97 and box MCC >= 0.95; under a
violation >= 0.85 and >= 0.3 above the controls. The sphere model on box data, which no theorem
covers (a cosine model on box data gets neither an orthogonal nor a component-wise recovery), is
judged per seed by what it can do: recover the box up to a linear map (linear R^2 >= 0.85), at
least halve the raw observation's unexplained variance ((1 - R^2) <= (1 - R^2 of raw x) / 2),
and leave out the modality-specific latents (their kernel-ridge R^2 <= 0.05)."""
from __future__ import annotations

import numpy as np

from ..common.seed_stats import mean_std
from .training import summary

TARGET = {"none": 0.95, "violation": 0.85}
TARGET_SPHERE_NONE = 0.97
MARGIN_TARGET = 0.3
MISMATCH_RULE = {"linear_r2": 0.85, "unexplained_vs_raw_x": 0.5, "m_r2": 0.05}


def mismatch_rule(summary_of_run: dict) -> dict:
    """The per-seed rule of the sphere model on box data (module docstring): each part and all."""
    enc, raw, m = summary_of_run["encoders"], summary_of_run["raw_x"], summary_of_run["m_r2_nonlinear"]
    parts = {"linear_r2": enc >= MISMATCH_RULE["linear_r2"],
             "unexplained_vs_raw_x": (1 - enc) <= MISMATCH_RULE["unexplained_vs_raw_x"] * (1 - raw),
             "m_r2": m <= MISMATCH_RULE["m_r2"]}
    return {**parts, "met": all(parts.values())}


def target_of(setting: str, violation: str) -> float:
    if violation == "none":
        return TARGET_SPHERE_NONE if setting == "sphere" else TARGET["none"]
    return TARGET["violation"]


def aggregate(results: list[dict]) -> list[dict]:
    """One row per (setting, violation) over its seeds."""
    groups: dict[tuple[str, str], list[dict]] = {}
    for r in results:
        groups.setdefault((r["config"]["setting"], r["config"]["violation"]), []).append(r)
    rows = []
    for (setting, violation), runs in sorted(groups.items()):
        s = [summary(r) for r in runs]
        row = {"setting": setting, "violation": violation, "model": runs[0]["model_geometry"],
               "metric": s[0]["metric"], "seeds": sorted(r["config"]["seed"] for r in runs)}
        for key in ("encoders", "raw_x", "random_encoder_x", "margin_over_controls", "m_r2_nonlinear"):
            row[key] = mean_std([x[key] for x in s])
        for key in ("linear_r2", "mcc_pearson", "mcc_spearman", "procrustes_r2"):
            vals = [(r["f_x"].get(key, np.nan) + r["f_t"].get(key, np.nan)) / 2 for r in runs]
            row[key] = mean_std(vals)
        row["train_seconds"] = mean_std([r["train_seconds"] for r in runs])
        target = target_of(setting, violation)
        row["target"] = target
        if setting == "box" and row["model"] == "sphere":
            row["per_seed_rule"] = [{"seed": r["config"]["seed"], **mismatch_rule(x)} for r, x in zip(runs, s)]
            row["meets_target"] = all(x["met"] for x in row["per_seed_rule"])
        else:
            row["meets_target"] = bool(row["encoders"]["mean"] >= target and
                                       (violation == "none" or row["margin_over_controls"]["mean"] >= MARGIN_TARGET))
        rows.append(row)
    return rows


def _target_text(row: dict) -> str:
    if "per_seed_rule" not in row:
        return f"≥ {row['target']:.2f}"
    met = sum(x["met"] for x in row["per_seed_rule"])
    return f"per-seed rule: {met}/{len(row['per_seed_rule'])} seeds"


def markdown(rows: list[dict]) -> str:
    fmt = lambda st: f"{st['mean']:.3f} ± {st['std']:.3f}"  # noqa: E731
    lines = ["| data | violation | model | metric | encoders | raw x | random encoder | margin | linear R² | "
             "MCC | Spearman MCC | Procrustes R² | m R² (KRR) | target | met | seeds | train s |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['setting']} | {r['violation']} | {r['model']} | {r['metric']} | {fmt(r['encoders'])} | "
                     f"{fmt(r['raw_x'])} | {fmt(r['random_encoder_x'])} | {fmt(r['margin_over_controls'])} | "
                     f"{fmt(r['linear_r2'])} | {fmt(r['mcc_pearson'])} | {fmt(r['mcc_spearman'])} | "
                     f"{fmt(r['procrustes_r2'])} | {fmt(r['m_r2_nonlinear'])} | "
                     f"{_target_text(r)} | {'yes' if r['meets_target'] else 'no'} | {len(r['seeds'])} | "
                     f"{r['train_seconds']['mean']:.0f} |")
    return "\n".join(lines) + "\n"
