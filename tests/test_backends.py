"""torch.compile, memory footprint, and the JIT / pure-PyTorch fallback backends."""

import pytest
import torch

import mmcl_fast as mf
from mmcl_fast import reference as ref

from conftest import REPO, rel_err, run_python, without_editable_finder


def test_backend_info_reports_compiled():
    info = mf.backend_info()
    assert info["backend"] == "compiled", info
    assert info["cpu_blas"] is not None


def test_torch_compile_fullgraph_matches_eager():
    """Dynamo and AOTAutograd (fake kernels, the registered autograd, functionalisation) trace
    both losses without a graph break; aot_eager skips inductor's C++ code generation, which
    tests/test_modules.py's compiled training step and tests/test_labels.py run."""
    torch._dynamo.reset()
    g = torch.Generator().manual_seed(0)
    a = torch.randn(96, 16, generator=g, requires_grad=True)
    b = torch.randn(96, 16, generator=g, requires_grad=True)
    log_scale = torch.tensor(2.0, requires_grad=True)

    def step(x, y, t):
        return mf.symmetric_infonce(x @ torch.eye(16), y, logit_scale=t.exp()) + 0.1 * mf.nt_xent(x, y, temperature=0.5)

    compiled = torch.compile(step, fullgraph=True, backend="aot_eager")
    out_c = compiled(a, b, log_scale)
    grads_c = torch.autograd.grad(out_c, [a, b, log_scale])
    out_e = step(a, b, log_scale)
    grads_e = torch.autograd.grad(out_e, [a, b, log_scale])
    assert rel_err(out_c, out_e) < 1e-6
    for gc, ge in zip(grads_c, grads_e):
        assert rel_err(gc, ge) < 1e-5


@pytest.mark.slow
def test_peak_memory_far_below_logits_matrix():
    """Forward + backward at B=16384, D=64: extra peak RSS vs. the B*B*4 = 1 GiB of logits."""
    res = run_python("""
        import json, resource, torch, mmcl_fast as mf
        torch.manual_seed(0)
        B, D = 16384, 64
        a = torch.randn(B, D, requires_grad=True); b = torch.randn(B, D, requires_grad=True)
        mf.symmetric_infonce(a[:64], b[:64], temperature=0.1).backward()   # load everything once
        a.grad = b.grad = None
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        mf.symmetric_infonce(a, b, temperature=0.1).backward()
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        print(json.dumps({"extra": peak - base, "finite": bool(torch.isfinite(a.grad).all())}))
    """)
    logits_bytes = 16384 * 16384 * 4
    assert res["finite"]
    # inputs + grads are 4 x 4 MiB; allow them plus the per-thread tiles, nowhere near 1 GiB.
    assert res["extra"] < logits_bytes / 20, res


@pytest.mark.slow
@pytest.mark.parametrize("dim", [512, 1024])
def test_backward_scratch_is_a_tenth_of_the_logits_matrix(dim):
    """The scratch of a symmetric InfoNCE forward + backward at B = 4096 (the extra peak resident
    memory minus the two input gradients it must return) stays under 1/10 of the B x B float32
    logits (6.4 MiB), with the default two threads: the dY partial of the second worker covers a
    panel of columns, not all N. Pre-normalised features and "dot", so no normalised copies.
    glibc returns freed blocks above 64 KiB at once (mallopt), so the peak is that of live memory."""
    res = run_python(f"""
        import ctypes, json, torch, torch.nn.functional as F, mmcl_fast as mf
        ctypes.CDLL("libc.so.6").mallopt(-3, 65536)          # M_MMAP_THRESHOLD
        torch.set_num_threads(2)
        def status(field):
            with open("/proc/self/status") as f:
                return next(int(l.split()[1]) * 1024 for l in f if l.startswith(field))
        g = torch.Generator().manual_seed(0)
        a = F.normalize(torch.randn(4096, {dim}, generator=g), dim=1).requires_grad_()
        b = F.normalize(torch.randn(4096, {dim}, generator=g), dim=1).requires_grad_()
        peaks = []
        for _ in range(2):                                    # the first call loads everything
            a.grad = b.grad = None
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
            base = status("VmRSS:")
            mf.symmetric_infonce(a, b, temperature=0.1, similarity="dot").backward()
            peaks.append(status("VmHWM:") - base)
        print(json.dumps({{"extra": peaks[-1], "grads": 2 * a.numel() * 4}}))
    """)
    scratch, limit = res["extra"] - res["grads"], 4096 * 4096 * 4 / 10
    assert scratch < limit, (scratch / 2**20, limit / 2**20)


def test_python_fallback_matches_compiled():
    res = run_python("""
        import json, warnings, torch
        import mmcl_fast as mf
        torch.manual_seed(1)
        a = torch.randn(50, 6, dtype=torch.float64, requires_grad=True); b = torch.randn(50, 6, dtype=torch.float64)
        out = {"backend": mf.backend_info()["backend"]}
        for sim in ("cosine", "euclidean", "l1"):
            loss = (mf.symmetric_infonce(a, b, temperature=0.3, similarity=sim)
                    + mf.nt_xent(a, b, temperature=0.3, similarity=sim)
                    + mf.siglip_loss(a, b, 2.0, -1.0, similarity=sim)
                    + mf.siglip_loss(a, b, 2.0, -1.0, similarity=sim, reduction="none").mean())
            (g,) = torch.autograd.grad(loss, a)
            out[sim] = [loss.item(), g.flatten().tolist()]
        print(json.dumps(out))
    """, env={"MMCL_FAST_BACKEND": "python"})
    assert res.pop("backend") == "python"
    torch.manual_seed(1)
    a = torch.randn(50, 6, dtype=torch.float64, requires_grad=True)
    b = torch.randn(50, 6, dtype=torch.float64)
    for sim, (loss, grad) in res.items():
        want = (ref.symmetric_infonce(a, b, temperature=0.3, similarity=sim)
                + ref.nt_xent(a, b, temperature=0.3, similarity=sim)
                + 2 * ref.siglip_loss(a, b, 2.0, -1.0, similarity=sim))
        (gw,) = torch.autograd.grad(want, a)
        assert abs(loss - want.item()) < 1e-10 * abs(want.item())
        assert rel_err(torch.tensor(grad, dtype=torch.float64), gw.flatten()) < 1e-10


def test_fallback_warns_once_when_the_extension_is_missing(tmp_path):
    # A copy of the Python package without _C and without sources: the only option left is the
    # chunked fallback, which must say so.
    pkg = tmp_path / "mmcl_fast"
    pkg.mkdir()
    for f in (REPO / "mmcl_fast").glob("*.py"):
        (pkg / f.name).write_text(f.read_text())
    res = run_python(without_editable_finder("""
        import json, warnings, torch
        import mmcl_fast as mf
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter("always")
            backend = mf.backend_info()["backend"]
            mf.symmetric_infonce(torch.randn(4, 3), torch.randn(4, 3), temperature=1.0)
        print(json.dumps({"backend": backend, "warnings": [str(x.message) for x in w]}))
    """), cwd=tmp_path, env={"PYTHONPATH": str(tmp_path)})
    assert res["backend"] == "python"
    assert len([m for m in res["warnings"] if "fallback" in m]) == 1
