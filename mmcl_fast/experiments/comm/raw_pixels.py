"""A control for the renderer: how much of shape and texture a linear probe reads from the raw
pixels of single images (the pixels' first ``components`` principal components, fit on the
training images; the CoMM probe otherwise). A texture the raw pixels give away linearly would make
U trivial for any encoder; one they hide but a small CNN reads is what the benchmark needs.

    python -m mmcl_fast.experiments.comm.raw_pixels --out results/comm/comm_raw_pixels.json
"""
from __future__ import annotations

import argparse
import json
import time

import torch

from .linear_probe import probe_scores
from .trifeatures import RENDERINGS, render_split


def raw_pixel_scores(rendering: str, seed: int = 0, components: int = 256) -> dict[str, float]:
    """Balanced test accuracy of shape, texture and colour from the raw pixels' principal components."""
    if components < 1:
        raise ValueError(f"components must be >= 1, got {components}")
    train, test = render_split("train", seed, rendering=rendering), render_split("test", seed, rendering=rendering)
    xtr = torch.from_numpy(train.images.reshape(len(train), -1)).double()
    xte = torch.from_numpy(test.images.reshape(len(test), -1)).double()
    mean = xtr.mean(0)
    _, _, v = torch.pca_lowrank(xtr - mean, q=min(components, len(train)), center=False, niter=4)
    ftr, fte = ((xtr - mean) @ v).numpy(), ((xte - mean) @ v).numpy()
    labels = lambda d: {"shape": d.shape, "texture": d.texture, "colour": d.colour}  # noqa: E731
    return probe_scores(ftr, fte, labels(train), labels(test))


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(prog="python -m mmcl_fast.experiments.comm.raw_pixels", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--renderings", nargs="+", default=list(RENDERINGS), choices=RENDERINGS)
    p.add_argument("--components", type=int, default=256)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", help="write the scores as JSON here")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    out = {"components": args.components, "seed": args.seed}
    for r in args.renderings:
        t0 = time.perf_counter()
        out[r] = raw_pixel_scores(r, args.seed, args.components)
        print(f"{r:13s} " + " ".join(f"{k} {v:.3f}" for k, v in out[r].items())
              + f"  ({time.perf_counter() - t0:.0f} s)", flush=True)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(out, f, indent=1)
    return out


if __name__ == "__main__":
    main()
