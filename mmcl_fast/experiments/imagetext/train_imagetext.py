"""``mmcl-fast train-imagetext``: image/text pairs of the procedural Multimodal3DIdent (paper Sec. 5.2, Fig. 3).

    mmcl-fast train-imagetext                               # quick CPU default: causal data, size 4
    mmcl-fast train-imagetext --seeds 3                     # 3 seeds: mean and sd per factor
    mmcl-fast train-imagetext --encoding-sizes 2 3 4 6 --seeds 3   # Fig. 3 and Fig. 7b, error bars
    mmcl-fast train-imagetext --causal false --out runs/indep   # independent factors (paper App. Fig. 11)
    mmcl-fast train-imagetext --preset paper                # what the paper trained (GPU-sized)

Image encoder: ResNet-18 (.resnet) -> LeakyReLU -> Linear(encoding size); text encoder: the
paper code's 2-D ConvNet over the token embeddings (.encoders.TextConvNet2D), or this project's
1-D ConvNet with ``--text-encoder conv1d``. Loss: ``symmetric_infonce(..., similarity="cosine")``
(or ``nt_xent``, the original estimator), temperature 0.1 by default (the paper: 1.0).
Evaluation as in the paper's code (.evaluation): probes fit on the validation split's encodings
and scored on the test split.
"""
from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

from ..common.config_flags import add_config_flags, config_overrides
from ..common.lr_schedule import SCHEDULES
from .config import LOSSES, PRESETS, TEXT_ENCODERS, ImageTextConfig
from .report import format_scores, format_summary, plot_sweep, summarize
from .training import train


def build_parser(p: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    p = p or argparse.ArgumentParser(prog="mmcl-fast train-imagetext", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_flags(p, ImageTextConfig, {
        "loss": dict(choices=LOSSES),
        "text_encoder": dict(choices=TEXT_ENCODERS),
        "lr_schedule": dict(choices=SCHEDULES),
        "encoding_sizes": dict(type=int, nargs="+")})
    p.add_argument("--preset", choices=sorted(PRESETS), default="quick",
                   help="quick: the CPU-sized defaults; paper: what the paper trained (flags override)")
    p.add_argument("--out", default="runs/imagetext", help="output directory")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def config_from_args(args: argparse.Namespace) -> ImageTextConfig:
    """The run's configuration: the preset's values, then the flags given on the command line."""
    return replace(ImageTextConfig(), **{**PRESETS[args.preset], **config_overrides(args, ImageTextConfig)})


def run_seeds(cfg: ImageTextConfig, out: Path, progress: bool) -> list[dict]:
    """``cfg.seeds`` runs with seeds cfg.seed, cfg.seed + 1, ...: in ``out`` itself for one seed,
    else in ``out/seed<seed>``."""
    if cfg.seeds < 1:
        raise ValueError(f"seeds must be >= 1, got {cfg.seeds}")
    if cfg.seeds == 1:
        return [train(cfg, out, progress=progress)]
    return [train(replace(cfg, seed=cfg.seed + i, seeds=1), out / f"seed{cfg.seed + i}", progress=progress)
            for i in range(cfg.seeds)]


def main(argv=None, args=None) -> dict:
    args = args if args is not None else build_parser().parse_args(argv)
    cfg = config_from_args(args)
    out = Path(args.out)
    if not cfg.encoding_sizes:
        runs = run_seeds(cfg, out, progress=not args.quiet)
        if len(runs) == 1:
            res = runs[0]
            print(format_scores(res))
            print(f"validation loss {res['val_loss']:.4f}; {res['seconds']['total']:.0f} s in all "
                  f"({res['seconds']['train']:.0f} s training); wrote {out / 'results.json'}")
            return res
        summary = summarize(runs)
        (out / "summary.json").write_text(json.dumps({"summary": summary, "runs": runs}, indent=1))
        (out / "summary.md").write_text(format_summary(summary) + "\n")
        print(format_summary(summary))
        print(f"wrote {out / 'summary.json'} and {out / 'summary.md'}")
        return {"runs": runs, "summary": summary}
    runs = {}
    for k in cfg.encoding_sizes:
        runs[k] = run_seeds(replace(cfg, encoding_size=k, encoding_sizes=[],
                                    data_dir=cfg.data_dir or str(out / "data")),
                            out / f"enc{k}", progress=not args.quiet)
        print(f"encoding size {k}:\n{format_summary(summarize(runs[k]))}")
    (out / "sweep.json").write_text(json.dumps(
        {str(k): {"summary": summarize(v), "runs": v} for k, v in runs.items()}, indent=1))
    png = plot_sweep(runs, out / "sweep.png")
    print(f"wrote {out / 'sweep.json'} and {png}")
    return {"runs": runs}


if __name__ == "__main__":
    main()
