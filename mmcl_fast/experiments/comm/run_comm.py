"""``mmcl-fast comm``: CoMM and its baselines on bimodal Trifeatures, next to the paper's Fig. 4.

    mmcl-fast comm                              CoMM, seed 0 (both pre-trainings: unbiased, biased)
    mmcl-fast comm --method all --seeds 3       cross, cross_self and comm, 3 seeds each
    mmcl-fast comm --ablation --seeds 3         CoMM's Fig. 5: L'' only, the unimodal terms only, all

Every (method, seed) pre-trains twice: on unbiased same-shape pairs (scored on redundancy R and
uniqueness U) and on biased pairs in M (scored on synergy S). Runs go to
OUT/<variant>/<pairs>/seed<s> (checkpointed, resumable); the table over every finished run under
OUT goes to OUT/comm_trifeatures.{json,md}, with the paper's numbers and the targets.
"""
from __future__ import annotations

import argparse
import json
from importlib import resources
from pathlib import Path

from ..common.config_flags import add_config_flags, config_overrides
from ..common.seed_stats import mean_std
from .config import METHODS, PAIRS, CommConfig
from .training import train

ABLATION = {"comm_full_only": "0,0,1", "comm_unimodal_only": "1,1,0", "comm": "1,1,1"}
PAPER_NAMES = {"cross": "Cross", "cross_self": "Cross+Self", "comm": "CoMM"}
# The reproduction targets at CPU scale: (R >=, U bound, S bound) per method
TARGETS = {"cross": {"R": (">=", 0.95), "U": ("<=", 0.25), "S": ("within", 0.05)},
           "cross_self": {"R": (">=", 0.95), "S": ("within", 0.05)},
           "comm": {"R": (">=", 0.95), "U": (">=", 0.75), "S": (">=", 0.62)}}


def paper_rows() -> dict[str, dict[str, float]]:
    text = resources.files("mmcl_fast.experiments.identifiability").joinpath("data/paper_results.json").read_text()
    table = json.loads(text)["comm_trifeatures_linear_probe_accuracy"]
    return {row[0]: {"R": row[1] / 100, "U": row[2] / 100, "S": row[3] / 100} for row in table["rows"]}


def build_parser(p: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    p = p or argparse.ArgumentParser(prog="mmcl-fast comm", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_flags(p, CommConfig, special={"method": {"choices": (*METHODS, "all")},
                                             "pairs": {"choices": PAIRS}})
    p.add_argument("--ablation", action="store_true", help="CoMM's Fig. 5 term ablation instead of the methods")
    p.add_argument("--seeds", type=int, default=1, help="seeds 0..N-1 (default 1)")
    p.add_argument("--out", default="runs/comm", help="output folder (default runs/comm)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def variants(method: str, ablation: bool) -> dict[str, dict]:
    """{variant name: config overrides}."""
    if ablation:
        return {name: {"method": "comm", "term_weights": w} for name, w in ABLATION.items()}
    methods = METHODS if method == "all" else (method,)
    return {m: {"method": m} for m in methods}


def _meets(value: float, rule: tuple[str, float]) -> bool:
    kind, bound = rule
    return value >= bound if kind == ">=" else value <= bound if kind == "<=" else abs(value - 0.5) <= bound


def table(out: Path) -> list[dict]:
    runs: dict[str, dict[int, dict]] = {}
    for path in sorted(out.glob("*/*/seed*/results.json")):
        variant, pairs, seed = path.parts[-4], path.parts[-3], int(path.parts[-2][4:])
        runs.setdefault(variant, {}).setdefault(seed, {})[pairs] = json.loads(path.read_text())["scores"]
    paper = paper_rows()
    rows = []
    for variant, seeds in sorted(runs.items()):
        row = {"variant": variant, "seeds": sorted(seeds)}
        for task, pairs in (("R", "unbiased"), ("U1", "unbiased"), ("U2", "unbiased"), ("U", "unbiased"),
                            ("S", "biased")):
            vals = [s[pairs][task] for s in seeds.values() if pairs in s]
            row[task] = mean_std(vals) if vals else None
        row["paper"] = paper.get(PAPER_NAMES.get(variant, ""))
        rules = TARGETS.get(variant, {})
        row["targets_met"] = {t: _meets(row[t]["mean"], r) for t, r in rules.items() if row.get(t)}
        rows.append(row)
    return rows


def markdown(rows: list[dict]) -> str:
    fmt = lambda st: "—" if st is None else f"{st['mean']:.3f} ± {st['std']:.3f} ({st['n']})"  # noqa: E731
    lines = ["| variant | R | U (mean of U1, U2) | U1 | U2 | S | paper R / U / S | targets met |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        p = r["paper"]
        paper = "—" if p is None else f"{p['R']:.3f} / {p['U']:.3f} / {p['S']:.3f}"
        met = ", ".join(f"{k} {'yes' if v else 'NO'}" for k, v in r["targets_met"].items()) or "—"
        lines.append(f"| {r['variant']} | {fmt(r['R'])} | {fmt(r['U'])} | {fmt(r['U1'])} | {fmt(r['U2'])} | "
                     f"{fmt(r['S'])} | {paper} | {met} |")
    return "\n".join(lines) + "\n"


def main(argv=None, args=None) -> list[dict]:
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
    for name, var in variants(method, args.ablation).items():
        for seed in range(first_seed, first_seed + args.seeds):
            for pairs in ((only_pairs,) if only_pairs else PAIRS):
                cfg = CommConfig(**{**overrides, **var}, pairs=pairs, seed=seed)
                r = train(cfg, out / name / pairs / f"seed{seed}", progress=not args.quiet)
                scores = ", ".join(f"{k} {v:.3f}" for k, v in r["scores"].items() if k in ("R", "U", "S"))
                print(f"{name:20s} {pairs:8s} seed {seed}: {scores} ({r['train_seconds']:.0f} s)", flush=True)
    rows = table(out)
    (out / "comm_trifeatures.json").write_text(json.dumps({"rows": rows, "targets": TARGETS}, indent=1))
    (out / "comm_trifeatures.md").write_text(markdown(rows))
    print("\n" + markdown(rows) + f"wrote {out / 'comm_trifeatures.json'} and {out / 'comm_trifeatures.md'}")
    return rows


if __name__ == "__main__":
    main()
