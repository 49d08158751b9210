"""CPU benchmark of the fused symmetric InfoNCE against naive and chunked PyTorch.

    python benchmarks/bench_loss.py                      # the full grid of the README/RESULTS.md
    python benchmarks/bench_loss.py --batch-sizes 1024 6144 --dims 5 128   # a subset

Prints a markdown table and the target ratios; writes benchmarks/results/bench_loss.json and .png.
"""
import argparse
from pathlib import Path

from mmcl_fast.benchmark import run_grid, write_outputs

p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
p.add_argument("--batch-sizes", type=int, nargs="+", default=[1024, 6144, 16384, 65536])
p.add_argument("--dims", type=int, nargs="+", default=[5, 128, 512])
p.add_argument("--similarities", nargs="+", default=["cosine", "euclidean"])
p.add_argument("--reps", type=int, default=3, help="timed repetitions after one warm-up")
p.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
p.add_argument("--name", default="bench_loss")
args = p.parse_args()

results = run_grid(args.batch_sizes, args.dims, args.similarities, reps=args.reps)
json_path, png_path, report = write_outputs(results, args.out, args.name)
print(report)
print(f"\nwrote {json_path} and {png_path}")
