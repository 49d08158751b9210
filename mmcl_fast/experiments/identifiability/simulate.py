"""Numerical-simulation trainer: identifiability of content in multimodal contrastive learning.

Reproduces Section 5.1 / Appendix B of Daunhawer et al. (ICLR 2023) with the fused losses: encoders
g1, g2 are trained on fresh samples of the generative process of :mod:`.sim_data` every step,
with the authors' estimator ``symmetric_lpsimclr`` (squared euclidean, tau = 1, negatives from a
second independent batch, log-mean-exp; the paper presets) or ``symmetric_infonce`` over the
batch's other pairs (the quick preset); encoder widths [10d, 50d, 50d, 50d, 50d, 10d] for input
dimension d. Afterwards every latent block is predicted from each encoder's standardised output
(:mod:`..common.evaluation`), probes fit on half the evaluation samples and scored on the other.

    mmcl-fast simulate                                  # the quick default, a few minutes on CPU
    mmcl-fast simulate --preset table1b --out runs/t1b  # paper Table 1 (b), 300k steps per run
    mmcl-fast simulate --preset table1b --scale quick --seeds 1   # the same rows at CPU size
    python -m mmcl_fast.experiments.identifiability.simulate --preset quick --steps 500

Library use::

    from mmcl_fast.experiments.identifiability.simulate import SimConfig, train
    result = train(SimConfig(steps=2000, batch_size=1024), out_dir="runs/x")
"""
from __future__ import annotations

import argparse
import csv
import json
import time
from dataclasses import asdict, dataclass, replace
from importlib import resources
from pathlib import Path

import numpy as np
import torch
from torch import nn

from mmcl_fast import symmetric_infonce, symmetric_lpsimclr

from ..common.config_flags import add_config_flags, config_overrides, option
from ..common.evaluation import accuracy_scores, r2_scores
from ..common.lr_schedule import SCHEDULES, learning_rate
from .sim_data import DISCRETE_GROUPS, LatentSpec, MultimodalProcess

PAPER_WIDTH_FACTORS = (10, 50, 50, 50, 50, 10)   # hidden widths in units of the input dimension
LOSSES = ("lpsimclr", "symmetric_infonce")
# Random streams derived from a run's seed: the training batches, and the evaluation samples.
BATCH_SEED_OFFSET = 1
EVAL_SEED_OFFSET = 10_007


def paper_hidden(d_in: int) -> tuple[int, ...]:
    """The authors' encoder widths for input dimension d: [10d, 50d, 50d, 50d, 50d, 10d]
    (150/750 at d = 15, 100/500 at d = 10)."""
    return tuple(f * d_in for f in PAPER_WIDTH_FACTORS)


@dataclass
class SimConfig:
    # generative process
    n_c: int = option(5, "content dimensions")
    n_s: int = option(5, "style dimensions")
    n_m: int = option(5, "modality-specific dimensions per modality (0: none)")
    p_change: float = option(0.75, "probability that a style dimension changes between the modalities")
    statistical: bool = option(False, "statistical dependence: each block ~ N(0, Wishart Sigma)")
    causal: bool = option(False, "causal dependence: s <- s + B c + a")
    discrete: str = option("", "discrete group (paper Fig. 5): content, style or modality; empty: none")
    n_classes: int = option(5, "classes per discrete component")
    multimodal: bool = option(True, "f1 != f2 and two encoders; false: the original setting (f1 = f2)")
    cond_threshold_ratio: float = option(1e-3, "mixing layers are redrawn above this condition-number quantile")
    n_cond_draws: int = option(25_000, "random matrices drawn to estimate that quantile")
    # model and optimisation (paper defaults, Table 2a)
    encoding_size: int = option(5, "encoder output dimension")
    hidden: tuple[int, ...] | None = option(None, "encoder hidden widths (default: 10d, 50d x4, 10d for input d)")
    loss: str = option("lpsimclr", "lpsimclr (the paper's estimator, negatives from a second batch) or "
                       "symmetric_infonce (the batch's other pairs)")
    batch_size: int = option(6144, "pairs per step")
    steps: int = option(300_000, "training steps")
    lr: float = option(1e-4, "Adam learning rate")
    lr_schedule: str = option("constant", "constant (the paper) or cosine (decays to 0 at --steps)")
    init: str = option("torch", "encoder init: torch (PyTorch's default, the paper's code) or kaiming")
    grad_clip: float = option(2.0, "gradient-norm clipping threshold")
    temperature: float = option(1.0, "loss temperature tau")
    seed: int = option(0, "seed of the process, the encoders and the batches")
    # evaluation
    eval_samples: int = option(40960, "evaluation samples: probes fit on the first half, scored on the second "
                               "(the paper: 20,480 + 20,480)")
    nonlinear_eval: bool = option(True, "also fit kernel-ridge (or MLP-classifier) probes")
    intervention: bool = option(False, "also evaluate under test-time interventions (paper Fig. 8)")
    checkpoint_every: int = option(2000, "steps between checkpoints")

    def spec(self) -> LatentSpec:
        return LatentSpec(self.n_c, self.n_s, self.n_m, self.p_change, self.statistical, self.causal,
                          self.discrete, self.n_classes)


INITS = ("torch", "kaiming")


def encoder(d_in: int, hidden: tuple[int, ...], d_out: int, slope: float = 0.01,
            init: str = "torch") -> nn.Sequential:
    """MLP d_in -> hidden... -> d_out with LeakyReLU(slope) between layers.

    ``init="torch"`` keeps PyTorch's default Linear initialisation (weights U(+-1/sqrt(fan_in)),
    which shrinks the activation variance about 6x per LeakyReLU layer, so the encoding starts
    ~100x smaller than the input). ``init="kaiming"`` draws W ~ N(0, 2 / ((1 + slope^2) fan_in))
    and zero biases, which keeps the variance through the layers. Why it matters: from a tiny
    start, contrastive training switches the encoding's directions on one at a time, with a
    plateau before each (the stepwise learning of SSL); the last content direction can take
    longer than a short run. From a variance-preserving start all directions train at once.
    """
    if init not in INITS:
        raise ValueError(f"init must be 'torch' or 'kaiming', got {init!r}")
    dims = (d_in, *hidden)
    layers: list[nn.Module] = []
    for a, b in zip(dims[:-1], dims[1:]):
        layers += [nn.Linear(a, b), nn.LeakyReLU(slope)]
    layers.append(nn.Linear(dims[-1], d_out))
    if init == "kaiming":
        for layer in layers:
            if isinstance(layer, nn.Linear):
                nn.init.kaiming_normal_(layer.weight, a=slope, nonlinearity="leaky_relu")
                nn.init.zeros_(layer.bias)
    return nn.Sequential(*layers)


class Simulation:
    """Process + encoders + optimiser of one run; `step()` trains on one fresh batch."""

    def __init__(self, cfg: SimConfig):
        self.cfg = cfg
        torch.manual_seed(cfg.seed)
        self.process = MultimodalProcess(cfg.spec(), multimodal=cfg.multimodal, seed=cfg.seed,
                                         cond_threshold_ratio=cfg.cond_threshold_ratio,
                                         n_cond_draws=cfg.n_cond_draws)
        if cfg.loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, got {cfg.loss!r}")
        d = cfg.spec().dim
        hidden = tuple(cfg.hidden) if cfg.hidden is not None else paper_hidden(d)
        self.g1 = encoder(d, hidden, cfg.encoding_size, init=cfg.init)
        self.g2 = encoder(d, hidden, cfg.encoding_size, init=cfg.init) if cfg.multimodal else self.g1
        params = list(self.g1.parameters()) + (list(self.g2.parameters()) if cfg.multimodal else [])
        self.params = params
        self.opt = torch.optim.Adam(params, lr=cfg.lr)
        self.gen = torch.Generator().manual_seed(cfg.seed + BATCH_SEED_OFFSET)
        self.step_count = 0

    def loss(self, x1, x2, g: torch.Generator) -> torch.Tensor:
        """The configured estimator on the pair batch (x1, x2). ``lpsimclr`` draws its negatives
        from a second, independent batch through the same encoders (the authors' estimator);
        ``symmetric_infonce`` uses the other pairs of the batch."""
        h1, h2 = self.g1(x1), self.g2(x2)
        if self.cfg.loss == "symmetric_infonce":
            return symmetric_infonce(h1, h2, temperature=self.cfg.temperature, similarity="euclidean")
        x1_neg, x2_neg, _ = self.process.sample(x1.shape[0], g)
        return symmetric_lpsimclr(h1, h2, self.g1(x1_neg), self.g2(x2_neg), temperature=self.cfg.temperature)

    def lr_at(self, step: int) -> float:
        return learning_rate(self.cfg.lr_schedule, self.cfg.lr, step, self.cfg.steps)

    def step(self) -> float:
        for group in self.opt.param_groups:
            group["lr"] = self.lr_at(self.step_count)
        x1, x2, _ = self.process.sample(self.cfg.batch_size, self.gen)
        loss = self.loss(x1, x2, self.gen)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.params, self.cfg.grad_clip)
        self.opt.step()
        self.step_count += 1
        return loss.item()

    # -- checkpoints ---------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {"config": asdict(self.cfg), "step": self.step_count, "g1": self.g1.state_dict(),
                "g2": self.g2.state_dict(), "opt": self.opt.state_dict(),
                "gen": self.gen.get_state(), "torch_rng": torch.get_rng_state()}

    def load_state_dict(self, state: dict) -> None:
        if _comparable(state["config"]) != _comparable(asdict(self.cfg)):
            raise ValueError("checkpoint was written by a different configuration; use another --out")
        self.g1.load_state_dict(state["g1"])
        self.g2.load_state_dict(state["g2"])
        self.opt.load_state_dict(state["opt"])
        self.gen.set_state(state["gen"])
        torch.set_rng_state(state["torch_rng"])
        self.step_count = state["step"]

    # -- evaluation ----------------------------------------------------------------------------
    @torch.no_grad()
    def evaluate(self) -> dict:
        cfg = self.cfg
        g = torch.Generator().manual_seed(cfg.seed + EVAL_SEED_OFFSET)
        x1, x2, z = self.process.sample(cfg.eval_samples, g)
        h1, h2 = self.g1(x1), self.g2(x2)
        val_loss = self.loss(x1, x2, g).item()  # the training estimator (paper Fig. 7)
        out = {"val_loss": val_loss, "encoder1": self._scores(h1, z), "encoder2": self._scores(h2, z)}
        if cfg.intervention:
            xi1, xi2, c_prime = self.process.intervene(z, g)
            fac = {"c": z["c"], "c_prime": c_prime, "s": z["s"], "m1": z["m1"], "m2": z["m2"]}
            out["intervention_encoder1"] = self._scores(self.g1(xi1), fac)
            out["intervention_encoder2"] = self._scores(self.g2(xi2), fac)
        return out

    def _scores(self, h: torch.Tensor, z: dict[str, torch.Tensor]) -> dict:
        """R^2 per continuous block, accuracy per discrete block (marked "metric": "accuracy")."""
        spec = self.process.spec
        block = lambda name: "c" if name == "c_prime" else name  # noqa: E731
        cont = {k: v.numpy() for k, v in z.items() if not spec.is_discrete(block(k))}
        disc = {k: spec.classes(v).numpy() for k, v in z.items() if spec.is_discrete(block(k))}
        out = r2_scores(h.numpy(), cont, nonlinear=self.cfg.nonlinear_eval)
        for name, acc in accuracy_scores(h.numpy(), disc, nonlinear=self.cfg.nonlinear_eval).items():
            out[name] = dict(acc, metric="accuracy", chance=1.0 / spec.n_classes)
        return {k: out[k] for k in z if k in out}   # blocks of width 0 (n_m = 0) are skipped


def _comparable(cfg: dict) -> dict:
    """Config fields that must match to resume (the step budget and evaluation may change)."""
    skip = {"steps", "eval_samples", "nonlinear_eval", "intervention", "checkpoint_every"}
    if cfg.get("lr_schedule") == "cosine":  # the schedule depends on the step budget
        skip = skip - {"steps"}
    return {k: (list(v) if isinstance(v, (tuple, list)) else v) for k, v in cfg.items() if k not in skip}


def summary(result: dict, kind: str | None = None) -> dict:
    """Table-1 columns: content (mean over both encoders), style (s from g1, s~ from g2),
    modality (m1 from g1, m2 from g2), each the R^2 of the `kind` regression (default: nonlinear
    when it was evaluated, else linear; recorded under "regression"), or the classification
    accuracy for a discrete block (Fig. 5)."""
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
        i1, i2 = result["intervention_encoder1"], result["intervention_encoder2"]
        row["content_c"] = (pick(i1, "c") + pick(i2, "c")) / 2
        row["content_c_prime"] = (pick(i1, "c_prime") + pick(i2, "c_prime")) / 2
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


def train(cfg: SimConfig, out_dir: str | Path | None = None, resume: bool = True,
          progress: bool = True) -> dict:
    """Train (resuming from out_dir/checkpoint.pt when present), evaluate, write results.json.

    A finished run whose results.json was written by the identical configuration is returned as
    it is (resuming a preset does not re-train or re-evaluate its completed runs)."""
    from tqdm.auto import tqdm

    out = Path(out_dir) if out_dir is not None else None
    ckpt = out / "checkpoint.pt" if out is not None else None
    if out is not None and resume and (out / "results.json").exists():
        previous = json.loads((out / "results.json").read_text())
        if previous.get("config") == json.loads(json.dumps(asdict(cfg))):
            return previous
    sim = Simulation(cfg)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        if resume and ckpt.exists():
            sim.load_state_dict(torch.load(ckpt, weights_only=False))
    losses = []
    t0 = time.perf_counter()
    bar = tqdm(total=cfg.steps, initial=sim.step_count, disable=not progress, desc="simulate",
               dynamic_ncols=True, mininterval=0.5)
    while sim.step_count < cfg.steps:
        losses.append(sim.step())
        bar.update(1)
        if sim.step_count % 20 == 0:
            rate = len(losses) / (time.perf_counter() - t0)
            bar.set_postfix(loss=f"{np.mean(losses[-20:]):.4f}", steps_per_s=f"{rate:.1f}")
        if ckpt is not None and (sim.step_count % cfg.checkpoint_every == 0 or sim.step_count == cfg.steps):
            torch.save(sim.state_dict(), ckpt)
    bar.close()
    train_s = time.perf_counter() - t0
    t1 = time.perf_counter()
    result = sim.evaluate()
    result.update(config=asdict(cfg), steps=sim.step_count, train_seconds=train_s,
                  eval_seconds=time.perf_counter() - t1,
                  final_train_loss=float(np.mean(losses[-50:])) if losses else None)
    result["summary"] = summary(result)
    if out is not None:
        (out / "results.json").write_text(json.dumps(result, indent=1))
    return result


# ---- presets ----------------------------------------------------------------------------------

TABLE1_ROWS = [  # (p_change, statistical, causal), the rows of paper Tables 1 and 4
    (1.0, False, False), (0.75, False, False), (0.75, True, False), (0.75, False, True),
    (0.75, True, True)]

# The quick CPU default (~5 min of training on 2 cores). Smaller batches with more steps and a
# higher, decaying learning rate learned fastest per second in a short search (content R^2 after
# 3000 steps: lr 1e-3 0.43, 3e-3 0.53, 1e-2 0.34; batch 2048 no better per step at 3x the cost).
# Kaiming init: with PyTorch's default init the fifth content direction was still unlearned after
# 20k steps (content R^2 0.78 on three seeds, see benchmarks/RESULTS.md and `encoder`).
# The quick preset keeps the estimator it was tuned and validated with (symmetric InfoNCE over the
# batch's other pairs); `--loss lpsimclr` gives the paper's. It evaluates on 1,000 + 1,000 samples.
QUICK = dict(hidden=(64, 256, 256, 64), batch_size=512, steps=20000, lr=3e-3, lr_schedule="cosine",
             init="kaiming", eval_samples=2000, n_cond_draws=5000, loss="symmetric_infonce")


FIG5_CLASSES = tuple(range(3, 11))
FIG5_GROUPS = ("style", "modality", "content")   # the paper's panels a, b, c


def preset_runs(name: str, seeds: int = 3) -> list[tuple[str, SimConfig]]:
    """The runs of a preset as (label, config) pairs."""
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


PRESETS = ("quick", "paper", "table1a", "table1b", "table4a", "table4b", "fig5", "fig6", "fig7", "fig8")
_PAPER_KEYS = {"table1a": "table1_original_setting_f1_eq_f2", "table1b": "table1_multimodal_setting_f1_ne_f2",
               "table4a": "table4_no_modality_latents_original", "table4b": "table4_no_modality_latents_multimodal",
               "fig8": "figure8_test_time_interventions"}


def paper_table(name: str) -> dict | None:
    key = _PAPER_KEYS.get(name)
    if key is None:
        return None
    data = json.loads(resources.files(__package__).joinpath("data/paper_results.json").read_text())
    return data[key]


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
    cols = ["content", "style", "modality"] + (["content_c", "content_c_prime"] if name == "fig8" else [])
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
    return "\n".join(lines)


def plot_preset(name: str, rows: list[dict], path: Path) -> bool:
    """Figures where the paper has one: fig5 (scores vs k), fig6 (R^2 vs n_s / n_m), fig7 (val
    loss vs encoding size)."""
    if name not in ("fig5", "fig6", "fig7"):
        return False
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

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
        ax.set_xlabel("encoding size")
        ax.set_ylabel("validation loss")
        ax.legend()
    else:
        fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
        for ax, field_name in zip(axes, ("n_s", "n_m")):
            sub = [r for r in rows if r["config"][field_name] != 5 or
                   r["config"]["n_s" if field_name == "n_m" else "n_m"] == 5]
            ns = sorted({r["config"][field_name] for r in sub})
            for col in ("content", "style", "modality"):
                ax.plot(ns, [np.mean([r["summary"][col] for r in sub if r["config"][field_name] == n]) for n in ns],
                        "-o", label=col)
            ax.set_xlabel(field_name)
            ax.set_ylabel("R² (nonlinear)")
            ax.set_ylim(-0.05, 1.05)
            ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def run_directory(label: str) -> str:
    """The folder of one run, named by its label ("p=0.75 stat=1 caus=0 seed=0" ->
    "p-0.75_stat-1_caus-0_seed-0"), so that a preset resumed with more seeds finds its earlier runs."""
    return label.replace(" ", "_").replace("=", "-")


def run_preset(name: str, out_dir: Path, overrides: dict, seeds: int = 3, progress: bool = True) -> list[dict]:
    """Run (or resume) every run of a preset; write results.csv/json, report.md and a figure."""
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    runs = preset_runs(name, seeds=seeds)
    for i, (label, cfg) in enumerate(runs):
        cfg = replace(cfg, **overrides)
        if progress:
            print(f"[{i + 1}/{len(runs)}] {label}")
        rows.append(train(cfg, out_dir / run_directory(label), progress=progress))
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
    text = report(name, rows)
    (out_dir / "report.md").write_text(text + "\n")
    plot_preset(name, rows, out_dir / f"{name}.png")
    return rows


def build_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    p = parser or argparse.ArgumentParser(prog="mmcl-fast simulate", description=__doc__,
                                          formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="quick", choices=PRESETS,
                   help="quick (the CPU default), paper (one run), or a table/figure of the paper")
    p.add_argument("--out", default=None, help="output folder (default runs/simulate-PRESET)")
    p.add_argument("--seeds", type=int, default=3, help="seeds per setting for table/figure presets")
    p.add_argument("--scale", choices=("paper", "quick"), default="paper",
                   help="table/figure presets: the paper's hyperparameters, or the quick preset's "
                        "encoder, batch, steps and optimiser (a CPU-sized version of every run)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
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
    if args.scale == "quick":
        overrides = {**QUICK, **overrides}
    if "hidden" in overrides:
        overrides["hidden"] = tuple(overrides["hidden"])
    if "seed" in overrides and args.preset not in ("quick", "paper"):
        raise SystemExit("--seed applies to single runs; table presets use --seeds")
    out = Path(args.out or f"runs/simulate-{args.preset}")
    rows = run_preset(args.preset, out, overrides, seeds=args.seeds, progress=not args.no_progress)
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
