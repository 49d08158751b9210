"""Score tables (one run, or mean and sd over seeds) and the encoding-size sweep's figure (paper
Fig. 3, with the validation loss of Fig. 7b)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .evaluation import IMAGE_FACTORS, TEXT_FACTORS


def format_scores(results: dict) -> str:
    """Markdown table of one run's scores."""
    lines = ["| modality | factor | role | metric | score (MLP / kernel ridge) | linear | "
             "(cos, sin) R^2 | chance |", "|---|---|---|---|---|---|---|---|"]
    for modality, table in results["scores"].items():
        for name, r in table.items():
            extra = [f"{r[k]:.3f}" if k in r else "" for k in ("linear", "circular", "chance")]
            lines.append(f"| {modality} | {name} | {r['role']} | {r['metric']} | {r['score']:.3f} | "
                         + " | ".join(extra) + " |")
    return "\n".join(lines)


def summarize(runs: list[dict]) -> dict:
    """Mean and sd over seeds of every score column and of the validation loss:
    {"n", "val_loss": {"mean", "sd"}, "scores": {modality: {factor: {"role", "metric",
    column: {"mean", "sd"}}}}} (sd with ddof=1; 0 for one run)."""
    def stats(values):
        v = np.asarray(values, dtype=np.float64)
        return {"mean": float(v.mean()), "sd": float(v.std(ddof=1)) if len(v) > 1 else 0.0}
    first = runs[0]["scores"]
    scores = {}
    for modality, table in first.items():
        scores[modality] = {}
        for name, r in table.items():
            entry = {"role": r["role"], "metric": r["metric"]}
            for col in ("score", "linear", "circular", "chance"):
                if col in r:
                    entry[col] = stats([run["scores"][modality][name][col] for run in runs])
            scores[modality][name] = entry
    return {"n": len(runs), "val_loss": stats([run["val_loss"] for run in runs]), "scores": scores}


def format_summary(summary: dict) -> str:
    """Markdown table of :func:`summarize`'s mean +- sd."""
    def cell(e, col):
        return f"{e[col]['mean']:.3f} ± {e[col]['sd']:.3f}" if col in e else ""
    lines = [f"{summary['n']} seeds, mean ± sd; validation loss {cell(summary, 'val_loss')}", "",
             "| modality | factor | role | metric | score (MLP / kernel ridge) | linear | "
             "(cos, sin) R^2 | chance |", "|---|---|---|---|---|---|---|---|"]
    for modality, table in summary["scores"].items():
        for name, e in table.items():
            lines.append(f"| {modality} | {name} | {e['role']} | {e['metric']} | "
                         + " | ".join(cell(e, c) for c in ("score", "linear", "circular", "chance")) + " |")
    return "\n".join(lines)


def plot_sweep(runs: dict[int, list[dict]], path: Path) -> Path:
    """Score vs encoding size per modality (paper Fig. 3; content bold, style italic) and the
    validation loss vs encoding size (Fig. 7b); error bars: sd over the seeds of each size."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    sizes = sorted(runs)
    summaries = {k: summarize(runs[k]) for k in sizes}
    fig, axes = plt.subplots(1, 3, figsize=(15, 3.8), gridspec_kw={"width_ratios": [1, 1, 0.7]})
    for ax, modality in zip(axes[:2], ("image", "text")):
        for name, role in (IMAGE_FACTORS if modality == "image" else TEXT_FACTORS).items():
            entries = [summaries[k]["scores"][modality][name] for k in sizes]
            label = f"{name} ({entries[0]['metric']})"
            label = {"content": rf"$\bf{{{label.replace(' ', '~').replace('_', '~')}}}$",
                     "style": rf"$\it{{{label.replace(' ', '~').replace('_', '~')}}}$"}.get(role, label)
            ax.errorbar(sizes, [e["score"]["mean"] for e in entries], yerr=[e["score"]["sd"] for e in entries],
                        marker="o", capsize=3, lw=2.2 if role == "content" else 1.2,
                        ls="-" if role in ("content", "style") else "--", label=label)
        ax.set_title(f"{modality} factors")
        ax.set_xlabel("encoding size")
        ax.set_xticks(sizes)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    axes[0].set_ylabel("accuracy / R$^2$ (test split)")
    axes[1].sharey(axes[0])
    loss = [summaries[k]["val_loss"] for k in sizes]
    axes[2].errorbar(sizes, [v["mean"] for v in loss], yerr=[v["sd"] for v in loss], marker="o", capsize=3)
    axes[2].set_title("validation loss (Fig. 7b)")
    axes[2].set_xlabel("encoding size")
    axes[2].set_xticks(sizes)
    axes[2].grid(alpha=0.3)
    n = min(len(runs[k]) for k in sizes)
    fig.suptitle(f"mean ± sd over {n} seed{'s' if n > 1 else ''}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
