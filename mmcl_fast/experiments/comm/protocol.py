"""The CoMM table: per-seed scores of every finished run, the controls, the normalised gains, and
the verdicts of the falsifiable protocol.

Controls, per seed: r = the score of the *untrained* model of the same seed at the same probe
point (a method's own point; for the preconditions, the supervised control's fused CLS), and
C = the score of the supervised control (the same bimodal model trained on the pair labels R, U1,
U2 and S, probed at its fused CLS). The normalised gain of a score is G = (score - r) / (C - r).

The protocol (every rule on the methods' own probe points; mean = the mean over seeds):
* preconditions, in every seed: C_R - r_R >= 0.3, C_U - r_U >= 0.3 and C_S >= 0.65; when one
  fails the run is *inconclusive* (the control cannot separate a method from chance), not failed;
* R: mean G_R >= 0.5 for Cross, Cross+Self and CoMM;
* U: Cross+Self and CoMM at least 0.10 above Cross in every seed, their mean G_U >= 0.4, and
  Cross's mean G_U <= 0.25;
* S: CoMM at least 0.08 above its untrained fused features in every seed and >= 0.58 on the mean;
  Cross trained on biased pairs |S - 0.5| <= 0.03 (a sanity check of the probe, seed 0);
* the claim is *falsified* when, with the preconditions met, Cross+Self's or CoMM's U is no more
  than 0.03 above Cross's in two seeds or more, or Cross's mean G_U >= Cross+Self's, or CoMM's mean
  S is no more than 0.03 above its untrained fused features.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..common.seed_stats import mean_std

TASKS = ("R", "U1", "U2", "U", "S")
TASK_PAIRS = {"R": "unbiased", "U1": "unbiased", "U2": "unbiased", "U": "unbiased", "S": "biased"}
METHOD_ROWS = ("cross", "cross_self", "comm")


def load_runs(out: Path) -> dict[str, dict[int, dict[str, dict]]]:
    """{variant: {seed: {pairs: results.json}}} of every finished run under ``out``."""
    runs: dict[str, dict[int, dict[str, dict]]] = {}
    for path in sorted(Path(out).glob("*/*/seed*/results.json")):
        variant, pairs, seed = path.parts[-4], path.parts[-3], int(path.parts[-2][4:])
        result = json.loads(path.read_text())
        if "probes" not in result:
            raise ValueError(f"{path} was written by an earlier version of the trainer (no controls): "
                             "delete it or use another --out")
        runs.setdefault(variant, {}).setdefault(seed, {})[pairs] = result
    return runs


def _score(run: dict[str, dict], task: str, which: str = "trained", kind: str | None = None) -> float | None:
    res = run.get(TASK_PAIRS[task])
    if res is None:
        return None
    kind = kind or res["probe_point"]
    return res["probes"].get(f"{which}/{kind}", {}).get(task)


def seed_table(runs) -> dict[str, dict[int, dict]]:
    """{variant: {seed: {task: {"score", "r", "common", "common_r", "C", "G"}}}}."""
    control = runs.get("supervised", {})
    out: dict[str, dict[int, dict]] = {}
    for variant, seeds in runs.items():
        for seed, run in seeds.items():
            row = {}
            for task in TASKS:
                score = _score(run, task)
                if score is None:
                    continue
                r = _score(run, task, "random_init")
                c = _score(control[seed], task) if seed in control else None
                g = (score - r) / (c - r) if c is not None and c != r else None
                row[task] = {"score": score, "r": r, "C": c, "G": g,
                             "common": _score(run, task, kind="pooled"),
                             "common_r": _score(run, task, "random_init", kind="pooled")}
            cross_encoder = _score(run, "U", kind="encoder") if variant == "cross" else None
            if cross_encoder is not None:
                row["U_encoder_output"] = cross_encoder
            out.setdefault(variant, {})[seed] = row
    return out


def summary(per_seed: dict[str, dict[int, dict]]) -> list[dict]:
    """One row per variant: mean +- std over seeds of the score, r, G and the common point."""
    rows = []
    for variant, seeds in sorted(per_seed.items()):
        row = {"variant": variant, "seeds": sorted(seeds)}
        for task in TASKS:
            for field in ("score", "r", "G", "common"):
                vals = [s[task][field] for s in seeds.values() if task in s and s[task][field] is not None]
                row[f"{task}_{field}"] = mean_std(vals) if vals else None
        enc = [s["U_encoder_output"] for s in seeds.values() if "U_encoder_output" in s]
        row["U_encoder_output"] = mean_std(enc) if enc else None
        rows.append(row)
    return rows


def _rule(text: str, values, met: bool | None) -> dict:
    return {"rule": text, "values": values, "met": met}


def verdicts(per_seed: dict[str, dict[int, dict]]) -> dict:
    """The protocol's checks (see the module's docstring) and the overall status."""
    ctrl, seeds = per_seed.get("supervised", {}), None
    if all(m in per_seed for m in METHOD_ROWS) and ctrl:
        seeds = sorted(set(ctrl).intersection(*(per_seed[m] for m in METHOD_ROWS)))
    if not seeds:
        return {"status": "incomplete", "checks": {}, "note": "needs cross, cross_self, comm and supervised "
                "runs of at least one common seed"}

    def v(variant, task, field="score", seed=None):
        vals = [per_seed[variant][s].get(task, {}).get(field) for s in ([seed] if seed is not None else seeds)]
        return None if any(x is None for x in vals) else vals

    def mean(vals):
        return None if vals is None else float(np.mean(vals))

    checks = {}
    pre_r = [ctrl[s]["R"]["score"] - ctrl[s]["R"]["r"] for s in seeds if "R" in ctrl[s]]
    pre_u = [ctrl[s]["U"]["score"] - ctrl[s]["U"]["r"] for s in seeds if "U" in ctrl[s]]
    pre_s = [ctrl[s]["S"]["score"] for s in seeds if "S" in ctrl[s]]
    checks["pre_R"] = _rule("C_R - r_R >= 0.3 in every seed", pre_r, bool(pre_r) and min(pre_r) >= 0.3)
    checks["pre_U"] = _rule("C_U - r_U >= 0.3 in every seed", pre_u, bool(pre_u) and min(pre_u) >= 0.3)
    checks["pre_S"] = _rule("C_S >= 0.65 in every seed", pre_s, bool(pre_s) and min(pre_s) >= 0.65)
    for m in METHOD_ROWS:
        g = mean(v(m, "R", "G"))
        checks[f"R_{m}"] = _rule(f"{m}: mean G_R >= 0.5", g, None if g is None else g >= 0.5)
    cross_u = v("cross", "U")
    for m in ("cross_self", "comm"):
        u = v(m, "U")
        gaps = None if u is None or cross_u is None else [a - b for a, b in zip(u, cross_u)]
        checks[f"U_gap_{m}"] = _rule(f"{m}: U - Cross's U >= 0.10 in every seed", gaps,
                                     None if gaps is None else min(gaps) >= 0.10)
        g = mean(v(m, "U", "G"))
        checks[f"U_G_{m}"] = _rule(f"{m}: mean G_U >= 0.4", g, None if g is None else g >= 0.4)
    g_cross = mean(v("cross", "U", "G"))
    checks["U_G_cross"] = _rule("cross: mean G_U <= 0.25", g_cross, None if g_cross is None else g_cross <= 0.25)
    s_gap = None
    if v("comm", "S") is not None and v("comm", "S", "r") is not None:
        s_gap = [a - b for a, b in zip(v("comm", "S"), v("comm", "S", "r"))]
    checks["S_gap_comm"] = _rule("comm: S - untrained fused S >= 0.08 in every seed", s_gap,
                                 None if s_gap is None else min(s_gap) >= 0.08)
    s_mean = mean(v("comm", "S"))
    checks["S_comm"] = _rule("comm: mean S >= 0.58", s_mean, None if s_mean is None else s_mean >= 0.58)
    s0 = v("cross", "S", seed=seeds[0])
    checks["S_cross_sanity"] = _rule(f"cross on biased pairs: |S - 0.5| <= 0.03 (seed {seeds[0]})", s0,
                                     None if s0 is None else abs(s0[0] - 0.5) <= 0.03)

    preconditions = all(checks[k]["met"] for k in ("pre_R", "pre_U", "pre_S"))
    falsifiers = []
    for m in ("cross_self", "comm"):
        gaps = checks[f"U_gap_{m}"]["values"]
        if gaps is not None and sum(x <= 0.03 for x in gaps) >= 2:
            falsifiers.append(f"{m}'s U is no more than 0.03 above Cross's in {sum(x <= 0.03 for x in gaps)} seeds")
    g_cs = mean(v("cross_self", "U", "G"))
    if g_cross is not None and g_cs is not None and g_cross >= g_cs:
        falsifiers.append(f"Cross's mean G_U {g_cross:.3f} >= Cross+Self's {g_cs:.3f}")
    if s_gap is not None and float(np.mean(s_gap)) <= 0.03:
        falsifiers.append(f"CoMM's S is {float(np.mean(s_gap)):.3f} above its untrained fused features (<= 0.03)")
    targets = [k for k in checks if not k.startswith("pre_")]
    if not preconditions:
        status = "inconclusive"
    elif falsifiers:
        status = "falsified"
    elif all(checks[k]["met"] for k in targets):
        status = "supported"
    else:
        status = "partly met"
    return {"status": status, "seeds": seeds, "checks": checks, "falsified_by": falsifiers if preconditions else [],
            "preconditions_met": preconditions}


def _fmt(st) -> str:
    return "—" if st is None else f"{st['mean']:.3f} ± {st['std']:.3f}"


def markdown(rows: list[dict], verdict: dict, paper: dict[str, dict[str, float]], names: dict[str, str]) -> str:
    lines = ["Own probe point per method (CoMM and supervised: fused CLS; Cross: CLIP projection; Cross+Self: "
             "encoder output); r = the untrained model of the same seed at the same point; G = (score − r)/(C − r), "
             "C = the supervised control; common = the CNN maps' mean, every method.", "",
             "| variant | seeds | R | r_R | G_R | U | r_U | G_U | S | r_S | common R / U / S | paper R / U / S |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        p = paper.get(names.get(r["variant"], ""))
        ptxt = "—" if p is None else f"{p['R']:.3f} / {p['U']:.3f} / {p['S']:.3f}"
        common = " / ".join("—" if r[f"{t}_common"] is None else f"{r[f'{t}_common']['mean']:.3f}"
                            for t in ("R", "U", "S"))
        lines.append(f"| {r['variant']} | {len(r['seeds'])} | {_fmt(r['R_score'])} | {_fmt(r['R_r'])} | "
                     f"{_fmt(r['R_G'])} | {_fmt(r['U_score'])} | {_fmt(r['U_r'])} | {_fmt(r['U_G'])} | "
                     f"{_fmt(r['S_score'])} | {_fmt(r['S_r'])} | {common} | {ptxt} |")
    for r in rows:
        if r.get("U_encoder_output"):
            lines.append(f"\n{r['variant']} at its encoder output (before the CLIP projection): "
                         f"U {_fmt(r['U_encoder_output'])}")
    lines += ["", f"**Protocol: {verdict['status']}**", ""]
    if verdict.get("checks"):
        lines += ["| check | values | met |", "|---|---|---|"]
        for c in verdict["checks"].values():
            vals = c["values"]
            txt = "—" if vals is None else (", ".join(f"{x:.3f}" for x in vals) if isinstance(vals, list)
                                             else f"{vals:.3f}")
            lines.append(f"| {c['rule']} | {txt} | {'—' if c['met'] is None else ('yes' if c['met'] else 'NO')} |")
        for f in verdict.get("falsified_by", []):
            lines.append(f"\nFalsified by: {f}")
    else:
        lines.append(verdict.get("note", ""))
    return "\n".join(lines) + "\n"
