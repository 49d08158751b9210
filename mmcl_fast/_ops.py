"""The operator layer: finds the compiled extension and registers fake kernels and autograd.

The ``mmcl_fast`` namespace holds the pairwise log-sum-exp pair (schema in ``csrc/ops.cpp``):

* ``lse_fwd(x, y, scale, similarity, mask_diag, compute_col, checks, deterministic, math_path)
  -> (row_lse, col_lse)``
* ``lse_bwd(grad_row, grad_col, x, y, scale, row_lse, col_lse, similarity, mask_diag,
  output_mask, checks, math_path) -> (dx, dy, dscale)``; an output whose ``output_mask`` entry is
  False is empty (shape [0]) and its kernel pass is skipped. The autograd formula passes
  ``ctx.needs_input_grad``, so a frozen tower (LiT) costs no dY pass.

the label-aware pair (positives where ``row_ids[i] == col_ids[j]``; without ids the pairs (i, i)):

* ``label_lse_fwd(x, y, scale, row_ids, col_ids, similarity, mask_diag, compute_col, checks,
  deterministic, math_path) -> (row_neg, col_neg, row_pos, col_pos, row_sum, col_sum)``, each row's
  and column's LSE over its negatives and over its positives and the sum of its positive logits;
* ``label_lse_bwd(grads[6], x, y, scale, row_ids, col_ids, lse[4], similarity, mask_diag,
  output_mask, checks, math_path) -> (dx, dy, dscale)``; CUDA tile kernels in a CUDA build (the
  chunked PyTorch pair serves CUDA tensors in a CPU-only build);

and the pairwise softplus pair of the sigmoid (SigLIP) loss:

* ``softplus_fwd(x, y, scale, bias, similarity, mask_diag, checks, math_path) -> row``,
  ``row_i = sum_j softplus(scale * sim(x_i, y_j) + bias)``, j == i left out when ``mask_diag``;
* ``softplus_total(x, y, scale, bias, similarity, diagonal, output_mask, checks, math_path)
  -> (total, dx, dy, dscale, dbias)``: the sum of ``softplus(L_ij + bias)`` over the negatives and,
  with ``diagonal="positive"``, of ``softplus(-(L_ii + bias))`` over the pairs (i, i)
  (``"masked"``: left out; ``"negative"``: negatives too), 0-dim, with its gradients, on CPU in the
  same pass over the tiles (no second pass to recompute them); the autograd multiplies them by
  the upstream gradient, a scalar. The sigmoid loss's mean and sum reductions use it;
* ``softplus_bwd(grad_row, x, y, scale, bias, similarity, mask_diag, output_mask, checks, math_path)
  -> (dx, dy, dscale, dbias)``, with the same ``output_mask`` convention.

On CUDA the softplus pair runs the chunked PyTorch implementation (``mmcl_fast.chunked``) until
the CUDA tile kernels gain the softplus reduction.

The last arguments are the kernel options (:class:`mmcl_fast.options.KernelOptions`); the
backward receives the forward's.

The compiled and JIT backends add ``operands_fwd`` / ``operands_bwd`` on CPU: the losses'
O((M + N) D) operands (cosine normalisation, positive-pair similarities) in one pass on the
kernels' worker pool, see :func:`operands`.

The backend is chosen once, at the first op call (not at import), from ``MMCL_FAST_BACKEND`` =
auto (default) | compiled | jit | python:

1. ``compiled``: ``mmcl_fast._C`` built by pip. It is looked for next to this package (an editable
   install, or a regular one imported from site-packages) and, when this package is a source
   checkout without a build (a script started from the repository root shadows the install), in
   the installed ``mmcl-fast`` distribution. A build from other sources than the checkout's
   ``csrc/`` is used with a warning that says how to rebuild.
2. ``jit``: the same sources compiled with ``torch.utils.cpp_extension.load``, only when asked for,
   or in auto mode from a source checkout with no compiled extension anywhere. It prints one line
   saying so, shows ninja's progress, and never waits on a stale build lock (see
   :func:`wait_for_build_lock`).
3. ``python``: the chunked pure-PyTorch pair of ``mmcl_fast.chunked`` registered under the same
   op names (auto mode warns once). Fake kernels, autograd and ``torch.compile`` behave the same.
"""
from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import sys
import threading
import time
import warnings
from pathlib import Path

import torch
from torch import Tensor

from . import _build_config, chunked, options
from .options import KernelOptions

_PACKAGE_DIR = Path(__file__).resolve().parent
_CHECKOUT = _PACKAGE_DIR.parent            # the repository root when this package is a checkout
BACKENDS = ("auto", "compiled", "jit", "python")
JIT_NAME = "mmcl_fast_jit"
STALE_LOCK_AGE_S = 30.0                    # a lock this old with no compiler running is stale
JIT_LOCK_TIMEOUT_S = float(os.environ.get("MMCL_FAST_JIT_LOCK_TIMEOUT", "1200"))
_state: dict = {"backend": None, "module": None, "error": None, "warning": None}
_load_lock = threading.Lock()
_LOW_PRECISION = (torch.float16, torch.bfloat16)
# The schemas of csrc/op_schema.h, for the pure-PyTorch backend.
_FWD_SCHEMA = ("lse_fwd(Tensor x, Tensor y, Tensor scale, str similarity, bool mask_diag, "
               "bool compute_col, bool checks=False, bool deterministic=False, str math_path=\"auto\") "
               "-> (Tensor, Tensor)")
_BWD_SCHEMA = ("lse_bwd(Tensor grad_row, Tensor grad_col, Tensor x, Tensor y, Tensor scale, "
               "Tensor row_lse, Tensor col_lse, str similarity, bool mask_diag, bool[3] output_mask, "
               "bool checks=False, str math_path=\"auto\") -> (Tensor, Tensor, Tensor)")
_LABEL_FWD_SCHEMA = ("label_lse_fwd(Tensor x, Tensor y, Tensor scale, Tensor row_ids, Tensor col_ids, "
                     "str similarity, bool mask_diag, bool compute_col, bool checks=False, "
                     "bool deterministic=False, str math_path=\"auto\") "
                     "-> (Tensor, Tensor, Tensor, Tensor, Tensor, Tensor)")
_LABEL_BWD_SCHEMA = ("label_lse_bwd(Tensor[] grads, Tensor x, Tensor y, Tensor scale, Tensor row_ids, "
                     "Tensor col_ids, Tensor[] lse, str similarity, bool mask_diag, bool[3] output_mask, "
                     "bool checks=False, str math_path=\"auto\") -> (Tensor, Tensor, Tensor)")
_SOFTPLUS_FWD_SCHEMA = ("softplus_fwd(Tensor x, Tensor y, Tensor scale, Tensor bias, str similarity, "
                        "bool mask_diag, bool checks=False, str math_path=\"auto\") -> Tensor")
_SOFTPLUS_TOTAL_SCHEMA = ("softplus_total(Tensor x, Tensor y, Tensor scale, Tensor bias, str similarity, "
                          "str diagonal, bool[4] output_mask, bool checks=False, str math_path=\"auto\") "
                          "-> (Tensor, Tensor, Tensor, Tensor, Tensor)")
_LABEL_SOFTPLUS_FWD_SCHEMA = ("label_softplus_fwd(Tensor x, Tensor y, Tensor scale, Tensor bias, Tensor row_ids, "
                              "Tensor col_ids, str similarity, bool checks=False, str math_path=\"auto\") -> Tensor")
_LABEL_SOFTPLUS_BWD_SCHEMA = ("label_softplus_bwd(Tensor grad_row, Tensor x, Tensor y, Tensor scale, Tensor bias, "
                              "Tensor row_ids, Tensor col_ids, str similarity, bool[4] output_mask, "
                              "bool checks=False, str math_path=\"auto\") -> (Tensor, Tensor, Tensor, Tensor)")
_LABEL_SOFTPLUS_TOTAL_SCHEMA = ("label_softplus_total(Tensor x, Tensor y, Tensor scale, Tensor bias, "
                                "Tensor row_ids, Tensor col_ids, str similarity, bool[4] output_mask, "
                                "bool checks=False, str math_path=\"auto\") "
                                "-> (Tensor, Tensor, Tensor, Tensor, Tensor)")
_SOFTPLUS_BWD_SCHEMA = ("softplus_bwd(Tensor grad_row, Tensor x, Tensor y, Tensor scale, Tensor bias, "
                        "str similarity, bool mask_diag, bool[4] output_mask, bool checks=False, "
                        "str math_path=\"auto\") -> (Tensor, Tensor, Tensor, Tensor)")


def _is_source_checkout() -> bool:
    return all((_CHECKOUT / src).is_file() for src in _build_config.OP_SOURCES)


def _installed_extension() -> Path | None:
    """The ``_C`` file of the installed mmcl-fast distribution, when it lies outside this package."""
    try:
        files = importlib.metadata.distribution("mmcl-fast").files or []
    except importlib.metadata.PackageNotFoundError:
        return None
    for f in files:
        if f.parts[:1] == ("mmcl_fast",) and f.name.startswith("_C.") and f.suffix in (".so", ".pyd"):
            path = Path(f.locate()).resolve()
            if path.parent != _PACKAGE_DIR and path.is_file():
                return path
    return None


class TorchMismatchError(RuntimeError):
    """The compiled extension was built against another torch release than the running one."""


def _torch_release() -> str:
    return torch.__version__.split("+")[0]


def _installed_for_torch() -> str | None:
    """The torch release the installed distribution was built for (its version's local label,
    ``0.1.0+torch2.13.0``), or None when unknown."""
    try:
        version = importlib.metadata.version("mmcl-fast")
    except importlib.metadata.PackageNotFoundError:
        return None
    return version.split("+torch", 1)[1] if "+torch" in version else None


def _load_compiled():
    try:
        from . import _C  # noqa: F401  (importing registers the TORCH_LIBRARY ops)
    except ImportError as exc:
        path = _installed_extension() if _is_source_checkout() else None
        if path is None:
            built = _installed_for_torch()
            hint = (f"; the installed mmcl-fast was built for torch {built} and this process runs torch "
                    f"{_torch_release()}: reinstall mmcl-fast for this torch"
                    if built and built != _torch_release() else "")
            raise ImportError(f"no usable compiled mmcl_fast._C next to {_PACKAGE_DIR} ({exc}){hint}") from exc
        spec = importlib.util.spec_from_file_location("mmcl_fast._C", path)
        _C = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(_C)
        sys.modules["mmcl_fast._C"] = _C
    built = getattr(_C, "torch_built", "unknown")
    if built != "unknown" and built != _torch_release():
        # Loaded, but compiled against another torch's C++ ABI: no silent fallback (its ops are
        # registered already), a clear error instead.
        raise TorchMismatchError(
            f"mmcl_fast: the compiled extension {_C.__file__} was built against torch {built}, and this "
            f"process runs torch {torch.__version__}. A compiled torch extension works only with the "
            "torch release it was built against: reinstall mmcl-fast with this torch "
            "(`pip install --no-build-isolation mmcl-fast`, or `-e .` in a checkout).")
    if _is_source_checkout():
        want = _build_config.source_hash(_CHECKOUT)
        have = getattr(_C, "source_hash", "unknown")
        if have != want:
            _state["warning"] = (
                f"mmcl_fast: the compiled extension {_C.__file__} was built from other sources "
                f"(hash {have}) than {_CHECKOUT / 'csrc'} ({want}); rebuild it with "
                "`pip install --no-build-isolation -e .`")
    return _C


def _build_directory() -> Path:
    """Where the JIT build lives: torch's extension root (TORCH_EXTENSIONS_DIR or the default)."""
    from torch.utils.cpp_extension import get_default_build_root

    root = Path(os.environ.get("TORCH_EXTENSIONS_DIR") or get_default_build_root())
    return root / f"py{sys.version_info.major}{sys.version_info.minor}_cpu" / JIT_NAME


def _compiler_running_in(directory: Path) -> bool:
    """True when a live process works in ``directory`` (ninja and the compilers it starts do)."""
    target = str(directory.resolve())
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            if os.readlink(proc / "cwd") == target:
                return True
        except OSError:
            continue
    return False


def wait_for_build_lock(directory: Path, timeout: float = JIT_LOCK_TIMEOUT_S,
                        stale_age: float = STALE_LOCK_AGE_S, poll: float = 0.5) -> None:
    """Return once ``directory/lock`` (torch's JIT build lock) is gone or proven stale.

    A lock older than ``stale_age`` seconds while no process runs in ``directory`` was left by a
    killed build: it is removed with a warning. A lock held by a live build is waited for, at most
    ``timeout`` seconds; then a RuntimeError names the file and the fix.
    """
    lock = directory / "lock"
    deadline = time.monotonic() + timeout
    while True:
        try:
            age = time.time() - lock.stat().st_mtime
        except FileNotFoundError:
            return
        if age > stale_age and not _compiler_running_in(directory):
            warnings.warn(f"mmcl_fast: removing the stale build lock {lock} ({age:.0f} s old, no "
                          "compiler running there): an earlier build was interrupted",
                          RuntimeWarning, stacklevel=2)
            lock.unlink(missing_ok=True)
            return
        if time.monotonic() >= deadline:
            raise RuntimeError(
                f"mmcl_fast: waited {timeout:.0f} s for the build lock {lock}, held by another "
                f"build. If no other build of mmcl_fast is running, delete it (rm {lock}) and "
                "retry, or install the compiled extension: pip install --no-build-isolation -e .")
        time.sleep(poll)


def _load_jit(reason: str):
    from torch.utils.cpp_extension import load

    if not _is_source_checkout():
        raise FileNotFoundError(f"no C++ sources under {_CHECKOUT / 'csrc'} to compile")
    directory = _build_directory()
    directory.mkdir(parents=True, exist_ok=True)
    print(f"mmcl_fast: compiling the C++ extension into {directory} ({reason}); this takes a few "
          "minutes once. `pip install --no-build-isolation -e .` builds it ahead.",
          file=sys.stderr, flush=True)
    wait_for_build_lock(directory)
    scripts = str(Path(sys.executable).parent)  # pip's ninja, when the venv is not activated
    if scripts not in os.environ.get("PATH", "").split(os.pathsep):
        os.environ["PATH"] = os.pathsep.join([os.environ.get("PATH", ""), scripts])
    sources = [*_build_config.OP_SOURCES, *_build_config.PYTHON_MODULE_SOURCES]
    flags = ["-O3", _build_config.source_hash_define(_CHECKOUT), f"-DMMCL_FAST_TORCH_BUILT={_torch_release()}"]
    return load(name=JIT_NAME, sources=[str(_CHECKOUT / s) for s in sources],
                extra_cflags=flags, extra_include_paths=[str(_CHECKOUT / "csrc")],
                build_directory=str(directory), verbose=True)


def _register_python_fallback():
    lib = torch.library.Library("mmcl_fast", "DEF")
    lib.define(_FWD_SCHEMA)
    lib.define(_BWD_SCHEMA)
    lib.define(_LABEL_FWD_SCHEMA)
    lib.define(_LABEL_BWD_SCHEMA)
    lib.define(_SOFTPLUS_FWD_SCHEMA)
    lib.define(_SOFTPLUS_BWD_SCHEMA)
    lib.define(_SOFTPLUS_TOTAL_SCHEMA)
    lib.define(_LABEL_SOFTPLUS_FWD_SCHEMA)
    lib.define(_LABEL_SOFTPLUS_BWD_SCHEMA)
    lib.define(_LABEL_SOFTPLUS_TOTAL_SCHEMA)
    lib.impl("lse_fwd", chunked.lse_fwd, "CompositeExplicitAutograd")
    lib.impl("lse_bwd", chunked.lse_bwd, "CompositeExplicitAutograd")
    lib.impl("label_lse_fwd", chunked.label_lse_fwd, "CompositeExplicitAutograd")
    lib.impl("label_lse_bwd", _chunked_label_lse_bwd, "CompositeExplicitAutograd")
    lib.impl("softplus_fwd", chunked.softplus_fwd, "CompositeExplicitAutograd")
    lib.impl("softplus_bwd", chunked.softplus_bwd, "CompositeExplicitAutograd")
    lib.impl("softplus_total", chunked.softplus_total, "CompositeExplicitAutograd")
    lib.impl("label_softplus_fwd", chunked.label_softplus_fwd, "CompositeExplicitAutograd")
    lib.impl("label_softplus_bwd", chunked.label_softplus_bwd, "CompositeExplicitAutograd")
    lib.impl("label_softplus_total", chunked.label_softplus_total, "CompositeExplicitAutograd")
    return lib  # the registration lives as long as this object


def _chunked_label_lse_bwd(grads, x, y, scale, row_ids, col_ids, lse, similarity, mask_diag, output_mask,
                           checks=False, math_path="auto"):
    return chunked.label_lse_bwd(*grads, x, y, scale, row_ids, col_ids, *lse, similarity, mask_diag,
                                 output_mask)


def _register_chunked_cuda(labels: bool, softplus: bool):
    """The chunked pairs as the CUDA kernels of the compiled ops that a build has no CUDA tile kernel
    for (the label-aware LSE, the softplus pair: a CPU-only build); kept alive in ``_state``."""
    lib = torch.library.Library("mmcl_fast", "IMPL")
    if labels:
        lib.impl("label_lse_fwd", chunked.label_lse_fwd, "CUDA")
        lib.impl("label_lse_bwd", _chunked_label_lse_bwd, "CUDA")
        lib.impl("label_softplus_fwd", chunked.label_softplus_fwd, "CUDA")
        lib.impl("label_softplus_bwd", chunked.label_softplus_bwd, "CUDA")
        lib.impl("label_softplus_total", chunked.label_softplus_total, "CUDA")
    if softplus:
        lib.impl("softplus_fwd", chunked.softplus_fwd, "CUDA")
        lib.impl("softplus_bwd", chunked.softplus_bwd, "CUDA")
        lib.impl("softplus_total", chunked.softplus_total, "CUDA")
    return lib


def _load_backend() -> None:
    choice = os.environ.get("MMCL_FAST_BACKEND", "auto")
    if choice not in BACKENDS:
        raise ValueError(f"MMCL_FAST_BACKEND must be one of {BACKENDS}, got {choice!r}")
    errors = []
    if choice in ("auto", "compiled"):
        try:
            _state["module"], _state["backend"] = _load_compiled(), "compiled"
        except TorchMismatchError:
            raise
        except Exception as exc:  # noqa: BLE001 - any failure means "try the next backend"
            errors.append(f"compiled: {type(exc).__name__}: {exc}")
    if _state["backend"] is None and (choice == "jit" or (choice == "auto" and _is_source_checkout())):
        reason = "MMCL_FAST_BACKEND=jit" if choice == "jit" else "no compiled extension found"
        try:
            _state["module"], _state["backend"] = _load_jit(reason), "jit"
        except Exception as exc:  # noqa: BLE001
            errors.append(f"jit: {type(exc).__name__}: {exc}")
    if _state["backend"] is None:
        if choice in ("compiled", "jit"):
            raise RuntimeError(f"mmcl_fast: MMCL_FAST_BACKEND={choice} could not be loaded. "
                               + "; ".join(errors))
        _state["module"], _state["backend"] = _register_python_fallback(), "python"
        _state["error"] = "; ".join(errors)
        if choice == "auto":
            _state["warning"] = ("mmcl_fast: the compiled extension is unavailable, using the "
                                 f"pure-PyTorch chunked fallback (slower). Reasons: {_state['error']}")
    if _state["backend"] != "python":
        module = _state["module"]
        _state["cuda_chunked"] = _register_chunked_cuda(not getattr(module, "with_cuda_labels", False),
                                                        not getattr(module, "with_cuda_softplus", False))
    if _state["warning"]:
        warnings.warn(_state["warning"], RuntimeWarning, stacklevel=4)


@torch.compiler.assume_constant_result
def load_backend() -> str:
    """Choose and load the backend once (thread-safe); returns its name.

    Called by every op entry point. Under ``torch.compile`` it runs eagerly at trace time and its
    result is a constant, so the first call may come from compiled code without a graph break.
    """
    if _state["backend"] is None:
        with _load_lock:
            if _state["backend"] is None:
                _load_backend()
                _register_fake_and_autograd()
    return _state["backend"]


def has_cuda_kernels() -> bool:
    """True when the active backend has the compiled CUDA kernels."""
    load_backend()
    return bool(getattr(_state["module"], "with_cuda", False))


def native_half_precision(device: torch.device) -> bool:
    """True when the operator's kernels for ``device`` read float16/bfloat16 inputs as they are
    (the CUDA kernels); elsewhere the losses upcast such inputs to float32 first."""
    return device.type == "cuda" and has_cuda_kernels()


def positives_in_tile(device: torch.device) -> bool:
    """True when the losses take their diagonal positives from the label-aware operator's tiles on
    ``device`` (``label_lse_fwd`` without ids: the CPU tile engine of the compiled and JIT backends)
    instead of adding them outside the LSE operator (elsewhere: CUDA, whose tile kernels have no
    label policy yet, and the pure-PyTorch backend)."""
    return device.type == "cpu" and load_backend() in ("compiled", "jit")


def lse_dtype(dtype: torch.dtype) -> torch.dtype:
    """dtype of the LSE outputs: float32 for half/bfloat16 inputs, else the input dtype."""
    return torch.float32 if dtype in _LOW_PRECISION else dtype


def _register_fake_and_autograd() -> None:
    def _check_operands(x, y, scale):
        torch._check(x.dim() == 2 and y.dim() == 2, lambda: f"x and y must be 2-D, got {x.shape}, {y.shape}")
        torch._check(x.shape[1] == y.shape[1],
                     lambda: f"x and y must share the feature dimension, got {x.shape}, {y.shape}")
        torch._check(x.dtype == y.dtype, lambda: f"x and y must have the same dtype, got {x.dtype}, {y.dtype}")
        torch._check(x.dtype.is_floating_point, lambda: f"x and y must be floating point, got {x.dtype}")
        torch._check(scale.numel() == 1, lambda: f"scale must hold exactly one element, got {scale.shape}")

    @torch.library.register_fake("mmcl_fast::lse_fwd")
    def _fwd_fake(x, y, scale, similarity, mask_diag, compute_col, checks=False, deterministic=False,
                  math_path="auto"):
        _check_operands(x, y, scale)
        dt = lse_dtype(x.dtype)
        return (x.new_empty((x.shape[0],), dtype=dt),
                x.new_empty((y.shape[0] if compute_col else 0,), dtype=dt))

    @torch.library.register_fake("mmcl_fast::lse_bwd")
    def _bwd_fake(grad_row, grad_col, x, y, scale, row_lse, col_lse, similarity, mask_diag,
                  output_mask, checks=False, math_path="auto"):
        _check_operands(x, y, scale)
        torch._check(grad_row.shape == (x.shape[0],) and row_lse.shape == (x.shape[0],),
                     lambda: f"grad_row and row_lse must have M = {x.shape[0]} elements")
        torch._check(grad_col.numel() == 0 or grad_col.shape == (y.shape[0],),
                     lambda: f"grad_col must be empty or have N = {y.shape[0]} elements")
        need_dx, need_dy, need_dscale = output_mask
        return (torch.empty_like(x) if need_dx else x.new_empty((0,)),
                torch.empty_like(y) if need_dy else y.new_empty((0,)),
                torch.empty_like(scale) if need_dscale else scale.new_empty((0,)))

    def setup_context(ctx, inputs, output):
        x, y, scale, similarity, mask_diag, _, checks, _, math_path = inputs  # defaults filled in
        ctx.save_for_backward(x, y, scale, *output)
        ctx.similarity, ctx.mask_diag, ctx.checks, ctx.math_path = similarity, mask_diag, checks, math_path

    def backward(ctx, grad_row, grad_col):
        x, y, scale, row_lse, col_lse = ctx.saved_tensors
        if grad_row is None:
            grad_row = torch.zeros_like(row_lse)
        if grad_col is None or col_lse.numel() == 0:
            grad_col = row_lse.new_empty(0)
        need = list(ctx.needs_input_grad[:3])
        if not any(need):
            return (None,) * 9
        dx, dy, dscale = torch.ops.mmcl_fast.lse_bwd(
            grad_row.contiguous(), grad_col.contiguous(), x, y, scale, row_lse, col_lse,
            ctx.similarity, ctx.mask_diag, need, ctx.checks, ctx.math_path)
        return (dx if need[0] else None, dy if need[1] else None, dscale if need[2] else None,
                *(None,) * 6)

    torch.library.register_autograd("mmcl_fast::lse_fwd", backward, setup_context=setup_context)
    _register_label_fake_and_autograd(_check_operands)
    _register_softplus_fake_and_autograd(_check_operands)
    if has_operands_op():
        _register_operands_fake_and_autograd()


def _check_label_ids(x, y, row_ids, col_ids):
    if row_ids.numel() == 0 and col_ids.numel() == 0:
        return  # no ids: the pairs (i, i) are the positives
    for name, ids, n in (("row_ids", row_ids, x.shape[0]), ("col_ids", col_ids, y.shape[0])):
        torch._check(ids.dtype == torch.int64, lambda: f"{name} must be int64, got {ids.dtype}")
        torch._check(ids.dim() == 1 and ids.shape[0] == n, lambda: f"{name} must have shape [{n}], got {ids.shape}")


def _register_label_fake_and_autograd(check_operands) -> None:
    check_labels = _check_label_ids

    @torch.library.register_fake("mmcl_fast::label_lse_fwd")
    def _fwd_fake(x, y, scale, row_ids, col_ids, similarity, mask_diag, compute_col, checks=False,
                  deterministic=False, math_path="auto"):
        check_operands(x, y, scale)
        check_labels(x, y, row_ids, col_ids)
        dt = lse_dtype(x.dtype)
        row, col = (x.shape[0],), (y.shape[0] if compute_col else 0,)
        return tuple(x.new_empty(row if k % 2 == 0 else col, dtype=dt) for k in range(6))

    @torch.library.register_fake("mmcl_fast::label_lse_bwd")
    def _bwd_fake(grads, x, y, scale, row_ids, col_ids, lse, similarity, mask_diag, output_mask, checks=False,
                  math_path="auto"):
        check_operands(x, y, scale)
        check_labels(x, y, row_ids, col_ids)
        torch._check(len(grads) == 6 and len(lse) == 4, lambda: "grads must hold 6 tensors and lse 4")
        need_dx, need_dy, need_dscale = output_mask
        return (torch.empty_like(x) if need_dx else x.new_empty((0,)),
                torch.empty_like(y) if need_dy else y.new_empty((0,)),
                torch.empty_like(scale) if need_dscale else scale.new_empty((0,)))

    def setup_context(ctx, inputs, output):
        x, y, scale, row_ids, col_ids, similarity, mask_diag, _, checks, _, math_path = inputs
        row_neg, col_neg, row_pos, col_pos, _, _ = output
        ctx.save_for_backward(x, y, scale, row_ids, col_ids, row_neg, col_neg, row_pos, col_pos)
        ctx.similarity, ctx.mask_diag, ctx.checks, ctx.math_path = similarity, mask_diag, checks, math_path

    def backward(ctx, *grads):
        need = list(ctx.needs_input_grad[:3])
        if not any(need):
            return (None,) * 11
        x, y, scale, row_ids, col_ids, *lse = ctx.saved_tensors
        # grads: (row_neg, col_neg, row_pos, col_pos, row_sum, col_sum), rows at even k; the
        # column ones (and the column LSEs) go empty when no column output has a gradient
        use_col = lse[1].numel() > 0 and any(grads[k] is not None for k in (1, 3, 5))
        empty = lse[0].new_empty(0)

        def upstream(k):
            if k % 2 == 1 and not use_col:
                return empty
            return torch.zeros_like(lse[k % 2]) if grads[k] is None else grads[k].contiguous()

        filled = [upstream(k) for k in range(6)]
        if not use_col:
            lse = [lse[0], empty, lse[2], empty]
        dx, dy, dscale = torch.ops.mmcl_fast.label_lse_bwd(
            filled, x, y, scale, row_ids, col_ids, lse, ctx.similarity, ctx.mask_diag, need, ctx.checks,
            ctx.math_path)
        return (dx if need[0] else None, dy if need[1] else None, dscale if need[2] else None, *(None,) * 8)

    torch.library.register_autograd("mmcl_fast::label_lse_fwd", backward, setup_context=setup_context)


def _register_softplus_fake_and_autograd(check_operands) -> None:
    def check_bias(bias):
        torch._check(bias.numel() == 1, lambda: f"bias must hold exactly one element, got {bias.shape}")

    @torch.library.register_fake("mmcl_fast::softplus_fwd")
    def _fwd_fake(x, y, scale, bias, similarity, mask_diag, checks=False, math_path="auto"):
        check_operands(x, y, scale)
        check_bias(bias)
        return x.new_empty((x.shape[0],), dtype=lse_dtype(x.dtype))

    @torch.library.register_fake("mmcl_fast::softplus_bwd")
    def _bwd_fake(grad_row, x, y, scale, bias, similarity, mask_diag, output_mask, checks=False,
                  math_path="auto"):
        check_operands(x, y, scale)
        check_bias(bias)
        torch._check(grad_row.shape == (x.shape[0],), lambda: f"grad_row must have M = {x.shape[0]} elements")
        need_dx, need_dy, need_dscale, need_dbias = output_mask
        return (torch.empty_like(x) if need_dx else x.new_empty((0,)),
                torch.empty_like(y) if need_dy else y.new_empty((0,)),
                torch.empty_like(scale) if need_dscale else scale.new_empty((0,)),
                torch.empty_like(bias) if need_dbias else bias.new_empty((0,)))

    def setup_context(ctx, inputs, output):
        x, y, scale, bias, similarity, mask_diag, checks, math_path = inputs  # defaults filled in
        ctx.save_for_backward(x, y, scale, bias)
        ctx.similarity, ctx.mask_diag, ctx.checks, ctx.math_path = similarity, mask_diag, checks, math_path

    def backward(ctx, grad_row):
        need = list(ctx.needs_input_grad[:4])
        if not any(need):
            return (None,) * 8
        x, y, scale, bias = ctx.saved_tensors
        dx, dy, dscale, dbias = torch.ops.mmcl_fast.softplus_bwd(
            grad_row.contiguous(), x, y, scale, bias, ctx.similarity, ctx.mask_diag, need, ctx.checks,
            ctx.math_path)
        return (dx if need[0] else None, dy if need[1] else None, dscale if need[2] else None,
                dbias if need[3] else None, None, None, None, None)

    torch.library.register_autograd("mmcl_fast::softplus_fwd", backward, setup_context=setup_context)

    @torch.library.register_fake("mmcl_fast::label_softplus_fwd")
    def _label_fwd_fake(x, y, scale, bias, row_ids, col_ids, similarity, checks=False, math_path="auto"):
        check_operands(x, y, scale)
        check_bias(bias)
        _check_label_ids(x, y, row_ids, col_ids)
        return x.new_empty((x.shape[0],), dtype=lse_dtype(x.dtype))

    @torch.library.register_fake("mmcl_fast::label_softplus_bwd")
    def _label_bwd_fake(grad_row, x, y, scale, bias, row_ids, col_ids, similarity, output_mask, checks=False,
                        math_path="auto"):
        check_operands(x, y, scale)
        check_bias(bias)
        _check_label_ids(x, y, row_ids, col_ids)
        need_dx, need_dy, need_dscale, need_dbias = output_mask
        return (torch.empty_like(x) if need_dx else x.new_empty((0,)),
                torch.empty_like(y) if need_dy else y.new_empty((0,)),
                torch.empty_like(scale) if need_dscale else scale.new_empty((0,)),
                torch.empty_like(bias) if need_dbias else bias.new_empty((0,)))

    def setup_label(ctx, inputs, output):
        x, y, scale, bias, row_ids, col_ids, similarity, checks, math_path = inputs
        ctx.save_for_backward(x, y, scale, bias, row_ids, col_ids)
        ctx.similarity, ctx.checks, ctx.math_path = similarity, checks, math_path

    def backward_label(ctx, grad_row):
        need = list(ctx.needs_input_grad[:4])
        if not any(need):
            return (None,) * 9
        x, y, scale, bias, row_ids, col_ids = ctx.saved_tensors
        dx, dy, dscale, dbias = torch.ops.mmcl_fast.label_softplus_bwd(
            grad_row.contiguous(), x, y, scale, bias, row_ids, col_ids, ctx.similarity, need, ctx.checks,
            ctx.math_path)
        return (dx if need[0] else None, dy if need[1] else None, dscale if need[2] else None,
                dbias if need[3] else None, *(None,) * 5)

    torch.library.register_autograd("mmcl_fast::label_softplus_fwd", backward_label, setup_context=setup_label)

    @torch.library.register_fake("mmcl_fast::softplus_total")
    def _total_fake(x, y, scale, bias, similarity, diagonal, output_mask, checks=False, math_path="auto"):
        check_operands(x, y, scale)
        check_bias(bias)
        need_dx, need_dy, need_dscale, need_dbias = output_mask
        return (x.new_empty((), dtype=lse_dtype(x.dtype)),
                torch.empty_like(x) if need_dx else x.new_empty((0,)),
                torch.empty_like(y) if need_dy else y.new_empty((0,)),
                torch.empty_like(scale) if need_dscale else scale.new_empty((0,)),
                torch.empty_like(bias) if need_dbias else bias.new_empty((0,)))

    def setup_total(ctx, inputs, output):
        *_, output_mask, _, _ = inputs
        _, dx, dy, dscale, dbias = output
        ctx.mark_non_differentiable(dx, dy, dscale, dbias)
        ctx.save_for_backward(dx, dy, dscale, dbias)
        ctx.output_mask = list(output_mask)

    def backward_total(ctx, grad_total, *_):
        need = list(ctx.needs_input_grad[:4])
        missing = [n and not m for n, m in zip(need, ctx.output_mask)]
        torch._check(not any(missing), lambda: "softplus_total: a gradient was requested that the forward's "
                     "output_mask did not compute")
        grads = [g * grad_total.to(g.dtype) if n else None for g, n in zip(ctx.saved_tensors, need)]
        return (*grads, None, None, None, None, None)

    torch.library.register_autograd("mmcl_fast::softplus_total", backward_total, setup_context=setup_total)

    @torch.library.register_fake("mmcl_fast::label_softplus_total")
    def _label_total_fake(x, y, scale, bias, row_ids, col_ids, similarity, output_mask, checks=False,
                          math_path="auto"):
        _check_label_ids(x, y, row_ids, col_ids)
        return _total_fake(x, y, scale, bias, similarity, "negative", output_mask)

    def backward_label_total(ctx, grad_total, *_):
        return (*backward_total(ctx, grad_total)[:4], *(None,) * 6)

    torch.library.register_autograd("mmcl_fast::label_softplus_total", backward_label_total,
                                    setup_context=setup_total)


def has_operands_op() -> bool:
    """True when the active backend has the CPU ``operands`` op pair (compiled or JIT)."""
    load_backend()
    return _state["backend"] in ("compiled", "jit") and hasattr(torch.ops.mmcl_fast, "operands_fwd")


def _register_operands_fake_and_autograd() -> None:
    @torch.library.register_fake("mmcl_fast::operands_fwd")
    def _fwd_fake(a, b, similarity):
        torch._check(a.dim() == 2 and b.dim() == 2, lambda: f"a and b must be 2-D, got {a.shape}, {b.shape}")
        torch._check(a.shape[1] == b.shape[1],
                     lambda: f"a and b must share the feature dimension, got {a.shape}, {b.shape}")
        torch._check(a.shape[0] <= b.shape[0], lambda: f"a may not have more rows than b, got {a.shape}, {b.shape}")
        torch._check(a.dtype == b.dtype, lambda: f"a and b must have the same dtype, got {a.dtype}, {b.dtype}")
        cosine = similarity == "cosine"
        return (torch.empty_like(a), torch.empty_like(b), a.new_empty((a.shape[0],)),
                a.new_empty((a.shape[0] if cosine else 0,), dtype=torch.float64),
                b.new_empty((b.shape[0] if cosine else 0,), dtype=torch.float64))

    @torch.library.register_fake("mmcl_fast::operands_bwd")
    def _bwd_fake(grad_ka, grad_kb, grad_pos, ka, kb, norm_a, norm_b, similarity, output_mask):
        torch._check(ka.dim() == 2 and kb.dim() == 2 and ka.shape[1] == kb.shape[1],
                     lambda: f"ka and kb must be 2-D with the same features, got {ka.shape}, {kb.shape}")
        return (torch.empty_like(ka) if output_mask[0] else ka.new_empty((0,)),
                torch.empty_like(kb) if output_mask[1] else kb.new_empty((0,)))

    def setup_context(ctx, inputs, output):
        _, _, similarity = inputs
        ka, kb, _, norm_a, norm_b = output
        ctx.mark_non_differentiable(norm_a, norm_b)
        ctx.save_for_backward(ka, kb, norm_a, norm_b)
        ctx.similarity = similarity

    def backward(ctx, grad_ka, grad_kb, grad_pos, _grad_norm_a, _grad_norm_b):
        need = list(ctx.needs_input_grad[:2])
        if not any(need):
            return None, None, None
        ka, kb, norm_a, norm_b = ctx.saved_tensors
        empty = ka.new_empty(0)
        da, db = torch.ops.mmcl_fast.operands_bwd(
            empty if grad_ka is None else grad_ka, empty if grad_kb is None else grad_kb,
            empty if grad_pos is None else grad_pos, ka, kb, norm_a, norm_b, ctx.similarity, need)
        return (da if need[0] else None, db if need[1] else None, None)

    torch.library.register_autograd("mmcl_fast::operands_fwd", backward, setup_context=setup_context)


def pairwise_lse(x: Tensor, y: Tensor, scale: Tensor, similarity: str = "dot",
                 mask_diag: bool = False, compute_col: bool = True, *,
                 kernel_options: KernelOptions | None = None) -> tuple[Tensor, Tensor]:
    """Row and column log-sum-exp of the logits L = scale * sim(x, y), never stored.

    ``row_lse[i] = log sum_j exp(L[i, j])`` and ``col_lse[j] = log sum_i exp(L[i, j])``, with the
    diagonal j == i left out of both when ``mask_diag``; ``col_lse`` is empty unless
    ``compute_col``. ``similarity`` is one of ``"dot"``, ``"euclidean"`` (-||a - b||^2) or ``"l1"``
    (-||a - b||_1). Differentiable in ``x``, ``y`` and ``scale`` (a one-element tensor).
    ``kernel_options``: see :class:`mmcl_fast.KernelOptions` (None: the process defaults).
    """
    load_backend()
    return torch.ops.mmcl_fast.lse_fwd(x, y, scale, similarity, mask_diag, compute_col,
                                       *options.resolve(kernel_options).op_arguments())


def pairwise_label_lse(x: Tensor, y: Tensor, scale: Tensor, row_ids: Tensor | None, col_ids: Tensor | None,
                       similarity: str = "dot", mask_diag: bool = False, compute_col: bool = True, *,
                       kernel_options: KernelOptions | None = None) -> tuple[Tensor, ...]:
    """The label-aware statistics of the logits L = scale * sim(x, y), never stored: with the
    positives P = {(i, j): row_ids[i] == col_ids[j]} (minus (i, i) when ``mask_diag``, which is then
    neither positive nor negative) and the negatives the other pairs, returns

        (row_neg, col_neg, row_pos, col_pos, row_sum, col_sum):
        row_neg[i] = log sum_{j neg} exp(L[i, j]),  row_pos[i] = log sum_{j pos} exp(L[i, j])
        (-inf over an empty set),  row_sum[i] = sum_{j pos} L[i, j],

    and the same per column j over the rows (empty unless ``compute_col``). ``row_ids`` [M] and
    ``col_ids`` [N] are int64 on the device of ``x`` (no gradient); both None: the positives are
    the pairs (i, i), i < min(M, N) (ids ``arange``, without comparing any; not with ``mask_diag``).
    Differentiable in ``x``, ``y`` and ``scale``. On CUDA the tile kernels compute it (float32
    statistics; the columns by a second pass, deterministic)."""
    load_backend()
    if (row_ids is None) != (col_ids is None):
        raise ValueError("give both `row_ids` and `col_ids`, or neither (the pairs (i, i) as the positives)")
    if row_ids is None:
        row_ids = col_ids = torch.empty(0, dtype=torch.int64, device=x.device)
    return torch.ops.mmcl_fast.label_lse_fwd(x, y, scale, row_ids, col_ids, similarity, mask_diag, compute_col,
                                             *options.resolve(kernel_options).op_arguments())


def pairwise_softplus(x: Tensor, y: Tensor, scale: Tensor, bias: Tensor, similarity: str = "dot",
                      mask_diag: bool = False, *, kernel_options: KernelOptions | None = None) -> Tensor:
    """Row sums of softplus over the logits L = scale * sim(x, y) + bias, never stored:
    ``row[i] = sum_j softplus(L[i, j])``, the diagonal j == i left out when ``mask_diag`` (the
    negatives' terms of the sigmoid loss).
    ``similarity`` is ``"dot"``, ``"euclidean"`` or ``"l1"``; ``scale`` (> 0) and ``bias`` are
    one-element tensors. Differentiable in all four tensors."""
    load_backend()
    opts = options.resolve(kernel_options)
    return torch.ops.mmcl_fast.softplus_fwd(x, y, scale, bias, similarity, mask_diag, opts.checks,
                                            opts.cuda_math_path)


def pairwise_label_softplus(x: Tensor, y: Tensor, scale: Tensor, bias: Tensor, row_ids: Tensor | None,
                            col_ids: Tensor | None, similarity: str = "dot", *,
                            kernel_options: KernelOptions | None = None) -> Tensor:
    """The label-aware sigmoid terms over L = scale * sim(x, y) + bias, never stored:
    ``row[i] = sum_j softplus(-z_ij L[i, j])`` with z_ij = +1 where ``row_ids[i] == col_ids[j]``
    (both None: the pairs (i, i)) and -1 elsewhere, positives and negatives in one pass.
    Differentiable in ``x``, ``y``, ``scale`` and ``bias`` (the ids get none)."""
    load_backend()
    if (row_ids is None) != (col_ids is None):
        raise ValueError("give both `row_ids` and `col_ids`, or neither (the pairs (i, i) as the positives)")
    if row_ids is None:
        row_ids = col_ids = torch.empty(0, dtype=torch.int64, device=x.device)
    opts = options.resolve(kernel_options)
    return torch.ops.mmcl_fast.label_softplus_fwd(x, y, scale, bias, row_ids, col_ids, similarity, opts.checks,
                                                  opts.cuda_math_path)


def pairwise_label_softplus_total(x: Tensor, y: Tensor, scale: Tensor, bias: Tensor, row_ids: Tensor | None,
                                  col_ids: Tensor | None, similarity: str = "dot", *,
                                  kernel_options: KernelOptions | None = None) -> Tensor:
    """``pairwise_label_softplus(...).sum()``, 0-dim, with its gradients computed in the forward
    pass over the tiles (CPU) for the tensors that require them when grad mode is on."""
    load_backend()
    if (row_ids is None) != (col_ids is None):
        raise ValueError("give both `row_ids` and `col_ids`, or neither (the pairs (i, i) as the positives)")
    if row_ids is None:
        row_ids = col_ids = torch.empty(0, dtype=torch.int64, device=x.device)
    opts = options.resolve(kernel_options)
    need = [torch.is_grad_enabled() and t.requires_grad for t in (x, y, scale, bias)]
    total, *_ = torch.ops.mmcl_fast.label_softplus_total(x, y, scale, bias, row_ids, col_ids, similarity, need,
                                                         opts.checks, opts.cuda_math_path)
    return total


DIAGONALS = ("negative", "masked", "positive")


def pairwise_softplus_total(x: Tensor, y: Tensor, scale: Tensor, bias: Tensor, similarity: str = "dot",
                            diagonal: str = "negative", *, kernel_options: KernelOptions | None = None) -> Tensor:
    """``sum_ij softplus(L_ij)`` over L = scale * sim(x, y) + bias, with the pairs (i, i) as
    negatives (``diagonal="negative"``), left out (``"masked"``) or positives, whose term is
    ``softplus(-L_ii)`` (``"positive"``): the sigmoid loss's sum. 0-dim, with its gradients
    computed in the forward pass over the tiles (CPU), for the tensors that require them when grad
    mode is on: the backward only scales them. Differentiable in all four tensors."""
    if diagonal not in DIAGONALS:
        raise ValueError(f"`diagonal` must be one of {DIAGONALS}, got {diagonal!r}")
    load_backend()
    opts = options.resolve(kernel_options)
    need = [torch.is_grad_enabled() and t.requires_grad for t in (x, y, scale, bias)]
    total, *_ = torch.ops.mmcl_fast.softplus_total(x, y, scale, bias, similarity, diagonal, need, opts.checks,
                                                   opts.cuda_math_path)
    return total


def operands(a: Tensor, b: Tensor, similarity: str) -> tuple[Tensor, Tensor, Tensor]:
    """(ka, kb, pos) of ``operands_fwd`` (CPU float32/float64, ``a`` no longer than ``b``):
    ka, kb = a, b (L2-normalised rows for ``"cosine"``) and pos_i = sim(ka_i, kb_i), i < M, with
    sim the kernel similarity (dot for cosine). Differentiable in ``a`` and ``b``."""
    ka, kb, pos, _, _ = torch.ops.mmcl_fast.operands_fwd(a, b, similarity)
    # Every output of a custom op requires grad when any input does; ka depends on a alone and kb
    # on b alone, so a frozen side's kernel operand is detached (the LSE backward then skips its pass).
    return (ka if a.requires_grad else ka.detach()), (kb if b.requires_grad else kb.detach()), pos


def cpu_exp_rate(seconds: float = 0.5) -> float | None:
    """Exponentials per second of a tight vectorised exp loop on every ATen thread (the exp the
    CPU kernel evaluates), or None on the pure-PyTorch backend: the limit the CPU kernel is bound
    by at small D, measured by ``benchmarks/bench_loss.py``."""
    load_backend()
    module = _state["module"]
    return module.vec_exp_rate(seconds) if hasattr(module, "vec_exp_rate") else None


def force_cpu_isa(isa: str | None) -> None:
    """Run the CPU kernels' ``isa`` copy ("default", "avx2" or "avx512") in this process from now
    on; None returns to the automatic choice (the widest level that this CPU executes and that
    ``ATEN_CPU_CAPABILITY`` allows). For comparing the levels in one process (tests, benchmarks);
    ``backend_info()["cpu_isas_runnable"]`` lists the levels this machine can run."""
    if isa is not None and not isinstance(isa, str):
        raise TypeError(f"isa must be a string or None, got {type(isa).__name__}")
    load_backend()
    module = _state["module"]
    if not hasattr(module, "force_cpu_isa"):
        if isa is None:
            return
        raise RuntimeError(f"force_cpu_isa: the {_state['backend']} backend has no ISA copies to choose from")
    module.force_cpu_isa(isa or "")


def backend_info() -> dict:
    """Which implementation of the operator is active, and how it was built (loads it if needed)."""
    backend = load_backend()
    mod = _state["module"]
    info = {
        "backend": backend,
        "extension": getattr(mod, "__file__", None),
        "source_hash": getattr(mod, "source_hash", None),
        "torch": torch.__version__,
        "num_threads": torch.get_num_threads(),
        # the ISA copy of the CPU kernels in use, and the copies this CPU could run
        "cpu_isa": mod.cpu_isa() if hasattr(mod, "cpu_isa") else None,
        "cpu_isas_runnable": mod.runnable_cpu_isas() if hasattr(mod, "runnable_cpu_isas") else None,
        "cpu_blas": mod.cpu_blas() if hasattr(mod, "cpu_blas") else None,
        "cuda_kernels_compiled": has_cuda_kernels(),
        "cuda_available": torch.cuda.is_available(),
        # the process default of the kernel options (a call's kernel_options override it)
        "cuda_math_path": options.defaults().cuda_math_path,
    }
    if torch.cuda.is_available():
        info["cuda_devices"] = [
            {"name": torch.cuda.get_device_name(i),
             "compute_capability": "%d.%d" % torch.cuda.get_device_capability(i)}
            for i in range(torch.cuda.device_count())]
    if _state["error"]:
        info["fallback_reason"] = _state["error"]
    return info
