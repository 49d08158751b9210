"""The fused loss quiet and beside a busy neighbour, several builds or settings interleaved.

    python benchmarks/bench_contended_ab.py 64 cosine 3 "PP=/path/to/old/checkout" "PP=$PWD"
    python benchmarks/bench_contended_ab.py 64 cosine 1 "" "GOMP_SPINCOUNT=0"

One BusyNeighbour process (benchmarks/harness.py) lives for the whole run; it is
stopped (SIGSTOP) for the quiet passes and resumed (SIGCONT) for the loaded ones, so every
variant sees the same neighbour. Each variant (comma-separated KEY=VALUE: PP sets PYTHONPATH,
GOMP_* is passed as is) runs, per round, one quiet and one loaded fresh process timing the median
of 5 fused forward+backward passes (B = 4096, 2 threads) in wall and process CPU time.
"""
import json
import os
import signal
import statistics
import subprocess
import sys
import textwrap
import time

from harness import _NEIGHBOUR

BENCH = textwrap.dedent("""
    import json, statistics, sys, time, torch, mmcl_fast as mf
    torch.set_num_threads(2)
    D = int(sys.argv[1]); B = int(sys.argv[2]); sim = sys.argv[3]
    a = torch.randn(B, D, requires_grad=True); b = torch.randn(B, D, requires_grad=True)
    mf.symmetric_infonce(a, b, temperature=0.1, similarity=sim).backward()
    wall, cpu = [], []
    for _ in range(5):
        c = time.process_time(); t = time.perf_counter()
        mf.symmetric_infonce(a, b, temperature=0.1, similarity=sim).backward()
        wall.append(time.perf_counter() - t); cpu.append(time.process_time() - c)
    print(json.dumps([statistics.median(wall), statistics.median(cpu)]))
""")


def variant_env(spec: str) -> dict:
    env = dict(os.environ)
    for kv in filter(None, spec.split(",")):
        key, value = kv.split("=", 1)
        env["PYTHONPATH" if key == "PP" else key] = value
    return env


def main():
    D, sim, rounds, variants = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), sys.argv[4:]
    neighbour = subprocess.Popen([sys.executable, "-c", _NEIGHBOUR, "3000", "2"],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(3)
    neighbour.send_signal(signal.SIGSTOP)
    res = {v: {"quiet": [], "loaded": []} for v in variants}
    try:
        for _ in range(rounds):
            for v in variants:
                for load in ("quiet", "loaded"):
                    if load == "loaded":
                        neighbour.send_signal(signal.SIGCONT)
                        time.sleep(0.5)
                    out = subprocess.run([sys.executable, "-c", BENCH, str(D), "4096", sim],
                                         env=variant_env(v), capture_output=True, text=True)
                    if load == "loaded":
                        neighbour.send_signal(signal.SIGSTOP)
                    if out.returncode:
                        raise RuntimeError(out.stderr[-2000:])
                    res[v][load].append(json.loads(out.stdout.strip().splitlines()[-1]))
    finally:
        neighbour.kill()
    for v in variants:
        q = statistics.median(r[0] for r in res[v]["quiet"])
        ld = statistics.median(r[0] for r in res[v]["loaded"])
        qc = statistics.median(r[1] for r in res[v]["quiet"])
        lc = statistics.median(r[1] for r in res[v]["loaded"])
        runs = [round(r[0], 3) for r in res[v]["loaded"]]
        print(f"{sim} D={D} {v:20s} quiet {q:.3f} (cpu {qc:.3f}) loaded {ld:.3f} (cpu {lc:.3f}) "
              f"ratio {ld / q:.2f}   loaded runs {runs}", flush=True)


if __name__ == "__main__":
    main()
