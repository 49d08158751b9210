"""A run's score table and the encoding-size sweep's figure (paper Fig. 3)."""
from __future__ import annotations

from pathlib import Path

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


def plot_sweep(runs: dict[int, dict], path: Path) -> Path:
    """Score vs encoding size per modality (paper Fig. 3): content bold, style italic."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    sizes = sorted(runs)
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), sharey=True)
    for ax, modality in zip(axes, ("image", "text")):
        for name, role in (IMAGE_FACTORS if modality == "image" else TEXT_FACTORS).items():
            ys = [runs[k]["scores"][modality][name]["score"] for k in sizes]
            metric = runs[sizes[0]]["scores"][modality][name]["metric"]
            label = f"{name} ({metric})"
            label = {"content": rf"$\bf{{{label.replace(' ', '~').replace('_', '~')}}}$",
                     "style": rf"$\it{{{label.replace(' ', '~').replace('_', '~')}}}$"}.get(role, label)
            ax.plot(sizes, ys, marker="o", lw=2.2 if role == "content" else 1.2,
                    ls="-" if role in ("content", "style") else "--", label=label)
        ax.set_title(f"{modality} factors")
        ax.set_xlabel("encoding size")
        ax.set_xticks(sizes)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    axes[0].set_ylabel("accuracy / R$^2$ (test split)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
