"""A paper estimate, not a measurement: the distributed CLIP loss's memory per rank and whether the
ring's transfers hide behind its tile passes, for W = 8 ... 128 GPUs, local batch b = 8k ... 128k,
D = 768, bfloat16 features.

    python benchmarks/ring_estimate.py [--rate-tflops 400] [--link-gbps 50]

Memory per rank of the loss's exchange (what each mode adds beside the rank's own features):

* gather: the all-gathered features B_g * D * 2 bytes, their gradient B_g * D * 2 (reduce-scattered),
  the all-gathered column partials and their gradient 2 * W * B_g * 4 (B_g = W * b);
* ring: a chunk in flight each way 2 * b * D * 2, a float32 gradient accumulator each way
  2 * b * D * 4, and the block's dY b * D * 2 (the O(b) statistics are negligible).

Time per ring step (the tile pass must cover the transfer it hides): forward 2 b^2 D FLOPs against
one chunk b * D * 2 bytes; backward 4 b^2 D FLOPs against a chunk plus a float32 accumulator
b * D * 6 bytes. The rate and the link bandwidth are assumptions (defaults: 400 TFLOP/s, about
40 % of an H200's dense bfloat16 peak, for the fused tile pass; 50 GB/s per GPU, one 400 Gb/s
InfiniBand NIC per GPU: the slowest hop of a ring that leaves the node). Writes
benchmarks/results/ring_estimate.json.
"""
import argparse
import json
from pathlib import Path

GIB = 2**30


def estimate(world: int, b: int, d: int, rate: float, link: float) -> dict:
    bg = world * b
    gather = bg * d * 2 + bg * d * 2 + 2 * world * bg * 4
    ring = 2 * b * d * 2 + 2 * b * d * 4 + b * d * 2
    fwd_compute, fwd_transfer = 2 * b * b * d / rate, b * d * 2 / link
    bwd_compute, bwd_transfer = 4 * b * b * d / rate, b * d * 6 / link
    return {"world": world, "local_batch": b, "global_batch": bg, "dim": d, "gather_gib": gather / GIB,
            "ring_gib": ring / GIB, "fwd_compute_ms": 1e3 * fwd_compute, "fwd_transfer_ms": 1e3 * fwd_transfer,
            "bwd_compute_ms": 1e3 * bwd_compute, "bwd_transfer_ms": 1e3 * bwd_transfer,
            "hidden": fwd_transfer <= fwd_compute and bwd_transfer <= bwd_compute}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rate-tflops", type=float, default=400.0)
    p.add_argument("--link-gbps", type=float, default=50.0, help="GB/s per GPU on the ring's slowest hop")
    p.add_argument("--dim", type=int, default=768)
    p.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results" / "ring_estimate.json")
    args = p.parse_args()
    rows = [estimate(w, b, args.dim, args.rate_tflops * 1e12, args.link_gbps * 1e9)
            for w in (8, 32, 128) for b in (8192, 32768, 131072)]
    print("| W | b | B_g | gather GiB/rank | ring GiB/rank | fwd step: compute / transfer ms "
          "| bwd step: compute / transfer ms | transfer hidden |")
    print("|" + "---|" * 8)
    for r in rows:
        print(f"| {r['world']} | {r['local_batch']} | {r['global_batch']:,} | {r['gather_gib']:.2f} | "
              f"{r['ring_gib']:.3f} | {r['fwd_compute_ms']:.2f} / {r['fwd_transfer_ms']:.2f} | "
              f"{r['bwd_compute_ms']:.2f} / {r['bwd_transfer_ms']:.2f} | {'yes' if r['hidden'] else 'no'} |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"kind": "estimate (formulas in the script's docstring), not a measurement",
                                    "rate_tflops": args.rate_tflops, "link_gbps": args.link_gbps, "rows": rows},
                                   indent=1))


if __name__ == "__main__":
    main()
