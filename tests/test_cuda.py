"""The CUDA kernels (csrc/cuda) against the float64 reference.

Every test runs twice: on a GPU when there is one (marked ``cuda``, skipped otherwise), and
always under the host emulator (csrc/cuda/emulation), which runs the same kernel and launcher
source on the CPU with one OS thread per CUDA thread and two thread blocks at a time, so the
inter-block atomics (the column (max, sum) merge) really race. The emulated runs check
correctness only; they say nothing about GPU speed.
"""
import pytest
import torch

import mmcl_fast as mf
from mmcl_fast import KernelOptions
from mmcl_fast import reference as ref

import emulated_cuda
from conftest import rel_err


@pytest.fixture(params=["simt", "tc"])
def path(request):
    """The kernels' math path (the ops' math_path argument): CUDA cores, or tensor cores (WMMA;
    float32 as TF32; l1 runs SIMT either way)."""
    return request.param


SIGLIP_BIAS = -2.0


def siglip_loss(a, b, logit_scale, similarity, kernel_options=None):
    """The sigmoid loss (the softplus reduction of the same kernels) with a fixed bias."""
    return mf.siglip_loss(a, b, logit_scale, SIGLIP_BIAS, similarity=similarity, kernel_options=kernel_options)


def siglip_reference(a, b, logit_scale, similarity):
    return ref.siglip_loss(a, b, logit_scale, SIGLIP_BIAS, similarity=similarity)


LOSSES = [(mf.symmetric_infonce, ref.symmetric_infonce), (mf.infonce, ref.infonce), (mf.nt_xent, ref.nt_xent),
          (siglip_loss, siglip_reference)]
TOL = {torch.float32: 1e-4, torch.bfloat16: 2e-2, torch.float16: 2e-2}
TF32_TOL = 5e-3  # float32 inputs on the tensor cores keep 10 mantissa bits


def _tol(dtype, path):
    return TF32_TOL if dtype == torch.float32 and path == "tc" else TOL[dtype]
# Shapes around the 64-row/column tiles (129: three row and column blocks, one row past the last
# full tile) and the 16/32-wide feature slices of the kernels.
SHAPES = [(1, 1, 1), (63, 65, 5), (64, 64, 130), (65, 65, 1), (129, 129, 5)]


def _inputs(m, n, d, sim, dtype, seed):
    g = torch.Generator().manual_seed(seed)
    spread = {"cosine": 1.0, "dot": d ** -0.5, "euclidean": d ** -0.5, "l1": 1.0 / d}[sim]
    a = (torch.randn(m, d, generator=g, dtype=torch.float64) * spread).to(dtype)
    b = (torch.randn(n, d, generator=g, dtype=torch.float64) * spread).to(dtype)
    return a, b


def _check_losses(device, dtype, sim, a, b, scale=3.0, tol=None, options=None):
    tol = TOL[dtype] if tol is None else tol
    m, n = a.shape[0], b.shape[0]
    for fused, naive in LOSSES:
        if fused is not mf.infonce and m != n:
            continue
        if fused is siglip_loss and options is not None and options.deterministic:
            continue  # the softplus reduction has no column merge: both modes run the same kernels
        a64, b64 = a.double().requires_grad_(), b.double().requires_grad_()
        s64 = torch.tensor(scale, dtype=torch.float64, requires_grad=True)
        ad, bd = a.to(device).requires_grad_(), b.to(device).requires_grad_()
        sd = torch.tensor(scale, device=device, requires_grad=True)
        out = fused(ad, bd, logit_scale=sd, similarity=sim, kernel_options=options)
        want = naive(a64, b64, logit_scale=s64, similarity=sim)
        grads = torch.autograd.grad(out, [ad, bd, sd])
        grads64 = torch.autograd.grad(want, [a64, b64, s64])
        assert grads[0].dtype == dtype and grads[1].dtype == dtype
        assert rel_err(out, want, floor=1.0) < tol, (fused.__name__, "loss")
        for name, gg, g64 in zip(("da", "db", "dscale"), grads, grads64):
            if sim == "cosine" and a.shape[1] == 1 and name != "dscale":
                # unit vectors in 1-D: the input gradient is exactly zero, what is left is rounding
                assert gg.double().norm() < tol, (fused.__name__, name)
                continue
            assert rel_err(gg, g64, floor=1e-2) < tol, (fused.__name__, name)


# l1 has no tensor-core form: its "tc" run would repeat the SIMT one
SIM_PATHS = [(sim, p) for sim in ("cosine", "dot", "euclidean", "l1") for p in ("simt", "tc")
             if (sim, p) != ("l1", "tc")]


DTYPES = [torch.float32, torch.bfloat16, torch.float16]


def _matrix():
    """Every (shape, similarity, math path, dtype) in the default mode, and in the deterministic
    mode with float32 inputs plus the fast slice's half-precision cases: that mode replaces the
    atomic column merge by a second pass of the row kernel over the swapped problem, a kernel that
    every dtype runs in the default mode already. The fast lane runs a slice in which
    every similarity/path pair, shape, dtype and mode appears at least once; the rest is marked
    slow (the full lane)."""
    fast = {(k % 2 == 1, SHAPES[k % len(SHAPES)], sp, DTYPES[k % len(DTYPES)]) for k, sp in enumerate(SIM_PATHS)}
    cases = []
    for det in (False, True):
        for shape in SHAPES:
            for sp in SIM_PATHS:
                for dtype in DTYPES:
                    if det and dtype != torch.float32 and (det, shape, sp, dtype) not in fast:
                        continue
                    marks = () if (det, shape, sp, dtype) in fast else (pytest.mark.slow,)
                    name = f"{det}-{'-'.join(map(str, shape))}-{'-'.join(sp)}-{str(dtype).removeprefix('torch.')}"
                    cases.append(pytest.param(dtype, *sp, *shape, det, marks=marks, id=name))
    return cases


@pytest.mark.parametrize("dtype, sim, math_path, m, n, d, deterministic", _matrix())
def test_cuda_matches_float64_reference(device, dtype, sim, math_path, m, n, d, deterministic):
    a, b = _inputs(m, n, d, sim, dtype, seed=m * 1000 + d)
    _check_losses(device, dtype, sim, a, b, tol=_tol(dtype, math_path),
                  options=KernelOptions(deterministic=deterministic, cuda_math_path=math_path))


@pytest.mark.parametrize("sim, math_path", [
    sp if sp == ("euclidean", "tc") else pytest.param(*sp, marks=pytest.mark.slow)
    for sp in SIM_PATHS if sp[0] != "cosine"])
def test_cuda_rectangular_many_tiles(device, sim, math_path):
    """Three row blocks against five column tiles, with D spanning nine 16-wide slices."""
    a, b = _inputs(130, 257, 130, sim, torch.float32, seed=7)
    _check_losses(device, torch.float32, sim, a, b, tol=_tol(torch.float32, math_path),
                  options=KernelOptions(cuda_math_path=math_path))


def _fwd_bwd_outputs(device, x, y, path):
    """Deterministic forward and backward on math path ``path``, concatenated."""
    s = torch.tensor(4.0, device=device)
    row, col = torch.ops.mmcl_fast.lse_fwd(x, y, s, "dot", False, True, False, True, path)
    dx, dy, ds = torch.ops.mmcl_fast.lse_bwd(torch.full_like(row, 0.3), torch.full_like(col, 0.7), x, y, s, row, col,
                                             "dot", False, [True, True, True], False, path)
    return torch.cat([row, col, dx.float().flatten(), dy.float().flatten(), ds.reshape(1)])


def test_default_math_path_follows_dtype_and_allow_tf32(device):
    """auto: tensor cores for half inputs; float32 on the CUDA cores unless
    torch.backends.cuda.matmul.allow_tf32 is set (then TF32: measurably coarser than SIMT, within
    TF32's tolerance of float64)."""
    g = torch.Generator().manual_seed(11)
    x, y = (torch.nn.functional.normalize(torch.randn(100, 64, generator=g, dtype=torch.float64), dim=1)
            for _ in range(2))
    runs = {}
    for dtype in (torch.float32, torch.float16, torch.bfloat16):
        xd, yd = x.to(device, dtype), y.to(device, dtype)
        for choice in ("simt", "tc", "auto"):
            runs[dtype, choice] = _fwd_bwd_outputs(device, xd, yd, choice)
        previous = torch.backends.cuda.matmul.allow_tf32
        torch.backends.cuda.matmul.allow_tf32 = True
        try:
            runs[dtype, "auto+tf32"] = _fwd_bwd_outputs(device, xd, yd, "auto")
        finally:
            torch.backends.cuda.matmul.allow_tf32 = previous
    for half in (torch.float16, torch.bfloat16):
        assert torch.equal(runs[half, "auto"], runs[half, "tc"])
        assert torch.equal(runs[half, "auto+tf32"], runs[half, "tc"])
    assert torch.equal(runs[torch.float32, "auto"], runs[torch.float32, "simt"])
    assert torch.equal(runs[torch.float32, "auto+tf32"], runs[torch.float32, "tc"])
    xr, yr = x.float().double(), y.float().double()
    logits = 4.0 * xr @ yr.T
    G = 0.3 * torch.softmax(logits, 1) + 0.7 * torch.softmax(logits, 0)
    want = torch.cat([torch.logsumexp(logits, 1), torch.logsumexp(logits, 0), (4.0 * G @ yr).flatten(),
                      (4.0 * G.T @ xr).flatten(), (G * (xr @ yr.T)).sum().reshape(1)])
    assert rel_err(runs[torch.float32, "simt"].cpu(), want) < 1e-5
    assert 1e-6 < rel_err(runs[torch.float32, "tc"].cpu(), want) < TF32_TOL


def test_math_path_setting_is_checked(device):
    x = torch.randn(8, 4, device=device)
    s = torch.tensor(1.0, device=device)
    with pytest.raises(RuntimeError, match="math_path must be 'simt', 'tc' or 'auto', got 'fast'"):
        torch.ops.mmcl_fast.lse_fwd(x, x, s, "dot", False, True, False, False, "fast")
    row, col = torch.ops.mmcl_fast.lse_fwd(x, x, s, "dot", False, True)
    with pytest.raises(RuntimeError, match="math_path must be 'simt', 'tc' or 'auto', got 'TC'"):
        torch.ops.mmcl_fast.lse_bwd(row, col, x, x, s, row, col, "dot", False, [True, True, True], False, "TC")


def test_float16_tensor_core_gradient_keeps_small_g(device):
    """G = g_i softmax_ij is of order 1e-5 / N here, deep in float16's subnormals: the kernels'
    per-row power-of-two scaling of G before the float16 product keeps dX and dY within 5e-3 of
    float64 (float16 G without it: 2.4e-2, simulated in float64)."""
    g = torch.Generator().manual_seed(12)
    x = (torch.randn(70, 40, generator=g, dtype=torch.float64) * 0.3).half().double()
    y = (torch.randn(300, 40, generator=g, dtype=torch.float64) * 0.3).half().double()
    s = torch.tensor(4.0, dtype=torch.float64)
    gr, gc = torch.full((70,), 1e-5, dtype=torch.float64), torch.full((300,), 3e-6, dtype=torch.float64)
    xh, yh, sf = x.to(device, torch.float16), y.to(device, torch.float16), s.float().to(device)
    row, col = torch.ops.mmcl_fast.lse_fwd(xh, yh, sf, "dot", False, True, False, False, "tc")
    dx, dy, _ = torch.ops.mmcl_fast.lse_bwd(gr.float().to(device), gc.float().to(device), xh, yh, sf, row, col,
                                            "dot", False, [True, True, False], False, "tc")
    logits = s * x @ y.T
    G = gr[:, None] * torch.softmax(logits, 1) + gc[None, :] * torch.softmax(logits, 0)
    assert rel_err(dx.cpu(), s * G @ y) < 5e-3
    assert rel_err(dy.cpu(), s * G.T @ x) < 5e-3


def test_half_precision_backward_takes_float32_lse(device):
    """lse_bwd on float16 inputs receives the float32 LSEs and gradients that lse_fwd returned."""
    x = torch.randn(70, 8, dtype=torch.float16, device=device)
    y = torch.randn(70, 8, dtype=torch.float16, device=device)
    s = torch.tensor(2.0, device=device)
    row, col = torch.ops.mmcl_fast.lse_fwd(x, y, s, "dot", False, True)
    assert row.dtype == col.dtype == torch.float32
    dx, dy, ds = torch.ops.mmcl_fast.lse_bwd(torch.ones_like(row), torch.ones_like(col), x, y, s, row, col,
                                             "dot", False, [True, True, True])
    assert dx.dtype == dy.dtype == torch.float16 and ds.dtype == torch.float32
    logits = 2.0 * x.double() @ y.double().T
    g = torch.softmax(logits, 1) + torch.softmax(logits, 0)
    assert rel_err(dx, 2.0 * g @ y.double(), floor=1e-3) < 2e-3


def test_cuda_kernels_refuse_float64(device):
    x = torch.randn(4, 3, dtype=torch.float64, device=device)
    op = torch.ops.mmcl_fast_emu.lse_fwd if device == "cpu" else torch.ops.mmcl_fast.lse_fwd
    with pytest.raises(RuntimeError, match="float32, float16 and bfloat16"):
        op(x, x, torch.tensor(1.0), "dot", False, True)


def test_deterministic_mode_is_bitwise_reproducible(device):
    n = 3000 if device == "cuda" else 300
    g = torch.Generator().manual_seed(3)
    a = torch.randn(n, 96, generator=g).to(device).requires_grad_()
    b = torch.randn(n, 96, generator=g).to(device)
    runs = []
    for _ in range(2):
        loss = mf.symmetric_infonce(a, b, logit_scale=torch.tensor(100.0, device=device),
                                    kernel_options=KernelOptions(deterministic=True))
        (grad,) = torch.autograd.grad(loss, a)
        runs.append((loss, grad))
    assert torch.equal(runs[0][0], runs[1][0]) and torch.equal(runs[0][1], runs[1][1])


def test_atomic_column_merge_matches_second_pass(device):
    """The column LSE from the 64-bit CAS merge of per-block (max, sum) pairs (blocks racing)
    agrees with the deterministic second pass."""
    n = 4096 if device == "cuda" else 450
    g = torch.Generator().manual_seed(5)
    x = torch.nn.functional.normalize(torch.randn(n, 24, generator=g), dim=1).to(device)
    y = torch.nn.functional.normalize(torch.randn(n, 24, generator=g), dim=1).to(device)
    s = torch.tensor(50.0, device=device)
    _, col_atomic = mf.pairwise_lse(x, y, s, kernel_options=KernelOptions(deterministic=False))
    _, col_pass = mf.pairwise_lse(x, y, s, kernel_options=KernelOptions(deterministic=True))
    assert rel_err(col_atomic, col_pass) < 1e-6


def test_logit_scale_100_column_merge_is_exact(device):
    n = 4096 if device == "cuda" else 520
    g = torch.Generator().manual_seed(0)
    x = torch.nn.functional.normalize(torch.randn(n, 32, generator=g, dtype=torch.float64), dim=1)
    y = torch.nn.functional.normalize(torch.randn(n, 32, generator=g, dtype=torch.float64), dim=1)
    row, col = mf.pairwise_lse(x.float().to(device), y.float().to(device), torch.tensor(100.0, device=device))
    logits = 100.0 * x @ y.T
    assert torch.isfinite(col).all()
    assert rel_err(col.cpu(), torch.logsumexp(logits, 0)) < 1e-5
    assert rel_err(row.cpu(), torch.logsumexp(logits, 1)) < 1e-5


@pytest.mark.parametrize("similarity, dtype", [
    (sim, dtype) if (sim, dtype) in {("euclidean", torch.float32), ("dot", torch.bfloat16), ("l1", torch.float16)}
    else pytest.param(sim, dtype, marks=pytest.mark.slow)
    for sim in ("dot", "euclidean", "l1") for dtype in (torch.float32, torch.float16, torch.bfloat16)])
def test_opcheck_on_the_cuda_implementation(device, path, similarity, dtype):
    """torch.library.opcheck (schema, fake kernel, autograd registration, AOT dispatch) with the
    CUDA implementation behind both ops."""
    g = torch.Generator().manual_seed(4)
    x = torch.randn(7, 5, generator=g).to(device, dtype).requires_grad_()
    y = torch.randn(9, 5, generator=g).to(device, dtype).requires_grad_()
    s = torch.tensor(0.8, device=device, requires_grad=True)
    fwd, bwd = torch.ops.mmcl_fast.lse_fwd.default, torch.ops.mmcl_fast.lse_bwd.default
    torch.library.opcheck(fwd, (x, y, s, similarity, False, True, False, True, path))
    torch.library.opcheck(fwd, (x[:7], y[:7], s, similarity, True, False, False, False, path))
    row, col = fwd(x.detach(), y.detach(), s.detach(), similarity, False, True, False, False, path)
    for mask in ([True, True, True], [False, True, False]):
        torch.library.opcheck(bwd, (torch.rand_like(row), torch.rand_like(col), x.detach(), y.detach(), s.detach(),
                                    row, col, similarity, False, mask, False, path))


@pytest.mark.parametrize("sim", ["dot", "euclidean", pytest.param("l1", marks=pytest.mark.slow)])
def test_sigmoid_loss_bias_and_scale_gradients_over_many_tiles(device, path, sim):
    """Three row blocks against three column tiles: the softplus reduction's dscale and dbias
    (per-block partials summed in block order) and both feature gradients against float64."""
    a, b = _inputs(130, 130, 40, sim, torch.float32, seed=21)
    args64 = [a.double().requires_grad_(), b.double().requires_grad_(),
              torch.tensor(6.0, dtype=torch.float64, requires_grad=True),
              torch.tensor(-3.0, dtype=torch.float64, requires_grad=True)]
    args = [a.to(device).requires_grad_(), b.to(device).requires_grad_(),
            torch.tensor(6.0, device=device, requires_grad=True), torch.tensor(-3.0, device=device, requires_grad=True)]
    out = mf.siglip_loss(*args, similarity=sim, kernel_options=KernelOptions(cuda_math_path=path))
    want = ref.siglip_loss(*args64, similarity=sim)
    tol = _tol(torch.float32, path)
    assert rel_err(out, want) < tol
    for name, g, g64 in zip(("da", "db", "dscale", "dbias"), torch.autograd.grad(out, args),
                            torch.autograd.grad(want, args64)):
        assert rel_err(g, g64, floor=1e-2) < tol, name


@pytest.mark.parametrize("dtype", [torch.float32, pytest.param(torch.bfloat16, marks=pytest.mark.slow)])
def test_opcheck_of_the_softplus_pair_on_the_cuda_implementation(device, path, dtype):
    g = torch.Generator().manual_seed(8)
    x = torch.randn(7, 5, generator=g).to(device, dtype).requires_grad_()
    y = torch.randn(9, 5, generator=g).to(device, dtype).requires_grad_()
    s = torch.tensor(0.8, device=device, requires_grad=True)
    t = torch.tensor(-1.5, device=device, requires_grad=True)
    fwd, bwd = torch.ops.mmcl_fast.softplus_fwd.default, torch.ops.mmcl_fast.softplus_bwd.default
    torch.library.opcheck(fwd, (x, y, s, t, "dot", False, False, path))
    torch.library.opcheck(fwd, (x[:7], y[:7], s, t, "euclidean", True, False, path))
    for mask in ([True, True, True, True], [False, True, False, True]):
        torch.library.opcheck(bwd, (torch.rand(7, device=device), x.detach(), y.detach(), s.detach(), t.detach(),
                                    "dot", True, mask, False, path))


# --- the emulator's own conversions (no GPU needed) ---

def test_emulated_half_to_float_is_exact_for_every_bit_pattern():
    emulated_cuda.load()  # registers torch.ops.mmcl_fast_emu
    bits = torch.arange(-32768, 32768, dtype=torch.int32).to(torch.int16)
    for bf16, dtype in ((False, torch.float16), (True, torch.bfloat16)):
        want = bits.view(dtype).float()
        got = torch.ops.mmcl_fast_emu.from_half_bits(bits, bf16)
        finite = ~torch.isnan(want)
        assert torch.equal(got[finite], want[finite])
        assert torch.isnan(got[~finite]).all()


def test_emulated_float_to_half_rounds_to_nearest_even():
    emulated_cuda.load()  # registers torch.ops.mmcl_fast_emu
    g = torch.Generator().manual_seed(1)
    # random floats across the half range (normal, subnormal, overflow), the exact midpoints
    # between neighbouring halves (ties), and the boundaries
    wide = torch.randn(200_000, generator=g) * torch.exp2(torch.randint(-30, 20, (200_000,), generator=g).float())
    halves = torch.arange(0, 0x7c00, dtype=torch.int32).to(torch.int16).view(torch.float16).float()
    ties = ((halves[:-1].double() + halves[1:].double()) / 2).float()
    edges = torch.tensor([0.0, -0.0, 65504.0, 65519.99, 65520.0, 1e9, 2.0 ** -24, 2.0 ** -25, 2.0 ** -26,
                          float("inf"), float("-inf")])
    values = torch.cat([wide, ties, -ties, edges])
    for bf16, dtype in ((False, torch.float16), (True, torch.bfloat16)):
        assert torch.equal(torch.ops.mmcl_fast_emu.to_half_bits(values, bf16), values.to(dtype).view(torch.int16))


# --- host synchronisation (the checks option, mmcl_fast/options.py) ---

def _profiled_ops(fn):
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        fn()
    return {e.name for e in prof.events()}


def _fwd_bwd(x, y, s, checks, deterministic):
    row, col = torch.ops.mmcl_fast.lse_fwd(x, y, s, "euclidean", True, True, checks, deterministic)
    torch.ops.mmcl_fast.lse_bwd(torch.ones_like(row), torch.ones_like(col), x, y, s, row, col, "euclidean", True,
                                [True, True, True], checks)


SYNC_OPS = {"aten::item", "aten::_local_scalar_dense"}


@pytest.mark.parametrize("deterministic", [False, True])
def test_cuda_launcher_does_not_sync_by_default_and_checks_on_request(device, deterministic):
    """Without checks the CUDA forward and backward read no tensor data on the host (no .item()
    anywhere in the call tree, so the calls can be captured in a CUDA graph); with checks=True, a
    NaN input and a negative scale are refused."""
    g = torch.Generator().manual_seed(2)
    x, y = (torch.randn(70, 6, generator=g).to(device) for _ in range(2))
    s = torch.tensor(2.0, device=device)
    assert not SYNC_OPS & _profiled_ops(lambda: _fwd_bwd(x, y, s, False, deterministic))
    nan_x = x.clone()
    nan_x[3, 1] = float("nan")
    row, col = torch.ops.mmcl_fast.lse_fwd(nan_x, y, s, "dot", False, True)
    assert torch.isnan(row[3]) and torch.isfinite(row[:3]).all()  # propagates, as in PyTorch
    assert torch.isnan(col).all()  # every column sums over row 3
    assert SYNC_OPS & _profiled_ops(lambda: _fwd_bwd(x, y, s, True, deterministic))
    with pytest.raises(RuntimeError, match="x contains NaN or Inf"):
        torch.ops.mmcl_fast.lse_fwd(nan_x, y, s, "dot", False, True, True)
    with pytest.raises(RuntimeError, match="must be positive and finite"):
        torch.ops.mmcl_fast.lse_fwd(x, y, -s, "dot", False, True, True)
    # the public entry point passes the option down: checks=True refuses the NaN input, the default propagates it
    with pytest.raises(RuntimeError, match="x contains NaN or Inf"):
        mf.pairwise_lse(nan_x, y, s, kernel_options=KernelOptions(checks=True))
    assert torch.isnan(mf.pairwise_lse(nan_x, y, s)[0][3])
