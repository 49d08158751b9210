"""CPU benchmark of the fused symmetric InfoNCE against naive and chunked PyTorch.

    python benchmarks/bench_loss.py                      # the full grid
    python benchmarks/bench_loss.py --batch-sizes 1024 6144 --dims 5 128   # a subset

In one run: the quiet grid (time, peak extra memory, ratios), this machine's limits (sgemm rate,
vectorised exp rate) with the fused kernel's fraction of them and its time per B^2, and the same
methods beside a busy neighbour process. Prints markdown tables; writes
benchmarks/results/<name>.json and .png.
"""
import argparse
from pathlib import Path

from harness import machine_rates, run_grid, write_outputs

p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
p.add_argument("--batch-sizes", type=int, nargs="+", default=[1024, 6144, 16384, 65536])
p.add_argument("--dims", type=int, nargs="+", default=[5, 128, 512])
p.add_argument("--similarities", nargs="+", default=["cosine", "euclidean"])
p.add_argument("--reps", type=int, default=3, help="timed repetitions after one warm-up")
p.add_argument("--contended-batch-sizes", type=int, nargs="*", default=[4096],
               help="batch sizes measured beside a busy neighbour process (none: skip)")
p.add_argument("--contended-dims", type=int, nargs="*", default=[5, 64, 128],
               help="feature dimensions measured beside a busy neighbour process")
p.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
p.add_argument("--name", default="bench_loss")
args = p.parse_args()

rates = machine_rates()
results = run_grid(args.batch_sizes, args.dims, args.similarities, reps=args.reps)
contended = {"quiet": [], "neighbour": []}
if args.contended_batch_sizes and args.contended_dims:
    for load in contended:  # the same points quiet and loaded, back to back in this run
        contended[load] = run_grid(args.contended_batch_sizes, args.contended_dims, args.similarities,
                                   reps=args.reps, load=load)
json_path, png_path, report = write_outputs(results, args.out, args.name, rates=rates, contended=contended)
print(report)
print(f"\nwrote {json_path} and {png_path}")
