"""The raw-x control of the Beyond DAGs box data, against the depth of the mixing: linear R² of
z_x from x = g_x(z_x, m_x), before any training. A high value means the mixing is nearly linear
and no encoder can beat the control by much on a linear metric.

    python -m mmcl_fast.experiments.beyond_dags.raw_x_control --out results/beyond_dags/beyond_dags_raw_x_control.json

For each depth, with the box latents as drawn ([0, 1]) and centred (minus 0.5): the mixing of
run seeds 0-2 (PartialCausalProcess's g_x), 10,000 samples to fit, 10,000 to score.
"""
from __future__ import annotations

import argparse
import json

import numpy as np
import torch
from sklearn.linear_model import LinearRegression
from sklearn.metrics import r2_score

from mmcl_fast.experiments.beyond_dags.latent_model import PartialCausalProcess


def raw_x_r2(layers: int, centre: bool, seed: int, n: int = 20_000) -> float:
    proc = PartialCausalProcess("box", n_z=6, n_m=2, seed=seed, mixing_layers=layers)
    g = torch.Generator().manual_seed(seed)
    z = torch.rand(n, 6, generator=g, dtype=torch.float64)
    inp = torch.cat([z, torch.rand(n, 2, generator=g, dtype=torch.float64)], 1) - (0.5 if centre else 0.0)
    x = proc.g_x(inp.float()).double().numpy()
    half = n // 2
    fit = LinearRegression().fit(x[:half], z[:half].numpy())
    return float(r2_score(z[half:].numpy(), fit.predict(x[half:])))


def main(argv=None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--layers", type=int, nargs="+", default=[3, 4, 5])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--out", help="write the rows as JSON here")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    rows = []
    print("| mixing layers | latents | raw-x linear R² per seed | mean |\n|---|---|---|---|")
    for layers in args.layers:
        for centre in (False, True):
            r2 = [raw_x_r2(layers, centre, s) for s in range(args.seeds)]
            rows.append({"mixing_layers": layers, "centred": centre, "per_seed": r2, "mean": float(np.mean(r2))})
            print(f"| {layers} | {'centred' if centre else '[0, 1]'} | {', '.join(f'{v:.3f}' for v in r2)} "
                  f"| {np.mean(r2):.3f} |")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(rows, f, indent=1)
    return rows


if __name__ == "__main__":
    main()
