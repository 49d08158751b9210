"""The operator layer: loads the compiled extension and registers fake kernels and autograd.

Two ops live in the ``mmcl_fast`` namespace (schema in ``csrc/ops.cpp``):

* ``lse_fwd(x, y, scale, similarity, mask_diag, compute_col) -> (row_lse, col_lse)``
* ``lse_bwd(grad_row, grad_col, x, y, scale, row_lse, col_lse, similarity, mask_diag)
  -> (dx, dy, dscale)``

Backends, in order of preference (``MMCL_FAST_BACKEND`` = auto | compiled | jit | python):

1. ``compiled``: ``mmcl_fast._C`` built by ``pip install --no-build-isolation .``;
2. ``jit``: the same C++ sources compiled on first use with ``torch.utils.cpp_extension.load``;
3. ``python``: the chunked pure-PyTorch pair of ``mmcl_fast.chunked`` registered under the same
   op names (one warning says so). Fake kernels, autograd and ``torch.compile`` behave the same.
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path

import torch
from torch import Tensor

from . import chunked

_SRC = Path(__file__).resolve().parent.parent / "csrc"
_state: dict = {"backend": None, "module": None, "error": None}
_LOW_PRECISION = (torch.float16, torch.bfloat16)
_FWD_SCHEMA = ("lse_fwd(Tensor x, Tensor y, Tensor scale, str similarity, bool mask_diag, "
               "bool compute_col) -> (Tensor, Tensor)")
_BWD_SCHEMA = ("lse_bwd(Tensor grad_row, Tensor grad_col, Tensor x, Tensor y, Tensor scale, "
               "Tensor row_lse, Tensor col_lse, str similarity, bool mask_diag) "
               "-> (Tensor, Tensor, Tensor)")


def _load_compiled():
    from . import _C  # noqa: F401  (importing registers the TORCH_LIBRARY ops)
    return _C


def _load_jit():
    from torch.utils.cpp_extension import load

    from ._build_flags import cpu_compile_flags

    sources = [_SRC / "ops.cpp", _SRC / "python_module.cpp", *sorted((_SRC / "cpu").glob("*.cpp"))]
    if not all(p.exists() for p in sources):
        raise FileNotFoundError(f"C++ sources not found under {_SRC}")
    flags = cpu_compile_flags()
    return load(name="mmcl_fast_jit", sources=[str(p) for p in sources],
                extra_cflags=["-O3", *flags],
                extra_include_paths=[str(_SRC)], verbose=False)


def _register_python_fallback():
    lib = torch.library.Library("mmcl_fast", "DEF")
    lib.define(_FWD_SCHEMA)
    lib.define(_BWD_SCHEMA)
    lib.impl("lse_fwd", chunked.lse_fwd, "CompositeExplicitAutograd")
    lib.impl("lse_bwd", chunked.lse_bwd, "CompositeExplicitAutograd")
    _state["library"] = lib  # keep the registration alive


def _load_backend() -> None:
    choice = os.environ.get("MMCL_FAST_BACKEND", "auto")
    errors = []
    for name, loader in (("compiled", _load_compiled), ("jit", _load_jit)):
        if choice not in ("auto", name):
            continue
        try:
            _state["module"] = loader()
            _state["backend"] = name
            return
        except Exception as exc:  # noqa: BLE001 - any failure means "try the next backend"
            errors.append(f"{name}: {type(exc).__name__}: {exc}")
    _register_python_fallback()
    _state["backend"] = "python"
    _state["error"] = "; ".join(errors)
    if choice != "python":
        warnings.warn("mmcl_fast: the compiled extension is unavailable, using the pure-PyTorch "
                      f"chunked fallback (slower). Reasons: {_state['error']}", RuntimeWarning,
                      stacklevel=3)


def has_cuda_kernels() -> bool:
    """True when the active backend has the compiled CUDA kernels."""
    return bool(getattr(_state["module"], "with_cuda", False))


def lse_dtype(dtype: torch.dtype) -> torch.dtype:
    """dtype of the LSE outputs: float32 for half/bfloat16 inputs, else the input dtype."""
    return torch.float32 if dtype in _LOW_PRECISION else dtype


def _register_fake_and_autograd() -> None:
    @torch.library.register_fake("mmcl_fast::lse_fwd")
    def _fwd_fake(x, y, scale, similarity, mask_diag, compute_col):
        dt = lse_dtype(x.dtype)
        return (x.new_empty((x.shape[0],), dtype=dt),
                x.new_empty((y.shape[0] if compute_col else 0,), dtype=dt))

    @torch.library.register_fake("mmcl_fast::lse_bwd")
    def _bwd_fake(grad_row, grad_col, x, y, scale, row_lse, col_lse, similarity, mask_diag):
        return torch.empty_like(x), torch.empty_like(y), torch.empty_like(scale)

    def setup_context(ctx, inputs, output):
        x, y, scale, similarity, mask_diag, _ = inputs
        ctx.save_for_backward(x, y, scale, *output)
        ctx.similarity, ctx.mask_diag = similarity, mask_diag

    def backward(ctx, grad_row, grad_col):
        x, y, scale, row_lse, col_lse = ctx.saved_tensors
        if grad_row is None:
            grad_row = torch.zeros_like(row_lse)
        if grad_col is None or col_lse.numel() == 0:
            grad_col = row_lse.new_empty(0)
        dx, dy, dscale = torch.ops.mmcl_fast.lse_bwd(
            grad_row.contiguous(), grad_col.contiguous(), x, y, scale, row_lse, col_lse,
            ctx.similarity, ctx.mask_diag)
        return dx, dy, dscale, None, None, None

    torch.library.register_autograd("mmcl_fast::lse_fwd", backward, setup_context=setup_context)


_load_backend()
_register_fake_and_autograd()


def pairwise_lse(x: Tensor, y: Tensor, scale: Tensor, similarity: str = "dot",
                 mask_diag: bool = False, compute_col: bool = True) -> tuple[Tensor, Tensor]:
    """Row and column log-sum-exp of the logits L = scale * sim(x, y), never stored.

    ``row_lse[i] = log sum_j exp(L[i, j])`` and ``col_lse[j] = log sum_i exp(L[i, j])``, with the
    diagonal j == i left out of both when ``mask_diag``; ``col_lse`` is empty unless
    ``compute_col``. ``similarity`` is one of ``"dot"``, ``"euclidean"`` (-||a - b||^2) or ``"l1"``
    (-||a - b||_1). Differentiable in ``x``, ``y`` and ``scale`` (a one-element tensor).
    """
    return torch.ops.mmcl_fast.lse_fwd(x, y, scale, similarity, mask_diag, compute_col)


def backend_info() -> dict:
    """Which implementation of the operator is active, and how it was built."""
    mod = _state["module"]
    info = {
        "backend": _state["backend"],
        "torch": torch.__version__,
        "num_threads": torch.get_num_threads(),
        "cpu_flags": getattr(mod, "cpu_flags", None),
        "cpu_blas": mod.cpu_blas() if hasattr(mod, "cpu_blas") else None,
        "cuda_kernels_compiled": has_cuda_kernels(),
        "cuda_available": torch.cuda.is_available(),
    }
    if torch.cuda.is_available():
        info["cuda_devices"] = [
            {"name": torch.cuda.get_device_name(i),
             "compute_capability": "%d.%d" % torch.cuda.get_device_capability(i)}
            for i in range(torch.cuda.device_count())]
    if _state["error"]:
        info["fallback_reason"] = _state["error"]
    return info
