"""Image/text contrastive training on the procedural Multimodal3DIdent (paper Sec. 5.2, Fig. 3).

    mmcl-fast train-imagetext                               # quick CPU default, encoding size 4
    mmcl-fast train-imagetext --encoding-sizes 2 3 4 5 6    # the Fig. 3 / Fig. 11 sweep + plot
    mmcl-fast train-imagetext --causal true --out runs/causal   # hue tied to x (paper main)
    python -m mmcl_fast.experiments.imagetext.trainer --steps 100000 --batch-size 256 --lr 1e-5 --temperature 1 \
        --lr-schedule constant --warmup-steps 0 --zero-init-residual false \
        --n-train 125000 --n-val 10000 --n-test 10000          # the paper's hyperparameters

Image encoder: ResNet-18 (.resnet) -> LeakyReLU -> Linear(encoding size); text
encoder: token embedding (a linear map of one-hot tokens) -> 4 Conv1d layers -> max over
positions -> Linear. Loss: ``symmetric_infonce(..., similarity="cosine")`` (or ``nt_xent``),
temperature 0.1 by default (the paper: 1.0). Evaluation as in the paper's code: probes fit on
the validation split's encodings and scored on the test split, from each modality's encoding:
MLP-classifier accuracy (one hidden layer) for discrete factors,
kernel-ridge R^2 (the simulation's grid) for continuous ones; circular factors (hues, angles)
are regressed as (cos, sin) pairs.
"""
from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
from torch import nn

from mmcl_fast import nt_xent, symmetric_infonce

from ..common.config_flags import add_config_flags, config_overrides, option
from ..common.evaluation import classification_accuracy, r2_scores
from ..common.lr_schedule import SCHEDULES, learning_rate
from . import procedural_m3di as m3di
from .resnet import ResNet18

# factor -> (modality it is read from, kind, role); roles as in the paper's Table 3
IMAGE_FACTORS = {"shape": "content", "x": "content", "y": "content", "object_hue": "style",
                 "rotation": "image-specific", "spot_pos": "image-specific",
                 "spot_hue": "image-specific", "background_hue": "image-specific"}
TEXT_FACTORS = {"shape": "content", "x": "content", "y": "content", "object_hue": "style",
                "phrasing": "text-specific"}
CHANCE = {"shape": 1 / 7, "x": 1 / 3, "y": 1 / 3, "phrasing": 1 / 5}

BATCH_SEED_OFFSET = 1   # the training batches' random stream, derived from the run's seed


@dataclass
class ImageTextConfig:
    # data
    image_size: int = option(64, "image side in pixels")
    n_train: int = option(10_000, "training pairs")
    n_val: int = option(2_000, "pairs the probes are fit on")
    n_test: int = option(1_000, "pairs the probes are scored on")
    causal: bool = option(False, "causal dependence between the latent factors")
    data_dir: str | None = option(None, "cache of the .npz splits (default: <out>/data)")
    # model and optimisation. Quick CPU defaults; the paper: batch 256, lr 1e-5, 100k steps,
    # temperature 1, constant lr, no warmup, torchvision's default init. At temperature 1 a few
    # hundred CPU steps learn position but not shape; temperature 0.1, a cosine decay after a
    # 50-step warmup and residual blocks that start as identities were the best of a short
    # search (benchmarks/RESULTS.md).
    encoding_size: int = option(4, "encoder output dimension")
    batch_size: int = option(64, "pairs per step")
    steps: int = option(800, "training steps")
    lr: float = option(1e-3, "Adam learning rate")
    lr_schedule: str = option("cosine", "cosine or constant (the paper)")
    warmup_steps: int = option(50, "linear learning-rate ramp over the first steps (0: none)")
    zero_init_residual: bool = option(True, "ResNet blocks start as their shortcut (the paper: false)")
    grad_clip: float = option(2.0, "gradient-norm clipping threshold")
    temperature: float = option(0.1, "loss temperature")
    loss: str = option("symmetric_infonce", "symmetric_infonce or nt_xent")
    seed: int = option(0, "seed of the data, the encoders and the batches")
    checkpoint_every: int = option(100, "steps between checkpoints")
    eval_every: int = option(0, "validation loss every N steps (0: only at the end)")
    threads: int = option(0, "torch threads (0: torch's default)")
    encoding_sizes: list[int] = option(default_factory=list,
                                       help="sweep: one run per encoding size, plus the Fig. 3 plot (empty: one run)")


class ImageEncoder(nn.Module):
    """ResNet-18 with 100 outputs -> LeakyReLU -> Linear(encoding_size), as in the paper's code."""

    def __init__(self, encoding_size: int, zero_init_residual: bool = False):
        super().__init__()
        self.net = nn.Sequential(ResNet18(100, zero_init_residual), nn.LeakyReLU(),
                                 nn.Linear(100, encoding_size))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(images)


class TextEncoder(nn.Module):
    """Token embedding (= a linear map of one-hot tokens) -> 4 x [Conv1d(k=3), LeakyReLU] ->
    max over positions -> Linear(encoding_size)."""

    def __init__(self, vocab_size: int, encoding_size: int, width: int = 128):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, width, padding_idx=0)
        layers: list[nn.Module] = []
        for _ in range(4):
            layers += [nn.Conv1d(width, width, 3, padding=1), nn.LeakyReLU()]
        self.convs = nn.Sequential(*layers)
        self.head = nn.Linear(width, encoding_size)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        h = self.convs(self.embed(tokens).transpose(1, 2))          # (N, width, L)
        pad = (tokens == 0)[:, None, :]
        return self.head(h.masked_fill(pad, float("-inf")).amax(dim=2))


def images_to_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 (N, H, W, 3) -> float (N, 3, H, W) scaled to [-1, 1]."""
    return torch.from_numpy(images).permute(0, 3, 1, 2).float().div_(127.5).sub_(1.0)


class ImageTextRun:
    """Data, encoders and optimiser of one run; ``step()`` trains on one random batch."""

    def __init__(self, cfg: ImageTextConfig, out_dir: Path):
        if cfg.loss not in ("symmetric_infonce", "nt_xent"):
            raise ValueError(f"loss must be 'symmetric_infonce' or 'nt_xent', got {cfg.loss!r}")
        if cfg.encoding_size < 1 or cfg.batch_size < 2 or cfg.steps < 0:
            raise ValueError("need encoding_size >= 1, batch_size >= 2, steps >= 0")
        learning_rate(cfg.lr_schedule, cfg.lr, 0, cfg.steps, cfg.warmup_steps)   # rejects bad ones
        self.cfg = cfg
        data = Path(cfg.data_dir) if cfg.data_dir else out_dir / "data"
        tag = (f"s{cfg.seed}_px{cfg.image_size}_{'causal' if cfg.causal else 'indep'}"
               f"_v{m3di.GENERATOR_VERSION}")
        self.splits = {name: m3di.load_or_generate(data / f"{name}_{n}_{tag}.npz", n,
                                                   1000 * cfg.seed + k, cfg.image_size, cfg.causal)
                       for k, (name, n) in enumerate((("train", cfg.n_train), ("val", cfg.n_val),
                                                      ("test", cfg.n_test)))}
        self.vocab = m3di.Vocabulary(self.splits["train"].captions)
        self.tokens = {k: torch.from_numpy(self.vocab.encode(s.captions, m3di.MAX_TOKENS))
                       for k, s in self.splits.items()}
        torch.manual_seed(cfg.seed)
        self.image_encoder = ImageEncoder(cfg.encoding_size, cfg.zero_init_residual)
        self.text_encoder = TextEncoder(len(self.vocab), cfg.encoding_size)
        self.params = [*self.image_encoder.parameters(), *self.text_encoder.parameters()]
        self.opt = torch.optim.Adam(self.params, lr=cfg.lr)
        self.gen = torch.Generator().manual_seed(cfg.seed + BATCH_SEED_OFFSET)
        self.step_count = 0

    def contrastive(self, zi: torch.Tensor, zt: torch.Tensor) -> torch.Tensor:
        """The configured loss (symmetric InfoNCE or NT-Xent, cosine) between two encodings."""
        fn = symmetric_infonce if self.cfg.loss == "symmetric_infonce" else nt_xent
        return fn(zi, zt, temperature=self.cfg.temperature, similarity="cosine")

    def loss(self, images: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        return self.contrastive(self.image_encoder(images), self.text_encoder(tokens))

    def step(self) -> float:
        for group in self.opt.param_groups:
            group["lr"] = learning_rate(self.cfg.lr_schedule, self.cfg.lr, self.step_count,
                                        self.cfg.steps, self.cfg.warmup_steps)
        n = len(self.splits["train"])
        idx = torch.randint(0, n, (self.cfg.batch_size,), generator=self.gen)
        images = images_to_tensor(self.splits["train"].images[idx.numpy()])
        loss = self.loss(images, self.tokens["train"][idx])
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.params, self.cfg.grad_clip)
        self.opt.step()
        self.step_count += 1
        return float(loss.detach())

    @torch.no_grad()
    def encode(self, split: str, batch: int = 250) -> tuple[np.ndarray, np.ndarray]:
        """(image encodings, text encodings) of a split, encoders in eval mode."""
        self.image_encoder.eval(), self.text_encoder.eval()
        s, toks = self.splits[split], self.tokens[split]
        zi = [self.image_encoder(images_to_tensor(s.images[i:i + batch]))
              for i in range(0, len(s), batch)]
        zt = [self.text_encoder(toks[i:i + batch]) for i in range(0, len(s), batch)]
        self.image_encoder.train(), self.text_encoder.train()
        return torch.cat(zi).numpy(), torch.cat(zt).numpy()

    @torch.no_grad()
    def validation_loss(self, encodings: tuple[np.ndarray, np.ndarray] | None = None) -> float:
        """The loss on the whole validation split (``encodings``: its image/text encodings, if
        already computed)."""
        zi, zt = encodings if encodings is not None else self.encode("val")
        return float(self.contrastive(torch.from_numpy(zi), torch.from_numpy(zt)))

    def state(self) -> dict:
        return {"image_encoder": self.image_encoder.state_dict(),
                "text_encoder": self.text_encoder.state_dict(), "opt": self.opt.state_dict(),
                "step": self.step_count, "gen": self.gen.get_state(),
                "config": asdict(self.cfg)}

    def load(self, state: dict) -> None:
        self.image_encoder.load_state_dict(state["image_encoder"])
        self.text_encoder.load_state_dict(state["text_encoder"])
        self.opt.load_state_dict(state["opt"])
        self.step_count = state["step"]
        self.gen.set_state(state["gen"])


def _circular(v: np.ndarray) -> np.ndarray:
    """A value in [0, 1) on a circle (hue, angle) as (cos, sin) of 2 pi v."""
    return np.stack([np.cos(2 * np.pi * v), np.sin(2 * np.pi * v)], axis=1)


def evaluate_factors(z_image: np.ndarray, z_text: np.ndarray, factors: dict[str, np.ndarray],
                     n_fit: int | None = None) -> dict[str, dict[str, dict]]:
    """{modality: {factor: {"role", "metric", "score"}}}: accuracy for discrete factors, kernel
    ridge R^2 for continuous ones; probes fit on the first ``n_fit`` samples (default half) and
    scored on the rest."""
    out: dict[str, dict[str, dict]] = {}
    for modality, z, table in (("image", z_image, IMAGE_FACTORS), ("text", z_text, TEXT_FACTORS)):
        res = {}
        for name, role in table.items():
            if name in m3di.DISCRETE:
                score = classification_accuracy(z, factors[name], n_fit=n_fit)
                res[name] = {"role": role, "metric": "accuracy", "score": score,
                             "chance": CHANCE[name]}
            else:
                r2 = r2_scores(z, {name: _circular(factors[name])}, n_fit=n_fit)[name]
                res[name] = {"role": role, "metric": "R2", "score": r2["nonlinear"],
                             "linear": r2["linear"]}
        out[modality] = res
    return out


def train(cfg: ImageTextConfig, out_dir: Path | str, progress: bool = True) -> dict:
    """Train (resuming from ``out_dir/checkpoint.pt``), evaluate, write results.json."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    t0 = time.time()
    run = ImageTextRun(cfg, out_dir)
    m3di.contact_sheet(run.splits["train"], out_dir / "samples.png")
    ckpt = out_dir / "checkpoint.pt"
    if ckpt.exists():
        state = torch.load(ckpt, weights_only=False)
        if state["config"] == asdict(cfg):
            run.load(state)
    t_data = time.time() - t0
    history = []
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=cfg.steps, initial=run.step_count, desc=f"train-imagetext enc={cfg.encoding_size}",
                   mininterval=1.0)
    t1, first = time.time(), run.step_count
    while run.step_count < cfg.steps:
        loss = run.step()
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.4f}",
                            steps_per_s=f"{(run.step_count - first) / (time.time() - t1):.2f}",
                            refresh=False)
        if cfg.eval_every and run.step_count % cfg.eval_every == 0:
            history.append({"step": run.step_count, "train_loss": loss,
                            "val_loss": run.validation_loss()})
        if run.step_count % cfg.checkpoint_every == 0 or run.step_count == cfg.steps:
            torch.save(run.state(), ckpt)
    if bar is not None:
        bar.close()
    t_train = time.time() - t1
    t2 = time.time()
    # as in the paper's code: probes fit on the validation encodings, scored on the test split
    (vi, vt), (ti, tt) = run.encode("val"), run.encode("test")
    val_f, test_f = run.splits["val"].factors, run.splits["test"].factors
    scores = evaluate_factors(np.concatenate([vi, ti]), np.concatenate([vt, tt]),
                              {k: np.concatenate([val_f[k], test_f[k]]) for k in test_f}, n_fit=len(vi))
    results = {"config": asdict(cfg), "scores": scores, "val_loss": run.validation_loss((vi, vt)),
               "history": history, "vocab_size": len(run.vocab),
               "seconds": {"data": t_data, "train": t_train, "eval": time.time() - t2,
                           "total": time.time() - t0}}
    (out_dir / "results.json").write_text(json.dumps(results, indent=1))
    return results


def format_scores(results: dict) -> str:
    """Markdown table of one run's scores."""
    lines = ["| modality | factor | role | metric | score |", "|---|---|---|---|---|"]
    for modality, table in results["scores"].items():
        for name, r in table.items():
            chance = f" (chance {r['chance']:.2f})" if "chance" in r else ""
            lines.append(f"| {modality} | {name} | {r['role']} | {r['metric']} | "
                         f"{r['score']:.3f}{chance} |")
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


def build_parser(p: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    p = p or argparse.ArgumentParser(prog="mmcl-fast train-imagetext", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_flags(p, ImageTextConfig, {
        "loss": dict(choices=("symmetric_infonce", "nt_xent")),
        "lr_schedule": dict(choices=SCHEDULES),
        "encoding_sizes": dict(type=int, nargs="+")})
    p.add_argument("--out", default="runs/imagetext", help="output directory")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def main(argv=None, args=None) -> dict:
    args = args if args is not None else build_parser().parse_args(argv)
    overrides = config_overrides(args, ImageTextConfig)
    cfg = replace(ImageTextConfig(), **overrides)
    out = Path(args.out)
    if not cfg.encoding_sizes:
        res = train(cfg, out, progress=not args.quiet)
        print(format_scores(res))
        print(f"validation loss {res['val_loss']:.4f}; {res['seconds']['total']:.0f} s in all "
              f"({res['seconds']['train']:.0f} s training); wrote {out / 'results.json'}")
        return res
    runs = {}
    for k in cfg.encoding_sizes:
        runs[k] = train(replace(cfg, encoding_size=k, encoding_sizes=[],
                                data_dir=cfg.data_dir or str(out / "data")),
                        out / f"enc{k}", progress=not args.quiet)
        print(f"encoding size {k}:\n{format_scores(runs[k])}")
    (out / "sweep.json").write_text(json.dumps({str(k): v for k, v in runs.items()}, indent=1))
    png = plot_sweep(runs, out / "sweep.png")
    print(f"wrote {out / 'sweep.json'} and {png}")
    return {"runs": runs}


if __name__ == "__main__":
    main()
