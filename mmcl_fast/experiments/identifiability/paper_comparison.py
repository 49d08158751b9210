"""Finished table presets (Tables 1 (a), 1 (b), 4 (b), ...) side by side with the paper, row by row,
with the reproduction targets checked on each row:

* content R² >= paper - 0.05;
* style R² within max(0.10, 2 x the paper's sd) of the paper's;
* modality-specific R² <= 0.10 (tables with modality-specific latents).

    python -m mmcl_fast.experiments.identifiability.paper_comparison \\
        --table table1a runs/table1a_quick --table table1b runs/table1b_quick \\
        --table table4b runs/table4b_quick --out results/identifiability/table1_quick

writes OUT.json (one entry per row: seeds, mean ± sd of every column, the paper's mean ± sd, the
training time, the estimator, the targets met) and OUT.md.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from .presets import finished_runs, preset_runs
from .report import paper_table

CONTENT_SLACK = 0.05
STYLE_MIN_BAND = 0.10
MODALITY_MAX = 0.10
# The fields that tell the tables apart (their run folders share names: "p-0.75_stat-1_caus-0_seed-0").
TABLE_FIELDS = ("multimodal", "n_m")


def _row_key(config: dict) -> tuple:
    return (float(config["p_change"]), bool(config["statistical"]), bool(config["causal"]))


def targets(content: float, style: float, modality: float, paper: dict) -> dict[str, bool]:
    """Which of the reproduction targets a row's means meet, against the paper's row (means and sds)."""
    met = {"content": content >= paper["content_r2"] - CONTENT_SLACK,
           "style": abs(style - paper["style_r2"]) <= max(STYLE_MIN_BAND, 2 * paper["style_sd"])}
    if not np.isnan(modality):
        met["modality"] = modality <= MODALITY_MAX
    return met


def compare_table(name: str, runs: list[dict]) -> list[dict]:
    """One entry per (p_change, statistical, causal) row of the paper's table ``name``."""
    paper = paper_table(name)
    if paper is None:
        raise ValueError(f"the paper has no table for preset {name!r}")
    expected = vars(preset_runs(name, seeds=1)[0][1])
    groups: dict[tuple, list[dict]] = {}
    for r in runs:
        wrong = {f: r["config"].get(f) for f in TABLE_FIELDS if r["config"].get(f) != expected[f]}
        if wrong:
            raise ValueError(f"a run of seed {r['config'].get('seed')} has {wrong}, not the {name} preset's "
                             f"{ {f: expected[f] for f in wrong} }: runs of another table?")
        groups.setdefault(_row_key(r["config"]), []).append(r)
    out = []
    for prow in paper["rows"]:
        ref = dict(zip(paper["columns"], prow))
        key = (float(ref["p_chg"]), bool(ref["statistical"]), bool(ref["causal"]))
        rs = groups.get(key, [])
        entry = {"table": name, "p_change": key[0], "statistical": key[1], "causal": key[2],
                 "paper": {k: ref[k] for k in paper["columns"][3:]}, "seeds": len(rs)}
        if rs:
            for col in ("content", "style", "modality"):
                v = np.array([r["summary"][col] for r in rs], dtype=float)
                entry[col] = {"mean": float(v.mean()), "sd": float(v.std()), "per_seed": v.tolist()}
            entry["train_seconds"] = {"mean": float(np.mean([r["train_seconds"] for r in rs])),
                                      "total": float(np.sum([r["train_seconds"] for r in rs]))}
            entry["estimator"] = sorted({r["config"]["loss"] for r in rs})
            entry["steps"] = sorted({int(r["steps"]) for r in rs})
            entry["targets_met"] = targets(entry["content"]["mean"], entry["style"]["mean"],
                                           entry["modality"]["mean"], entry["paper"])
        out.append(entry)
    return out


def _pm(d: dict | None) -> str:
    return "—" if d is None else f"{d['mean']:.2f} ± {d['sd']:.2f}"


def markdown(entries: list[dict]) -> str:
    lines = ["| table | p(chg.) | stat. | caus. | seeds | content | paper | style | paper | modality | "
             "paper | s per run | estimator | targets missed |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for e in entries:
        p = e["paper"]
        missed = [k for k, ok in e.get("targets_met", {}).items() if not ok]
        mod = e.get("modality")
        mod_cell = "n/a" if mod is None or np.isnan(mod["mean"]) else _pm(mod)
        p_mod = f"{p['modality_r2']:.2f} ± {p['modality_sd']:.2f}" if "modality_r2" in p else "n/a"
        lines.append(
            f"| {e['table']} | {e['p_change']} | {int(e['statistical'])} | {int(e['causal'])} | {e['seeds']} | "
            f"{_pm(e.get('content'))} | {p['content_r2']:.2f} ± {p['content_sd']:.2f} | {_pm(e.get('style'))} | "
            f"{p['style_r2']:.2f} ± {p['style_sd']:.2f} | {mod_cell} | {p_mod} | "
            + (f"{e['train_seconds']['mean']:.0f}" if e["seeds"] else "—") + " | "
            + (", ".join(e.get("estimator", [])) or "—") + " | "
            + (("**" + ", ".join(missed) + "**") if missed else ("none" if e["seeds"] else "not run")) + " |")
    return "\n".join(lines)


def main(argv=None) -> list[dict]:
    p = argparse.ArgumentParser(prog="python -m mmcl_fast.experiments.identifiability.paper_comparison",
                                description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--table", nargs=2, action="append", metavar=("PRESET", "DIR"), required=True,
                   help="a table preset and the --out folder of its finished runs (repeatable)")
    p.add_argument("--seeds", type=int, default=3, help="seeds per row to collect")
    p.add_argument("--out", required=True, help="output prefix: writes OUT.json and OUT.md")
    args = p.parse_args(argv)
    entries = []
    for name, folder in args.table:
        runs = finished_runs(name, Path(folder), seeds=args.seeds)
        if not runs:
            raise SystemExit(f"no finished run of preset {name!r} in {folder}")
        try:
            entries += compare_table(name, runs)
        except ValueError as err:
            raise SystemExit(f"{folder}: {err}") from None
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(entries, indent=1))
    text = markdown(entries)
    out.with_suffix(".md").write_text(text + "\n")
    print(text)
    return entries


if __name__ == "__main__":
    main()
