"""What the fused operator is fed, shared by the single-process and the distributed losses.

``kernel_inputs`` maps a loss's similarity onto the operator's (cosine = dot on L2-normalised
rows) and upcasts half precision where the device has no half-precision kernel;
``positive_similarity`` is the O(M * D) positive-pair term sim(a_i, b_i) that the losses add
outside the operator. ``paired_operands`` gives both for row-aligned positives, on CPU in one
pass of the compiled ``operands`` op (no OpenMP region: each of the ATen ops it replaces could
leave the caller spin-waiting beside a busy process).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from . import _ops


def _kernel_similarity(similarity: str) -> str:
    """The operator's similarity for a loss's: cosine runs as dot on normalised rows."""
    return "dot" if similarity == "cosine" else similarity


def _kernel_dtype(x: Tensor) -> Tensor:
    """``x`` upcast to float32 when it is half precision and its device has no half-precision kernel."""
    if x.dtype in (torch.float16, torch.bfloat16) and not _ops.native_half_precision(x.device):
        return x.float()
    return x


def _normalized(x: Tensor) -> Tensor:
    """Rows scaled to unit L2 norm; half precision is normalised in float32 and rounded once, so
    the normalisation's backward (whose terms cancel) runs in float32 too."""
    if x.dtype in (torch.float16, torch.bfloat16):
        return F.normalize(x.float(), dim=1).to(x.dtype)
    return F.normalize(x, dim=1)


def kernel_inputs(similarity: str, *xs: Tensor) -> tuple[str, list[Tensor]]:
    """Normalise for cosine; upcast half precision where no half-precision kernel exists."""
    out = [_kernel_dtype(x) for x in xs]
    if similarity == "cosine":
        out = [_normalized(x) for x in out]
    return _kernel_similarity(similarity), out


def positive_similarity(a: Tensor, b: Tensor, kernel_similarity: str) -> Tensor:
    """sim(a_i, b_i) row by row, O(M * D), in the (float32 or float64) precision of the LSEs."""
    dtype = _ops.lse_dtype(a.dtype)
    a, b = a.to(dtype), b.to(dtype)
    if kernel_similarity == "dot":
        return (a * b).sum(1)
    if kernel_similarity == "euclidean":
        return -(a - b).square().sum(1)
    return -(a - b).abs().sum(1)


def tile_operands(similarity: str, a: Tensor, b: Tensor) -> tuple[str, Tensor, Tensor]:
    """(kernel similarity, ka, kb) for an operator that takes the positive pairs from its tiles:
    the features as given (half precision upcast where needed: no copy of float32/float64 rows),
    and for cosine their normalisation, on CPU by the ``operands`` op."""
    ka, kb = _kernel_dtype(a), _kernel_dtype(b)
    if similarity != "cosine":
        return similarity, ka, kb
    if ka.device.type == "cpu" and ka.dtype in (torch.float32, torch.float64) and _ops.has_operands_op():
        short, long_ = (ka, kb) if ka.shape[0] <= kb.shape[0] else (kb, ka)
        ks, kl, _ = _ops.operands(short, long_, similarity)
        ka, kb = (ks, kl) if short is ka else (kl, ks)
        return "dot", ka, kb
    return "dot", _normalized(ka), _normalized(kb)


def paired_operands(similarity: str, a: Tensor, b: Tensor) -> tuple[str, Tensor, Tensor, Tensor]:
    """(kernel similarity, ka, kb, pos) with pos_i = sim(ka_i, kb_i) for the M <= N rows of ``a``:
    what ``kernel_inputs`` and ``positive_similarity`` give, in one op where it exists."""
    ka, kb = _kernel_dtype(a), _kernel_dtype(b)
    if ka.device.type == "cpu" and ka.dtype in (torch.float32, torch.float64) and _ops.has_operands_op():
        ka, kb, pos = _ops.operands(ka, kb, similarity)
        return _kernel_similarity(similarity), ka, kb, pos
    ksim, (ka, kb) = kernel_inputs(similarity, ka, kb)
    return ksim, ka, kb, positive_similarity(ka, kb[: ka.shape[0]], ksim)
