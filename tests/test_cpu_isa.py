"""Run-time ISA dispatch of the CPU kernels (csrc/cpu/isa/): the choice, its overrides, and a
binary that runs on any x86-64. The float64 property tests run on every copy this machine can
execute (tests/test_losses.py, parametrised by conftest.CPU_ISAS)."""
import json
import os
import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import torch

import mmcl_fast as mf

from conftest import CPU_ISAS, REPO, cpu_isa_params, rel_err

compiled = pytest.mark.skipif(CPU_ISAS == [None], reason="needs the compiled extension")
LEVELS = ("default", "avx2", "avx512")


def _cpu_levels():
    """The levels this CPU executes, from /proc/cpuinfo (independently of the extension's cpuid)."""
    try:
        flags = next(line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags"))
    except (OSError, StopIteration):
        return None
    have = set(flags.split(":", 1)[1].split())
    avx2 = {"avx2", "fma", "f16c", "bmi2", "popcnt"} <= have
    avx512 = avx2 and {"avx512f", "avx512bw", "avx512dq", "avx512vl"} <= have
    return list(LEVELS[:1 + avx2 + avx512])


@compiled
def test_runnable_levels_are_what_the_cpu_has_and_the_widest_allowed_is_active():
    expected = _cpu_levels()
    if expected is None:
        pytest.skip("no /proc/cpuinfo")
    info = mf.backend_info()
    assert info["cpu_isas_runnable"] == expected
    torch_level = torch.backends.cpu.get_cpu_capability().lower()  # ATEN_CPU_CAPABILITY included
    cap = LEVELS.index(torch_level) if torch_level in LEVELS else 0
    assert info["cpu_isa"] == expected[min(cap, len(expected) - 1)]


@compiled
def test_aten_cpu_capability_caps_the_level():
    """ATEN_CPU_CAPABILITY (read by torch once per process) lowers the choice, never raises it
    above what the CPU runs. One fresh interpreter per level, started together."""
    code = "import json, mmcl_fast as mf; print(json.dumps(mf.backend_info()['cpu_isa']))"
    runs = {level: subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                    text=True, env={**os.environ, "ATEN_CPU_CAPABILITY": level}, cwd=REPO)
            for level in LEVELS}
    runnable = mf.backend_info()["cpu_isas_runnable"]
    for level, proc in runs.items():
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err[-3000:]
        want = level if level in runnable else runnable[-1]
        assert json.loads(out.strip().splitlines()[-1]) == want, (level, err[-2000:])


@compiled
@cpu_isa_params
@pytest.mark.parametrize("sim", ["dot", "euclidean", "l1"])
def test_every_level_agrees_with_float64_at_tile_edges(cpu_isa, sim):
    """Shapes that leave partial vectors and partial tiles on every level (16-lane AVX-512, 8-lane
    AVX2, scalar): M, N not multiples of the tile sizes, D around the streamed/BLAS switch."""
    g = torch.Generator().manual_seed(3)
    for m, n, d in ((129, 257, 17), (33, 300, 5), (200, 131, 16)):
        x = torch.randn(m, d, generator=g, dtype=torch.float64) * d ** -0.5
        y = torch.randn(n, d, generator=g, dtype=torch.float64) * d ** -0.5
        outs = {}
        for dtype in (torch.float32, torch.float64):
            xs, ys = x.to(dtype).requires_grad_(), y.to(dtype).requires_grad_()
            s = torch.tensor(2.5, dtype=dtype, requires_grad=True)
            row, col = mf.pairwise_lse(xs, ys, s, similarity=sim, compute_col=True)
            w_r = torch.linspace(0.5, 1.5, m, dtype=dtype)
            w_c = torch.linspace(1.5, 0.5, n, dtype=dtype)
            grads = torch.autograd.grad((row * w_r).sum() + (col * w_c).sum(), (xs, ys, s))
            outs[dtype] = (row, col, *grads)
        ref = _naive(x, y, 2.5, sim)
        for got, want in zip(outs[torch.float64][:2], ref):
            assert rel_err(got, want) < 1e-12
        for got, want in zip(outs[torch.float32], outs[torch.float64]):
            assert rel_err(got, want) < 1e-5, (m, n, d, cpu_isa)


def _naive(x, y, s, sim):
    if sim == "dot":
        sims = x @ y.T
    elif sim == "euclidean":
        sims = -torch.cdist(x, y) ** 2
    else:
        sims = -torch.cdist(x, y, p=1)
    logits = s * sims
    return torch.logsumexp(logits, 1), torch.logsumexp(logits, 0)


@compiled
def test_force_cpu_isa_rejects_unknown_and_unrunnable_levels():
    with pytest.raises(ValueError, match="isa must be"):
        mf.force_cpu_isa("avx9")
    with pytest.raises(TypeError, match="isa must be a string"):
        mf.force_cpu_isa(2)
    missing = [lvl for lvl in LEVELS if lvl not in CPU_ISAS]
    for level in missing:
        with pytest.raises(ValueError, match="cannot run|has no"):
            mf.force_cpu_isa(level)
    assert mf.backend_info()["cpu_isa"] == CPU_ISAS[-1]


def _avx_outside_isa_namespaces(shared_object: Path) -> Counter:
    """Functions of ``shared_object`` that execute an instruction beyond the x86-64 baseline (VEX/EVEX
    encoded, AVX-512 mask registers, BMI, LZCNT/POPCNT) without living in an ISA copy's namespace
    (``::AVX2::`` or ``::AVX512::``; zmm registers in ``::AVX512::`` only)."""
    listing = subprocess.run(["objdump", "-d", "-C", "--no-show-raw-insn", str(shared_object)],
                             capture_output=True, text=True, check=True).stdout
    beyond = re.compile(r"^\s*[0-9a-f]+:\s+(v\w+|shlx|shrx|sarx|rorx|andn|bzhi|pdep|pext|lzcnt|tzcnt|popcnt|k\w+)\s")
    found, function = Counter(), None
    for line in listing.splitlines():
        head = re.match(r"^[0-9a-f]+ <(.*)>:$", line)
        if head:
            function = head.group(1)
            continue
        if function is None or not beyond.match(line):
            continue
        in_avx512 = "::AVX512::" in function
        if not (in_avx512 or "::AVX2::" in function) or ("%zmm" in line and not in_avx512):
            found[function] += 1
    return found


@compiled
@pytest.mark.skipif(shutil.which("objdump") is None, reason="objdump not installed")
@pytest.mark.skipif(not re.match(r"x86_64|AMD64", __import__("platform").machine()), reason="x86-64 only")
def test_no_avx_instruction_outside_the_isa_copies():
    """The whole extension runs on a CPU without AVX unless it picks an AVX copy: each copy's code
    (at::vec and the engine) has names of its own, and nothing the copies share (std::, c10::,
    the runtime) was compiled for a wider target and then merged into the other copies."""
    extension = Path(mf.backend_info()["extension"])
    leaks = _avx_outside_isa_namespaces(extension)
    assert not leaks, leaks.most_common(10)


@compiled
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("sim", ["dot", "euclidean", "l1"])
def test_backward_over_several_column_blocks_matches_float64(sim, threads):
    """A wide rectangular problem (N = 2600 columns, D = 512) through the backward's dY partials:
    one thread (no partial for BLAS tiles, one for streamed l1) and two (a partial per extra slot),
    against float64. It caught a partial zeroed only once in a column-blocked version."""
    g = torch.Generator().manual_seed(5)
    m, n, d = 150, 2600, 512
    x = torch.randn(m, d, generator=g, dtype=torch.float64) * d ** -0.5
    y = torch.randn(n, d, generator=g, dtype=torch.float64) * d ** -0.5
    w_r = torch.rand(m, generator=g, dtype=torch.float64) + 0.5
    w_c = torch.rand(n, generator=g, dtype=torch.float64) + 0.5
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        grads = {}
        for dtype in (torch.float32, torch.float64):
            xs, ys = x.to(dtype).requires_grad_(), y.to(dtype).requires_grad_()
            s = torch.tensor(3.0, dtype=dtype, requires_grad=True)
            row, col = mf.pairwise_lse(xs, ys, s, similarity=sim, compute_col=True)
            grads[dtype] = torch.autograd.grad((row * w_r.to(dtype)).sum() + (col * w_c.to(dtype)).sum(), (xs, ys, s))
    finally:
        torch.set_num_threads(before)
    xr, yr = x.clone().requires_grad_(), y.clone().requires_grad_()
    sr = torch.tensor(3.0, dtype=torch.float64, requires_grad=True)
    sims = {"dot": lambda: xr @ yr.T, "euclidean": lambda: -torch.cdist(xr, yr) ** 2,
            "l1": lambda: -torch.cdist(xr, yr, p=1)}[sim]()
    logits = sr * sims
    ref = torch.autograd.grad((torch.logsumexp(logits, 1) * w_r).sum() + (torch.logsumexp(logits, 0) * w_c).sum(),
                              (xr, yr, sr))
    for got, want in zip(grads[torch.float64], ref):
        assert rel_err(got, want) < 1e-10, sim
    for got, want in zip(grads[torch.float32], ref):
        assert rel_err(got, want) < 2e-5, sim
