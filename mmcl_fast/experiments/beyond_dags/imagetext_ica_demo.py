"""PCA + FastICA on the image/text trainer's frozen image encoder ("Beyond DAGs", Fig. 4 style):
few-shot linear probes of the procedural image factors (shape: 7 classes, x and y: 3 each) from
(1) the raw encodings, (2) their FastICA components, (3) PCA + FastICA components. The
transforms are fitted without labels on the training split's encodings; the probe sees ``shots``
labelled training images per class (10 draws) and is scored on the test split.

    python -m mmcl_fast.experiments.beyond_dags.imagetext_ica_demo RUN_DIR [RUN_DIR ...] --out FILE
"""
from __future__ import annotations

import argparse
import json
from dataclasses import fields
from pathlib import Path

from ..common.checkpoint import CHECKPOINT_NAME, restore_checkpoint
from ..common.ica_probe import PIPELINES, few_shot_accuracy, fit_components
from ..common.seed_stats import mean_std
from ..imagetext.config import ImageTextConfig
from ..imagetext.training import ImageTextRun

FACTORS = ("shape", "x", "y")
SHOTS = (2, 5)


def load_run(run_dir: Path) -> ImageTextRun:
    saved = json.loads((run_dir / "results.json").read_text())["config"]
    known = {f.name for f in fields(ImageTextConfig)}
    cfg = ImageTextConfig(**{k: v for k, v in saved.items() if k in known})
    run = ImageTextRun(cfg, run_dir)
    # only what shapes the encoders and the data must match; the rest is bookkeeping
    model_fields = {"encoding_size", "text_encoder", "image_size", "seed", "causal", "zero_init_residual"}
    if not restore_checkpoint(run, run_dir / CHECKPOINT_NAME, known - model_fields):
        raise FileNotFoundError(f"{run_dir} holds no checkpoint")
    return run


def demo(run_dir: Path, seed: int = 0) -> dict:
    run = load_run(run_dir)
    z_train, _ = run.encode("train")
    z_test, _ = run.encode("test")
    out = {"run": str(run_dir), "encoding_size": int(z_train.shape[1]), "scores": {}}
    for pipeline in PIPELINES:
        comps = fit_components(z_train, pipeline, n_pca=z_train.shape[1], seed=seed)
        for factor in FACTORS:
            ytr, yte = run.splits["train"].factors[factor], run.splits["test"].factors[factor]
            for shots in SHOTS:
                acc = few_shot_accuracy(comps, z_train, ytr, z_test, yte, shots, seed=seed)
                out["scores"][f"{pipeline}/{factor}/{shots}-shot"] = acc
    return out


def main(argv=None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", type=Path, help="finished image/text run folders (results.json + checkpoint)")
    p.add_argument("--out", type=Path, required=True, help="JSON file for the scores")
    args = p.parse_args(argv)
    results = [demo(r) for r in args.runs]
    keys = sorted(results[0]["scores"])
    summary = {k: mean_std([r["scores"][k] for r in results]) for k in keys}
    args.out.write_text(json.dumps({"runs": results, "summary": summary}, indent=1))
    lines = ["| factor, shots | raw | FastICA | PCA + FastICA |", "|---|---|---|---|"]
    for factor in FACTORS:
        for shots in SHOTS:
            cells = [f"{summary[f'{pl}/{factor}/{shots}-shot']['mean']:.3f} ± "
                     f"{summary[f'{pl}/{factor}/{shots}-shot']['std']:.3f}" for pl in PIPELINES]
            lines.append(f"| {factor}, {shots}-shot | " + " | ".join(cells) + " |")
    table = "\n".join(lines) + "\n"
    args.out.with_suffix(".md").write_text(table)
    print(table + f"wrote {args.out} and {args.out.with_suffix('.md')}")
    return results


if __name__ == "__main__":
    main()
