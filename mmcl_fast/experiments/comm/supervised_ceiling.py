"""What the CoMM runs' image encoder can hold when it is *told* the labels: a supervised ceiling
for the linear probes of shape (R) and texture (U).

One :class:`ConvEncoder` (the architecture of every CoMM / baseline run) with a linear head per
attribute is trained with cross-entropy, sum over shape and texture, on single training images
(AdamW, cosine decay to 0, as the contrastive runs),
with SimCLR's augmentations as the contrastive runs see them (``--augment simclr``, blur scaled as
in training) or on clean images (``--augment none``). It reports, on the test images (combinations
never seen in training), after BatchNorm's statistics are recomputed on the clean training images
(the moving averages of few augmented batches misrepresent clean images):

* the heads' balanced accuracy;
* a linear probe on the frozen mean-pooled tokens, fit on the training images (logistic
  regression, C by 3-fold cross-validation, as the CoMM probe).

If the ceiling is high, a low R or U after contrastive pre-training is the objective, the
augmentations or the budget, not the encoder's capacity or the 64-pixel rendering.

    python -m mmcl_fast.experiments.comm.supervised_ceiling --steps 400 --augment simclr --out ceiling.json
"""
from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch
from sklearn.metrics import balanced_accuracy_score
from torch import nn

from ..common.lr_schedule import learning_rate
from .augmentations import SimCLRAugment
from .config import CommConfig
from .model import ConvEncoder
from .training import CommRun, linear_probe_scores
from .trifeatures import COLOURS, SHAPES, TEXTURES, TrifeaturesImages, render_split

ATTRIBUTES = ("shape", "texture", "colour")
AUGMENTS = ("none", "simclr")


class LabelledEncoder(nn.Module):
    def __init__(self, width: int, attributes: tuple[str, ...]):
        super().__init__()
        sizes = {"shape": len(SHAPES), "texture": len(TEXTURES), "colour": len(COLOURS)}
        self.encoder = ConvEncoder(width)
        self.heads = nn.ModuleDict({a: nn.Linear(width, sizes[a]) for a in attributes})

    def pooled(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x).mean(1)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        h = self.pooled(x)
        return {a: head(h) for a, head in self.heads.items()}


def recalibrate_batch_norm(encoder: nn.Module, images: torch.Tensor, size: int = 256) -> None:
    """Recompute every BatchNorm's running mean and variance as the average of their values over the
    batches of ``images`` (the clean images the probes see), in place of the moving averages of
    augmented training batches."""
    bns = [m for m in encoder.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None          # cumulative average over the passes below
    encoder.train()
    with torch.no_grad():
        for k in range(0, len(images), size):
            encoder(images[k:k + size])
    for m, mom in zip(bns, saved):
        m.momentum = mom
    encoder.eval()


def _batched(fn, images: torch.Tensor, size: int = 256) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat([fn(images[k:k + size]) for k in range(0, len(images), size)])


def supervised_ceiling(train: TrifeaturesImages, test: TrifeaturesImages, steps: int = 400, batch_size: int = 128,
                       augment: str = "simclr", width: int = 64, lr: float = 1e-3, seed: int = 0,
                       attributes: tuple[str, ...] = ("shape", "texture")) -> dict:
    """Train the labelled encoder; {"head": {attr: acc}, "probe": {attr: acc}, ...} on ``test``."""
    if augment not in AUGMENTS:
        raise ValueError(f"augment must be one of {AUGMENTS}, got {augment!r}")
    if steps < 1 or batch_size < 2 or width < 4:
        raise ValueError(f"need steps >= 1, batch_size >= 2 and width >= 4, got {steps}, {batch_size}, {width}")
    bad = [a for a in attributes if a not in ATTRIBUTES]
    if not attributes or bad:
        raise ValueError(f"attributes must be a non-empty subset of {ATTRIBUTES}, got {attributes}")
    torch.manual_seed(seed)
    model = LabelledEncoder(width, attributes)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    images = torch.from_numpy(train.images)
    labels = {a: torch.from_numpy(getattr(train, a)).long() for a in attributes}
    aug = SimCLRAugment(blur_sigma=CommRun.blur_sigma(CommConfig()))
    g = torch.Generator().manual_seed(seed + 1)
    rng = np.random.default_rng(seed + 2)
    losses = []
    t0 = time.perf_counter()
    model.train()
    for step in range(steps):
        for group in opt.param_groups:
            group["lr"] = learning_rate("cosine", lr, step, steps)
        idx = torch.from_numpy(rng.choice(len(train), size=min(batch_size, len(train)), replace=False))
        x = images[idx]
        if augment == "simclr":
            x = aug(x, g)
        out = model(x)
        loss = sum(nn.functional.cross_entropy(out[a], labels[a][idx]) for a in attributes)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    train_s = time.perf_counter() - t0
    recalibrate_batch_norm(model.encoder, images)
    model.eval()
    test_images = torch.from_numpy(test.images)
    head = {}
    for a in attributes:
        pred = _batched(lambda x, a=a: model(x)[a], test_images).argmax(1).numpy()
        head[a] = float(balanced_accuracy_score(getattr(test, a), pred))
    ftr = _batched(model.pooled, images).numpy().astype(np.float64)
    fte = _batched(model.pooled, test_images).numpy().astype(np.float64)
    probe = linear_probe_scores(ftr, fte, {a: getattr(train, a) for a in attributes},
                                {a: getattr(test, a) for a in attributes})
    return {"head": head, "probe": probe, "steps": steps, "batch_size": batch_size, "augment": augment,
            "width": width, "lr": lr, "seed": seed, "train_seconds": train_s,
            "final_loss": float(np.mean(losses[-20:])), "n_train": len(train), "n_test": len(test)}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(prog="python -m mmcl_fast.experiments.comm.supervised_ceiling",
                                 description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--augment", choices=AUGMENTS, default="simclr")
    ap.add_argument("--encoder-width", type=int, default=CommConfig().encoder_width)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", help="write the result as JSON here")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    try:
        res = supervised_ceiling(render_split("train", seed=args.seed), render_split("test", seed=args.seed),
                                 steps=args.steps, batch_size=args.batch_size, augment=args.augment,
                                 width=args.encoder_width, lr=args.lr, seed=args.seed)
    except ValueError as err:
        raise SystemExit(str(err)) from None
    print(json.dumps(res, indent=1))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(res, f, indent=1)
    return res


if __name__ == "__main__":
    main()
