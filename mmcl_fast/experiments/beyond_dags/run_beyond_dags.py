"""``mmcl-fast beyond-dags``: train and evaluate the latent partial causal model (Liu et al.).

    mmcl-fast beyond-dags --setting sphere                 one run (seed 0) in runs/beyond_dags
    mmcl-fast beyond-dags --setting box --violation normal_conditional --seeds 3
    mmcl-fast beyond-dags --all --seeds 3                  every setting x violation
    mmcl-fast beyond-dags --ica-demo --seeds 3             box data, dot-product model, FastICA

Each run writes OUT/<setting>_<violation>/seed<s>/results.json (checkpointed, resumable); the
command then writes OUT/beyond_dags.{json,md}: mean +- std over seeds of every (setting,
violation) present under OUT, with the controls and the targets.

--ica-demo trains the box data with a dot-product model (identifiable up to an affine map only;
runs in OUT/box_none_dot/), then asks whether FastICA on its frozen features recovers the
component-wise latents that the L1 model finds directly: MCC of the raw features, of FastICA
components and of PCA + FastICA components (fitted on half of fresh samples, scored on the
other half), next to the L1 model's MCC when OUT/box_none/ holds its runs -> OUT/ica_demo.{json,md}.
"""
from __future__ import annotations

import argparse
import json
from dataclasses import fields
from pathlib import Path

import numpy as np
import torch

from ..common.checkpoint import CHECKPOINT_NAME, restore_checkpoint
from ..common.config_flags import add_config_flags, config_overrides
from ..common.evaluation import mcc
from ..common.ica_probe import fit_components
from ..common.seed_stats import mean_std
from .config import EVAL_SEED_OFFSET, BeyondDagsConfig
from .latent_model import SETTINGS, VIOLATIONS
from .report import aggregate, markdown
from .training import BeyondDagsRun, train


def build_parser(p: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    p = p or argparse.ArgumentParser(prog="mmcl-fast beyond-dags", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_flags(p, BeyondDagsConfig, special={"setting": {"choices": SETTINGS},
                                                   "violation": {"choices": VIOLATIONS}})
    p.add_argument("--all", action="store_true", help="every setting and violation")
    p.add_argument("--ica-demo", action="store_true",
                   help="box data with a dot-product model: MCC of raw vs FastICA vs PCA + FastICA features")
    p.add_argument("--seeds", type=int, default=1, help="seeds 0..N-1 of each configuration (default 1)")
    p.add_argument("--out", default="runs/beyond_dags", help="output folder (default runs/beyond_dags)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def run_dir(out: Path, cfg: BeyondDagsConfig) -> Path:
    suffix = "" if cfg.similarity == "auto" else f"_{cfg.similarity}"
    return out / f"{cfg.setting}_{cfg.violation}{suffix}" / f"seed{cfg.seed}"


def collect(out: Path, similarity: str = "auto") -> list[dict]:
    runs = [json.loads(p.read_text()) for p in sorted(out.glob("*_*/seed*/results.json"))]
    return [r for r in runs if r["config"].get("similarity", "auto") == similarity]


@torch.no_grad()
def ica_scores(cfg: BeyondDagsConfig, out: Path) -> dict[str, float]:
    """MCC against z_x of the trained f_x's features: raw, FastICA, PCA (n_z) + FastICA; the
    transforms are fitted on the first half of fresh samples and scored on the second."""
    run = BeyondDagsRun(cfg)
    if not restore_checkpoint(run, run_dir(out, cfg) / CHECKPOINT_NAME):
        raise FileNotFoundError(f"no checkpoint of {cfg} under {out}")
    x, _, lat = run.process.sample(cfg.eval_samples, torch.Generator().manual_seed(cfg.seed + EVAL_SEED_OFFSET))
    h, z = run.f_x(x).numpy().astype(np.float64), lat["z_x"].numpy()
    half = len(h) // 2
    scores = {}
    for pipeline in ("raw", "ica", "pca_ica"):
        comps = fit_components(h[:half], pipeline, n_pca=cfg.n_z if pipeline == "pca_ica" else None, seed=cfg.seed)
        scores[pipeline] = mcc(comps.transform(h[half:]), z[half:])
    return scores


def ica_demo(base: dict, seeds: range, out: Path, progress: bool) -> dict:
    rows = []
    for seed in seeds:
        cfg = BeyondDagsConfig(**base, setting="box", violation="none", similarity="dot", seed=seed)
        train(cfg, run_dir(out, cfg), progress=progress)
        rows.append({"seed": seed, **ica_scores(cfg, out)})
        print(f"dot model, seed {seed}: MCC raw {rows[-1]['raw']:.3f}, FastICA {rows[-1]['ica']:.3f}, "
              f"PCA + FastICA {rows[-1]['pca_ica']:.3f}", flush=True)
    l1 = [r["summary"]["f_x"] for r in collect(out) if r["config"]["setting"] == "box"
          and r["config"]["violation"] == "none"]
    report = {"dot_model": {k: mean_std([r[k] for r in rows]) for k in ("raw", "ica", "pca_ica")},
              "l1_model_raw": mean_std(l1) if l1 else None, "runs": rows}
    fmt = lambda st: f"{st['mean']:.3f} ± {st['std']:.3f} ({st['n']} seeds)" if st else "not run"  # noqa: E731
    md = ("| features of f_x (box data) | MCC with z_x |\n|---|---|\n"
          f"| dot model, raw | {fmt(report['dot_model']['raw'])} |\n"
          f"| dot model, FastICA | {fmt(report['dot_model']['ica'])} |\n"
          f"| dot model, PCA + FastICA | {fmt(report['dot_model']['pca_ica'])} |\n"
          f"| L1 model, raw | {fmt(report['l1_model_raw'])} |\n")
    (out / "ica_demo.json").write_text(json.dumps(report, indent=1))
    (out / "ica_demo.md").write_text(md)
    print("\n" + md + f"wrote {out / 'ica_demo.json'} and {out / 'ica_demo.md'}")
    return report


def main(argv=None, args=None) -> list[dict]:
    args = args if args is not None else build_parser().parse_args(argv)
    if args.seeds < 1:
        raise SystemExit(f"--seeds must be >= 1, got {args.seeds}")
    overrides = config_overrides(args, BeyondDagsConfig)
    if (args.all or args.ica_demo) and ({"setting", "violation", "seed", "similarity"} & overrides.keys()):
        raise SystemExit("--all and --ica-demo choose the settings and seeds: drop --setting/--violation/--seed/"
                         "--similarity")
    if args.ica_demo:
        base = {k: v for k, v in overrides.items()}
        ica_demo(base, range(args.seeds), Path(args.out), progress=not args.quiet)
        return []
    pairs = ([(s, v) for s in SETTINGS for v in VIOLATIONS] if args.all
             else [(overrides.get("setting", "sphere"), overrides.get("violation", "none"))])
    base = {k: v for k, v in overrides.items() if k not in ("setting", "violation", "seed")}
    first_seed = overrides.get("seed", 0)
    out = Path(args.out)
    results = []
    for setting, violation in pairs:
        for seed in range(first_seed, first_seed + args.seeds):
            cfg = BeyondDagsConfig(**base, setting=setting, violation=violation, seed=seed)
            r = train(cfg, run_dir(out, cfg), progress=not args.quiet)
            s = r["summary"]
            print(f"{setting:6s} {violation:19s} seed {seed}: {s['metric']} encoders {s['encoders']:.3f} "
                  f"(raw x {s['raw_x']:.3f}, random encoder {s['random_encoder_x']:.3f}), "
                  f"m R^2 {s['m_r2_nonlinear']:.3f}, {r['train_seconds']:.0f} s", flush=True)
            results.append(r)
    rows = aggregate(collect(out))
    (out / "beyond_dags.json").write_text(json.dumps(
        {"rows": rows, "config_fields": [f.name for f in fields(BeyondDagsConfig)]}, indent=1))
    (out / "beyond_dags.md").write_text(markdown(rows))
    print("\n" + markdown(rows))
    print(f"wrote {out / 'beyond_dags.json'} and {out / 'beyond_dags.md'}")
    return results


if __name__ == "__main__":
    main()
