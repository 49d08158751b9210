"""Tables of simulation results: a run's summary row, its per-factor table, and a preset's report
next to the paper's numbers (``data/paper_results.json``)."""
from __future__ import annotations

import json
from importlib import resources

import numpy as np

_PAPER_KEYS = {"table1a": "table1_original_setting_f1_eq_f2", "table1b": "table1_multimodal_setting_f1_ne_f2",
               "table4a": "table4_no_modality_latents_original", "table4b": "table4_no_modality_latents_multimodal",
               "fig8": "figure8_test_time_interventions"}


def paper_table(name: str) -> dict | None:
    key = _PAPER_KEYS.get(name)
    if key is None:
        return None
    data = json.loads(resources.files(__package__).joinpath("data/paper_results.json").read_text())
    return data[key]


def summary(result: dict, kind: str | None = None) -> dict:
    """Table-1 columns: content (mean over both encoders), style (s from g1, s~ from g2),
    modality (m1 from g1, m2 from g2), each the R^2 of the `kind` regression (default: nonlinear
    when it was evaluated, else linear; recorded under "regression"), or the classification
    accuracy for a discrete block (Fig. 5). With test-time interventions (Fig. 8), style and
    modality are those of the intervened samples, as the paper plots them."""
    e1, e2 = result["encoder1"], result["encoder2"]
    if kind is None:
        kind = "nonlinear" if "nonlinear" in e1["c"] else "linear"
    def pick(e, f):
        return e[f][kind] if f in e else float("nan")
    row = {"regression": kind,
           "content": (pick(e1, "c") + pick(e2, "c")) / 2,
           "style": (pick(e1, "s") + pick(e2, "s_tilde")) / 2,
           "modality": (pick(e1, "m1") + pick(e2, "m2")) / 2}
    if "intervention_encoder1" in result:
        # Fig. 8 reports every column from the intervened samples: c (before), c' (after the
        # intervention), style and modality; the observational ones stay as extra columns.
        i1, i2 = result["intervention_encoder1"], result["intervention_encoder2"]
        row["content_c"] = (pick(i1, "c") + pick(i2, "c")) / 2
        row["content_c_prime"] = (pick(i1, "c_prime") + pick(i2, "c_prime")) / 2
        row["style_observational"], row["modality_observational"] = row["style"], row["modality"]
        row["style"] = (pick(i1, "s") + pick(i2, "s_tilde")) / 2
        row["modality"] = (pick(i1, "m1") + pick(i2, "m2")) / 2
    return row


def format_r2_table(result: dict) -> str:
    """R^2 of every factor from each encoder, linear and nonlinear (classification accuracy,
    logistic / MLP, for discrete blocks)."""
    lines = ["| factor | g1 linear | g1 nonlinear | g2 linear | g2 nonlinear |", "|---|---|---|---|---|"]
    for f in ("c", "s", "s_tilde", "m1", "m2"):
        cells = []
        for e in ("encoder1", "encoder2"):
            r = result[e].get(f)
            cells += ["—", "—"] if r is None else [f"{r['linear']:.3f}", f"{r.get('nonlinear', float('nan')):.3f}"]
            acc = r is not None and r.get("metric") == "accuracy"
        lines.append(f"| {f}{' (accuracy)' if acc else ''} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


# Fig. 7's elbow rule, fixed before any quick-scale run: the smallest encoding size whose mean
# validation loss has come within ELBOW_FRACTION of the whole drop (from the smallest size's loss to
# the lowest loss over all sizes). The paper's claim holds when that size is n_c.
ELBOW_FRACTION = 0.05


def fig7_elbow(rows: list[dict]) -> dict:
    """{"sizes", "val_loss" (mean per size), "elbow", "n_c", "met"} for the runs of a fig7 preset,
    by the rule above; needs at least two encoding sizes."""
    sizes = sorted({r["config"]["encoding_size"] for r in rows})
    if len(sizes) < 2:
        raise ValueError(f"the elbow needs runs of at least two encoding sizes, got {sizes}")
    loss = [float(np.mean([r["val_loss"] for r in rows if r["config"]["encoding_size"] == k])) for k in sizes]
    lowest, drop = min(loss), loss[0] - min(loss)
    elbow = next(k for k, v in zip(sizes, loss) if v - lowest <= ELBOW_FRACTION * drop)
    n_c = rows[0]["config"]["n_c"]
    return {"sizes": sizes, "val_loss": loss, "elbow": elbow, "n_c": n_c, "met": elbow == n_c,
            "rule": f"smallest size within {ELBOW_FRACTION:.0%} of the drop from size {sizes[0]} to the minimum"}


def report(name: str, rows: list[dict]) -> str:
    """Markdown table of a preset's results (mean ± sd over seeds), next to the paper's numbers.
    Scores are nonlinear R^2, or accuracy for the discrete group of a Fig. 5 run."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        c = r["config"]
        key = (c["p_change"], c["statistical"], c["causal"], c["n_s"], c["n_m"], c["encoding_size"],
               c.get("discrete", ""), c.get("n_classes", 5))
        groups.setdefault(key, []).append(r)
    discrete = any(k[6] for k in groups)
    paper = paper_table(name)
    cols = (["content_c", "content_c_prime", "style", "modality", "content", "style_observational",
             "modality_observational"] if name == "fig8" else ["content", "style", "modality"])
    head = ("| p(chg.) | stat. | caus. | n_s | n_m | enc | " + ("discrete | k | chance | " if discrete else "")
            + "seeds | " + " | ".join(cols) + " | val loss |")
    if paper:
        head += " paper: " + ", ".join(paper["columns"][3:]) + " |"
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for key, rs in sorted(groups.items()):
        stats = []
        for col in cols:
            v = [r["summary"].get(col, float("nan")) for r in rs]
            stats.append(f"{np.mean(v):.2f} ± {np.std(v):.2f}")
        vl = np.mean([r["val_loss"] for r in rs])
        line = (f"| {key[0]} | {int(key[1])} | {int(key[2])} | {key[3]} | {key[4]} | {key[5]} | "
                + (f"{key[6] or '—'} | {key[7]} | {1 / key[7]:.2f} | " if discrete else "")
                + f"{len(rs)} | " + " | ".join(stats) + f" | {vl:.3f} |")
        if paper:
            match = [p for p in paper["rows"] if (p[0], p[1], p[2]) == key[:3]]
            line += " " + (", ".join(f"{x:.2f}" for x in match[0][3:]) if match else "—") + " |"
        lines.append(line)
    if name == "fig7" and len({r["config"]["encoding_size"] for r in rows}) >= 2:
        e = fig7_elbow(rows)
        lines.append(f"\nElbow ({e['rule']}): encoding size {e['elbow']}; n_c = {e['n_c']}: "
                     f"{'met' if e['met'] else 'missed'}.")
    return "\n".join(lines)
