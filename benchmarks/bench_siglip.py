"""CPU benchmark of the fused sigmoid (SigLIP) loss against open_clip's SigLipLoss formula, its
``torch.compile`` and this project's chunked PyTorch backend.

    python benchmarks/bench_siglip.py                                   # the default grid
    python benchmarks/bench_siglip.py --batch-sizes 4096 --dims 128     # a subset

Workload ``siglip`` of benchmarks/harness.py: normalised features, learnable logit_scale 10 and
logit_bias -10, forward + backward, every point in a fresh process (time = median of the timed
passes, extra peak RSS, float64 error up to B = 8192). open_clip's chunked SigLIP variant is not
measured: open_clip is not installed here (its formula is re-typed in the harness). Prints the
markdown tables, the targets and the fraction of the GEMM roofline (8 B^2 D FLOPs at this run's
sgemm rate); writes benchmarks/results/<name>.json and .png.
"""
import argparse
from pathlib import Path

from harness import machine_rates, run_grid, write_outputs

p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
p.add_argument("--batch-sizes", type=int, nargs="+", default=[4096, 16384])
p.add_argument("--dims", type=int, nargs="+", default=[128, 768])
p.add_argument("--large-batch", type=int, nargs="*", default=[65536],
               help="extra batch sizes for the fused loss alone at the smallest D (the others do not fit)")
p.add_argument("--methods", nargs="+", default=["fused", "chunked", "open_clip", "compiled"])
p.add_argument("--reps", type=int, default=3, help="timed repetitions after one warm-up")
p.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
p.add_argument("--name", default="bench_siglip")
args = p.parse_args()

rates = machine_rates()
results = run_grid(args.batch_sizes, args.dims, ["siglip"], methods=args.methods, reps=args.reps)
if args.large_batch:
    results += run_grid(args.large_batch, [min(args.dims)], ["siglip"], methods=["fused"], reps=args.reps)
json_path, png_path, report = write_outputs(results, args.out, args.name, rates=rates)
print(report)
print(f"\nwrote {json_path} and {png_path}")
