"""The paper's simulation figures from a preset's results: Fig. 5 (scores vs number of classes),
Fig. 6 (R^2 vs n_s / n_m, and the training-loss curves of those runs), Fig. 7 (validation loss
vs encoding size)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

FIG5_GROUPS = ("style", "modality", "content")   # the discrete group of the paper's panels a, b, c


def plot_preset(name: str, rows: list[dict], path: Path) -> bool:
    """Figures where the paper has one: fig5 (scores vs k), fig6 (R^2 vs n_s / n_m and the
    training-loss curves), fig7 (val loss vs encoding size), fig8 (the R^2 of c, c', style and
    modality on the intervened samples per setting, beside the paper's)."""
    if name not in ("fig5", "fig6", "fig7", "fig8"):
        return False
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if name == "fig8":
        from .report import paper_table
        cols = ("content_c", "content_c_prime", "style", "modality")
        settings = sorted({(r["config"]["p_change"], r["config"]["statistical"], r["config"]["causal"]) for r in rows})
        paper = {tuple(p[:3]): p[3::2] for p in (paper_table("fig8") or {"rows": []})["rows"]}
        fig, ax = plt.subplots(figsize=(2.2 * len(settings) + 2, 3.8))
        width = 0.8 / len(cols)
        for k, col in enumerate(cols):
            v = [[r["summary"][col] for r in rows
                  if (r["config"]["p_change"], r["config"]["statistical"], r["config"]["causal"]) == st]
                 for st in settings]
            x = np.arange(len(settings)) + (k - 1.5) * width
            ax.bar(x, [np.mean(a) for a in v], width, yerr=[np.std(a) for a in v], capsize=2,
                   label=col.replace("content_c_prime", "c'").replace("content_c", "c"))
            ours_paper = [paper.get(st, [np.nan] * 4)[k] for st in settings]
            ax.plot(x, ours_paper, "k_", ms=12, mew=2, label="paper" if k == 0 else None)
        ax.set_xticks(np.arange(len(settings)))
        ax.set_xticklabels([f"p={p}\n{'stat.' if s else ''}{'+' if s and c else ''}{'caus.' if c else ''}"
                            or f"p={p}" for p, s, c in settings])
        ax.set_ylabel("R² on intervened samples")
        ax.set_ylim(-0.05, 1.1)
        ax.legend(fontsize=7, ncol=5)
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)
        return True
    if name == "fig5":
        groups = [d for d in FIG5_GROUPS if any(r["config"]["discrete"] == d for r in rows)]
        fig, axes = plt.subplots(1, len(groups), figsize=(4.2 * len(groups), 3.5), squeeze=False)
        for ax, d in zip(axes[0], groups):
            sub = [r for r in rows if r["config"]["discrete"] == d]
            ks = sorted({r["config"]["n_classes"] for r in sub})
            for col in ("content", "style", "modality"):
                v = [[r["summary"][col] for r in sub if r["config"]["n_classes"] == k] for k in ks]
                metric = "accuracy" if col == d else "R²"
                ax.errorbar(ks, [np.mean(x) for x in v], yerr=[np.std(x) for x in v], fmt="-o", capsize=3,
                            label=f"{col} ({metric})")
            ax.plot(ks, [1 / k for k in ks], ":", c="gray", label="chance (1/k)")
            ax.set_title(f"discrete {d}")
            ax.set_xlabel("k (classes)")
            ax.set_ylim(-0.05, 1.05)
            ax.legend(fontsize=7)
        axes[0][0].set_ylabel("nonlinear R² / accuracy")
    elif name == "fig7":
        fig, ax = plt.subplots(figsize=(5, 3.5))
        ks = sorted({r["config"]["encoding_size"] for r in rows})
        v = [np.mean([r["val_loss"] for r in rows if r["config"]["encoding_size"] == k]) for k in ks]
        ax.plot(ks, v, "-o")
        ax.axvline(rows[0]["config"]["n_c"], ls=":", c="gray", label="n_c")
        if len(ks) >= 2:
            from .report import fig7_elbow
            ax.axvline(fig7_elbow(rows)["elbow"], ls="--", c="C3", lw=0.8, label="elbow (5 % rule)")
        ax.set_xlabel("encoding size")
        ax.set_ylabel("validation loss")
        ax.legend()
    else:
        # panels a/c: R^2 against n_s / n_m; b/d: the training-loss curves of those runs
        fig, axes = plt.subplots(1, 4, figsize=(17, 3.5))
        for (ax, ax_loss), field_name in zip((axes[:2], axes[2:]), ("n_s", "n_m")):
            sub = [r for r in rows if r["config"][field_name] != 5 or
                   r["config"]["n_s" if field_name == "n_m" else "n_m"] == 5]
            ns = sorted({r["config"][field_name] for r in sub})
            for col in ("content", "style", "modality"):
                v = [[r["summary"][col] for r in sub if r["config"][field_name] == n] for n in ns]
                ax.errorbar(ns, [np.mean(x) for x in v], yerr=[np.std(x) for x in v], fmt="-o", capsize=3,
                            label=col)
            ax.set_xlabel(field_name)
            ax.set_ylabel("R² (nonlinear)")
            ax.set_ylim(-0.05, 1.05)
            ax.legend()
            for n in ns:
                curves = [r["loss_curve"] for r in sub if r["config"][field_name] == n and r.get("loss_curve")]
                if curves:
                    length = min(len(c) for c in curves)
                    steps = [c[0] for c in curves[0][:length]]
                    ax_loss.plot(steps, np.mean([[p[1] for p in c[:length]] for c in curves], axis=0),
                                 label=f"{field_name} = {n}")
            ax_loss.set_xlabel("step")
            ax_loss.set_ylabel("training loss")
            ax_loss.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True
