#!/usr/bin/env bash
# Everything to check on a machine with a CUDA GPU, in one command (about 10 minutes at most):
#
#   bash benchmarks/gpu_validate.sh [OUT_DIR]        # default: benchmarks/results/gpu
#
#   1. build   the extension with the machine's CUDA torch for its own GPU architecture
#              (pip install --no-build-isolation --no-deps -e .; no download needed);
#   2. tests   tests/test_cuda.py on the GPU (and under the emulator), both math paths (SIMT and
#              tensor cores), + the op conventions;
#   3. sanitizers  compute-sanitizer memcheck, racecheck and synccheck on a small forward +
#              backward of every kernel variant (benchmarks/cuda_sanitizer_case.py);
#   4. bench   benchmarks/bench_cuda.py: the fused loss on both paths (fused_simt, fused_tc, with
#              TFLOP/s and the fraction of the dense peak) vs eager PyTorch (open_clip's formulation),
#              torch.compile of it, and Inf-CL when importable.
# Each step writes OUT_DIR/<step>.log; OUT_DIR/gpu_validate.json holds every step's status and
# time, the device, and the benchmark rows. Later steps run even when an earlier one fails (except
# after a failed build). Exit status: 0 when every step passed.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-benchmarks/results/gpu}
mkdir -p "$OUT"
PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1
STATUS_FILE="$OUT/steps.tsv"
: > "$STATUS_FILE"

step() {  # step NAME TIMEOUT_S COMMAND...
  local name=$1 limit=$2; shift 2
  local start=$SECONDS
  echo "== $name: $*"
  timeout "$limit" "$@" > "$OUT/$name.log" 2>&1
  local rc=$?
  printf '%s\t%s\t%s\n' "$name" "$rc" "$((SECONDS - start))" >> "$STATUS_FILE"
  echo "   $name: exit $rc after $((SECONDS - start)) s (log: $OUT/$name.log)"
  tail -n 5 "$OUT/$name.log"
  return $rc
}

ARCH=$($PY -c "import torch; print('%d.%d' % torch.cuda.get_device_capability())") || { echo "no CUDA device visible to torch"; exit 1; }
export TORCH_CUDA_ARCH_LIST=$ARCH MAX_JOBS=${MAX_JOBS:-$(nproc)}
if step build 300 $PY -m pip install --no-build-isolation --no-deps -e .; then
  step backend 60 $PY -c "import json, mmcl_fast as mf; info = mf.backend_info(); print(json.dumps(info)); assert info['cuda_kernels_compiled']"
  step tests 240 $PY -m pytest -q -p no:cacheprovider -m "cuda or not slow" tests/test_cuda.py tests/test_op_conventions.py
  SAN=$(command -v compute-sanitizer || echo /usr/local/cuda/bin/compute-sanitizer)
  for tool in memcheck racecheck synccheck; do
    step "sanitizer_$tool" 120 "$SAN" --tool "$tool" --error-exitcode 3 $PY benchmarks/cuda_sanitizer_case.py
  done
  step bench 280 $PY benchmarks/bench_cuda.py --batch-sizes 4096 16384 65536 --dims 128 768 \
    --out "$OUT/bench_cuda.json"
fi

$PY - "$OUT" <<'PY'
import json, sys
from pathlib import Path
import torch
out = Path(sys.argv[1])
steps = [dict(zip(("step", "exit", "seconds"), line.split("\t"))) for line in (out / "steps.tsv").read_text().splitlines()]
for s in steps:
    s["exit"], s["seconds"] = int(s["exit"]), int(s["seconds"])
bench = out / "bench_cuda.json"
summary = {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "cuda": torch.version.cuda,
           "steps": steps, "passed": all(s["exit"] == 0 for s in steps) and len(steps) >= 7,
           "bench": json.loads(bench.read_text())["results"] if bench.exists() else None}
(out / "gpu_validate.json").write_text(json.dumps(summary, indent=1))
print(f"\n{summary['device']}  torch {summary['torch']}  CUDA {summary['cuda']}")
for s in steps:
    print(f"  {s['step']:22s} exit {s['exit']:3d}  {s['seconds']:4d} s")
print("ALL PASSED" if summary["passed"] else "SOME STEPS FAILED", f"-> {out / 'gpu_validate.json'}")
sys.exit(0 if summary["passed"] else 1)
PY
