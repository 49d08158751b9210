"""``mmcl-fast comm``: CoMM and its baselines on bimodal Trifeatures, next to the paper's Fig. 4.

    mmcl-fast comm                              CoMM and the supervised control, seed 0
    mmcl-fast comm --method all --seeds 3       cross, cross_self, comm and the control, 3 seeds each
    mmcl-fast comm --ablation                   CoMM's Fig. 5: L'' only, the unimodal terms only, all

Every (method, seed) pre-trains twice: on unbiased same-shape pairs (scored on redundancy R and
uniqueness U) and on biased pairs in M (scored on synergy S); the supervised control (C of the
protocol, ``--no-control`` leaves it out) is trained for the same seeds. Runs go to
OUT/<variant>/<pairs>/seed<s> (checkpointed, resumable); the table over every finished run under
OUT, with the controls, the normalised gains, the protocol's verdicts (``protocol.py``) and the
paper's numbers, goes to OUT/comm_trifeatures.{json,md}.
"""
from __future__ import annotations

import argparse
import json
from importlib import resources
from pathlib import Path

from ..common.config_flags import add_config_flags, config_overrides
from .config import CONTROLS, METHODS, PAIRS, CommConfig
from .protocol import load_runs, markdown, seed_table, summary, verdicts
from .training import train

ABLATION = {"comm_full_only": "0,0,1", "comm_unimodal_only": "1,1,0", "comm": "1,1,1"}
PAPER_NAMES = {"cross": "Cross", "cross_self": "Cross+Self", "comm": "CoMM"}


def paper_rows() -> dict[str, dict[str, float]]:
    text = resources.files("mmcl_fast.experiments.identifiability").joinpath("data/paper_results.json").read_text()
    table = json.loads(text)["comm_trifeatures_linear_probe_accuracy"]
    return {row[0]: {"R": row[1] / 100, "U": row[2] / 100, "S": row[3] / 100} for row in table["rows"]}


def build_parser(p: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    p = p or argparse.ArgumentParser(prog="mmcl-fast comm", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_flags(p, CommConfig, special={"method": {"choices": (*METHODS, *CONTROLS, "all")},
                                             "pairs": {"choices": PAIRS}})
    p.add_argument("--ablation", action="store_true", help="CoMM's Fig. 5 term ablation instead of the methods")
    p.add_argument("--seeds", type=int, default=1, help="seeds 0..N-1 (default 1)")
    p.add_argument("--no-control", action="store_true", help="do not train the supervised control")
    p.add_argument("--out", default="runs/comm", help="output folder (default runs/comm)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def variants(method: str, ablation: bool, control: bool = True) -> dict[str, dict]:
    """{variant name: config overrides}."""
    if ablation:
        return {name: {"method": "comm", "term_weights": w} for name, w in ABLATION.items()}
    methods = METHODS if method == "all" else (method,)
    if control and "supervised" not in methods:
        methods = (*methods, "supervised")
    return {m: {"method": m} for m in methods}


def write_table(out: Path) -> dict:
    """The table over every finished run under ``out``: OUT/comm_trifeatures.{json,md}."""
    per_seed = seed_table(load_runs(out))
    rows, verdict, paper = summary(per_seed), verdicts(per_seed), paper_rows()
    table = {"rows": rows, "per_seed": {k: {str(s): v for s, v in d.items()} for k, d in per_seed.items()},
             "protocol": verdict, "paper": paper}
    (out / "comm_trifeatures.json").write_text(json.dumps(table, indent=1))
    (out / "comm_trifeatures.md").write_text(markdown(rows, verdict, paper, PAPER_NAMES))
    return table


def main(argv=None, args=None) -> dict:
    args = args if args is not None else build_parser().parse_args(argv)
    if args.seeds < 1:
        raise SystemExit(f"--seeds must be >= 1, got {args.seeds}")
    overrides = config_overrides(args, CommConfig)
    if args.ablation and ({"method", "term_weights"} & overrides.keys()):
        raise SystemExit("--ablation sets the method and the term weights: drop --method/--term-weights")
    method = overrides.pop("method", "comm")
    only_pairs = overrides.pop("pairs", None)
    first_seed = overrides.pop("seed", 0)
    out = Path(args.out)
    for name, var in variants(method, args.ablation, not args.no_control and not args.ablation).items():
        for seed in range(first_seed, first_seed + args.seeds):
            for pairs in ((only_pairs,) if only_pairs else PAIRS):
                cfg = CommConfig(**{**overrides, **var}, pairs=pairs, seed=seed)
                r = train(cfg, out / name / pairs / f"seed{seed}", progress=not args.quiet)
                scores = ", ".join(f"{k} {v:.3f}" for k, v in r["scores"].items() if k in ("R", "U", "S"))
                print(f"{name:20s} {pairs:8s} seed {seed}: {scores} ({r['train_seconds']:.0f} s)", flush=True)
    table = write_table(out)
    print("\n" + (out / "comm_trifeatures.md").read_text()
          + f"wrote {out / 'comm_trifeatures.json'} and {out / 'comm_trifeatures.md'}")
    return table


if __name__ == "__main__":
    main()
