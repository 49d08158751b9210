"""Pure-PyTorch chunked implementations of the operator pairs.

Same semantics as the compiled ``mmcl_fast::lse_fwd`` / ``lse_bwd`` and ``softplus_fwd`` /
``softplus_bwd`` (see ``mmcl_fast/_ops.py``), processing ``chunk`` rows of X at a time, so memory
is O(chunk * N) instead of O(M * N). It serves three purposes: the fallback operator when the
extension cannot be compiled, the softplus pair's CUDA kernels until the CUDA tile engine has
that reduction, and the "chunked PyTorch" baseline of the benchmarks.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

_CHUNK_ELEMS = 1 << 22  # elements of one (chunk x N) logit block


def _rows_per_chunk(n: int, d: int, similarity: str) -> int:
    per_row = n * (d if similarity == "l1" else 1)
    return max(1, _CHUNK_ELEMS // max(1, per_row))


def _sim_block(xc: Tensor, y: Tensor, similarity: str, yn: Tensor | None) -> Tensor:
    if similarity == "dot":
        return xc @ y.T
    if similarity == "euclidean":
        return 2 * (xc @ y.T) - xc.square().sum(1, keepdim=True) - yn[None, :]
    if similarity == "l1":
        return -(xc[:, None, :] - y[None, :, :]).abs().sum(-1)
    raise ValueError(f"unknown similarity {similarity!r} (expected dot, euclidean or l1)")


def _centred_if_euclidean(x: Tensor, y: Tensor, similarity: str) -> tuple[Tensor, Tensor]:
    """x - c, y - c with c their joint mean (float64 sums) for "euclidean", else x, y unchanged.

    -||x_i - y_j||^2 and its gradients do not change under a common shift, and the expansion
    2 x.y - |x|^2 - |y|^2 of :func:`_sim_block` then works at the scale of the data's spread
    instead of cancelling catastrophically when the embeddings share a large offset.
    """
    if similarity != "euclidean":
        return x, y
    centre = (x.sum(0, dtype=torch.float64) + y.sum(0, dtype=torch.float64)) / (x.shape[0] + y.shape[0])
    centre = centre.to(x.dtype)
    return x - centre, y - centre


def _compute_precision(x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    """float32 for half/bfloat16 operands (the LSEs are float32 for them, as in the fake kernels)."""
    if x.dtype in (torch.float16, torch.bfloat16):
        return x.float(), y.float()
    return x, y


def _check_scale(scale: Tensor) -> float:
    s = float(scale.reshape(()).item())
    if not (math.isfinite(s) and s > 0):
        raise RuntimeError(f"scale (1/temperature or logit_scale) must be positive and finite, got {s}")
    return s


def _mask_diagonal(block: Tensor, i0: int, value: float) -> None:
    rows = torch.arange(block.shape[0], device=block.device)
    cols = rows + i0
    keep = cols < block.shape[1]
    block[rows[keep], cols[keep]] = value


def _apply_block_gradient(g: Tensor, xc: Tensor, y: Tensor, s: float, similarity: str,
                          dx_block: Tensor | None, dy: Tensor | None) -> None:
    """dx_block = s sum_j g_ij d sim_ij / d x_i (written) and dy += s sum_i g_ij d sim_ij / d y_j
    for the block of rows xc (either may be None: not requested)."""
    if similarity == "dot":
        if dx_block is not None:
            dx_block.copy_(s * (g @ y))
        if dy is not None:
            dy += s * (g.T @ xc)
    elif similarity == "euclidean":
        if dx_block is not None:
            dx_block.copy_(2 * s * (g @ y - g.sum(1, keepdim=True) * xc))
        if dy is not None:
            dy += 2 * s * (g.T @ xc - g.sum(0)[:, None] * y)
    elif dx_block is not None or dy is not None:
        sign = torch.sign(xc[:, None, :] - y[None, :, :])
        if dx_block is not None:
            dx_block.copy_(-s * torch.einsum("ij,ijd->id", g, sign))
        if dy is not None:
            dy += s * torch.einsum("ij,ijd->jd", g, sign)


def lse_fwd(x: Tensor, y: Tensor, scale: Tensor, similarity: str, mask_diag: bool,
            compute_col: bool, checks: bool = False, deterministic: bool = False,
            math_path: str = "auto") -> tuple[Tensor, Tensor]:
    """row_lse_i = log sum_j exp(s sim(x_i, y_j)), col_lse_j = log sum_i exp(s sim(x_i, y_j)).

    The kernel options (``checks``, ``deterministic``, ``math_path``) concern the CUDA kernels; this
    implementation is deterministic and has no math paths, so it ignores them."""
    s = _check_scale(scale)
    x, y = _centred_if_euclidean(*_compute_precision(x, y), similarity)
    m, n = x.shape[0], y.shape[0]
    yn = y.square().sum(1) if similarity == "euclidean" else None
    row = x.new_empty(m)
    col = x.new_full((n if compute_col else 0,), -math.inf)
    step = _rows_per_chunk(n, x.shape[1], similarity)
    for i0 in range(0, m, step):
        logits = s * _sim_block(x[i0:i0 + step], y, similarity, yn)
        if mask_diag:
            _mask_diagonal(logits, i0, -math.inf)
        row[i0:i0 + step] = torch.logsumexp(logits, 1)
        if compute_col:
            col = torch.logaddexp(col, torch.logsumexp(logits, 0))
    return row, col


def lse_bwd(grad_row: Tensor, grad_col: Tensor, x: Tensor, y: Tensor, scale: Tensor,
            row_lse: Tensor, col_lse: Tensor, similarity: str, mask_diag: bool,
            output_mask=(True, True, True), checks: bool = False,
            math_path: str = "auto") -> tuple[Tensor, Tensor, Tensor]:
    """dx, dy, dscale from G_ij = gr_i softmax_row_ij + gc_j softmax_col_ij (recomputed per chunk).

    Outputs whose ``output_mask`` entry is False are returned empty (shape [0]) and not computed.
    Half-precision inputs are computed in float32; dx and dy come back in the input dtype.
    """
    s = _check_scale(scale)
    need_dx, need_dy, need_dscale = output_mask
    in_dtype = x.dtype
    x, y = _centred_if_euclidean(*_compute_precision(x, y), similarity)
    grad_row, row_lse = grad_row.to(x.dtype), row_lse.to(x.dtype)
    grad_col, col_lse = grad_col.to(x.dtype), col_lse.to(x.dtype)
    m, n = x.shape[0], y.shape[0]
    use_col = grad_col.numel() > 0
    yn = y.square().sum(1) if similarity == "euclidean" else None
    dx = torch.zeros_like(x) if need_dx else None
    dy = torch.zeros_like(y) if need_dy else None
    dscale = x.new_zeros((), dtype=torch.float64)
    step = _rows_per_chunk(n, x.shape[1], similarity)
    for i0 in range(0, m, step):
        xc = x[i0:i0 + step]
        logits = s * _sim_block(xc, y, similarity, yn)
        g = grad_row[i0:i0 + step, None] * torch.exp(logits - row_lse[i0:i0 + step, None])
        if use_col:
            g = g + grad_col[None, :] * torch.exp(logits - col_lse[None, :])
        if mask_diag:
            _mask_diagonal(g, i0, 0.0)
            _mask_diagonal(logits, i0, 0.0)
        dscale += (g * logits).sum().double() / s
        _apply_block_gradient(g, xc, y, s, similarity, dx[i0:i0 + step] if need_dx else None, dy)
    empty = x.new_empty((0,), dtype=in_dtype)
    return (dx.to(in_dtype) if need_dx else empty, dy.to(in_dtype) if need_dy else empty,
            dscale.to(scale.dtype).reshape(scale.shape) if need_dscale else scale.new_empty((0,)))



def _label_masks(row_ids: Tensor, col_ids: Tensor, i0: int, rows: int, n_cols: int,
                 mask_diag: bool) -> tuple[Tensor, Tensor]:
    """(positive, negative) boolean masks of the block of rows [i0, i0 + rows): equal ids are
    positives, the rest negatives, and (i, i) neither when ``mask_diag``; without ids (both empty)
    the pairs (i, i) are the positives."""
    if row_ids.numel() == 0 and col_ids.numel() == 0:
        if mask_diag:
            raise RuntimeError("label_lse: mask_diag needs row_ids and col_ids (without ids the pairs (i, i) "
                               "are the positives)")
        pos = torch.zeros(rows, n_cols, dtype=torch.bool, device=row_ids.device)
        _mask_diagonal(pos, i0, True)
        return pos, ~pos
    pos = row_ids[i0:i0 + rows, None] == col_ids[None, :]
    neg = ~pos
    if mask_diag:
        _mask_diagonal(pos, i0, False)
        _mask_diagonal(neg, i0, False)
    return pos, neg


def label_lse_fwd(x: Tensor, y: Tensor, scale: Tensor, row_ids: Tensor, col_ids: Tensor, similarity: str,
                  mask_diag: bool, compute_col: bool, checks: bool = False, deterministic: bool = False,
                  math_path: str = "auto") -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    """The label-aware statistics of ``mmcl_fast::label_lse_fwd`` (positives: equal ids):
    (row_neg, col_neg, row_pos, col_pos, row_pos_sum, col_pos_sum), the LSE of each row (column)
    over its negatives and over its positives (-inf over none) and the sum of its positive logits;
    the column outputs are empty unless ``compute_col``. The kernel options are ignored."""
    s = _check_scale(scale)
    x, y = _centred_if_euclidean(*_compute_precision(x, y), similarity)
    m, n = x.shape[0], y.shape[0]
    yn = y.square().sum(1) if similarity == "euclidean" else None
    row_ids, col_ids = row_ids.to(x.device), col_ids.to(x.device)
    row_neg, row_pos, row_sum = x.new_empty(m), x.new_empty(m), x.new_empty(m)
    nc = n if compute_col else 0
    col_neg, col_pos = x.new_full((nc,), -math.inf), x.new_full((nc,), -math.inf)
    col_sum = x.new_zeros(nc)
    step = _rows_per_chunk(n, x.shape[1], similarity)
    for i0 in range(0, m, step):
        logits = s * _sim_block(x[i0:i0 + step], y, similarity, yn)
        pos, neg = _label_masks(row_ids, col_ids, i0, logits.shape[0], logits.shape[1], mask_diag)
        neg_logits = logits.masked_fill(~neg, -math.inf)
        pos_logits = logits.masked_fill(~pos, -math.inf)
        pos_only = logits.masked_fill(~pos, 0.0)
        row_neg[i0:i0 + step] = torch.logsumexp(neg_logits, 1)
        row_pos[i0:i0 + step] = torch.logsumexp(pos_logits, 1)
        row_sum[i0:i0 + step] = pos_only.sum(1)
        if compute_col:
            col_neg = torch.logaddexp(col_neg, torch.logsumexp(neg_logits, 0))
            col_pos = torch.logaddexp(col_pos, torch.logsumexp(pos_logits, 0))
            col_sum += pos_only.sum(0)
    return row_neg, col_neg, row_pos, col_pos, row_sum, col_sum


def _softmax_term(grad: Tensor, logits: Tensor, lse: Tensor, mask: Tensor) -> Tensor:
    """grad * exp(logits - lse) where mask, else 0 (never inf * 0: lse is -inf over an empty set)."""
    return torch.where(mask, grad * torch.exp(torch.where(mask, logits - lse, -math.inf)), 0.0)


def label_lse_bwd(grad_row_neg: Tensor, grad_col_neg: Tensor, grad_row_pos: Tensor, grad_col_pos: Tensor,
                  grad_row_sum: Tensor, grad_col_sum: Tensor, x: Tensor, y: Tensor, scale: Tensor,
                  row_ids: Tensor, col_ids: Tensor, row_neg: Tensor, col_neg: Tensor, row_pos: Tensor,
                  col_pos: Tensor, similarity: str, mask_diag: bool, output_mask=(True, True, True),
                  checks: bool = False, math_path: str = "auto") -> tuple[Tensor, Tensor, Tensor]:
    """dx, dy, dscale of :func:`label_lse_fwd` from
    G_ij = [neg] (gRN_i e^{L_ij - row_neg_i} + gCN_j e^{L_ij - col_neg_j})
         + [pos] (gRP_i e^{L_ij - row_pos_i} + gCP_j e^{L_ij - col_pos_j} + gRS_i + gCS_j),
    recomputed per chunk; the column gradients may be empty (no column term)."""
    s = _check_scale(scale)
    need_dx, need_dy, need_dscale = output_mask
    in_dtype = x.dtype
    x, y = _centred_if_euclidean(*_compute_precision(x, y), similarity)
    row_ids, col_ids = row_ids.to(x.device), col_ids.to(x.device)
    gr = [t.to(x.dtype) for t in (grad_row_neg, grad_row_pos, grad_row_sum, row_neg, row_pos)]
    use_col = grad_col_neg.numel() > 0
    gc = [t.to(x.dtype) for t in (grad_col_neg, grad_col_pos, grad_col_sum, col_neg, col_pos)] if use_col else None
    yn = y.square().sum(1) if similarity == "euclidean" else None
    dx = torch.zeros_like(x) if need_dx else None
    dy = torch.zeros_like(y) if need_dy else None
    dscale = x.new_zeros((), dtype=torch.float64)
    step = _rows_per_chunk(y.shape[0], x.shape[1], similarity)
    for i0 in range(0, x.shape[0], step):
        xc = x[i0:i0 + step]
        sl = slice(i0, i0 + step)
        logits = s * _sim_block(xc, y, similarity, yn)
        pos, neg = _label_masks(row_ids, col_ids, i0, logits.shape[0], logits.shape[1], mask_diag)
        g_rn, g_rp, g_rs, l_rn, l_rp = (t[sl, None] for t in gr)
        g = (_softmax_term(g_rn, logits, l_rn, neg) + _softmax_term(g_rp, logits, l_rp, pos)
             + torch.where(pos, g_rs, 0.0))
        if use_col:
            g_cn, g_cp, g_cs, l_cn, l_cp = (t[None, :] for t in gc)
            g = (g + _softmax_term(g_cn, logits, l_cn, neg) + _softmax_term(g_cp, logits, l_cp, pos)
                 + torch.where(pos, g_cs, 0.0))
        dscale += (g * logits).sum().double() / s
        _apply_block_gradient(g, xc, y, s, similarity, dx[sl] if need_dx else None, dy)
    empty = x.new_empty((0,), dtype=in_dtype)
    return (dx.to(in_dtype) if need_dx else empty, dy.to(in_dtype) if need_dy else empty,
            dscale.to(scale.dtype).reshape(scale.shape) if need_dscale else scale.new_empty((0,)))


def _check_bias(bias: Tensor) -> float:
    if bias.numel() != 1:
        raise RuntimeError(f"bias (logit_bias) must hold exactly one element, got shape {tuple(bias.shape)}")
    t = float(bias.reshape(()).item())
    if not math.isfinite(t):
        raise RuntimeError(f"bias (logit_bias) must be finite, got {t}")
    return t


def _softplus(z: Tensor) -> Tensor:
    """max(z, 0) + log1p(exp(-|z|)): exact at every z (F.softplus returns z above its threshold)."""
    return z.clamp_min(0) + torch.log1p(torch.exp(-z.abs()))


def _softplus_rows(x: Tensor, y: Tensor, scale: Tensor, bias: Tensor, similarity: str, signs, mask_diag: bool,
                   grad_row: Tensor | None = None, output_mask=(True, True, True, True)):
    """The softplus pair per chunk of rows: with ``grad_row`` None, row_i = sum_j softplus(-z_ij (L_ij + t));
    else (dx, dy, dscale, dbias) from G_ij = -z_ij gr_i sigmoid(-z_ij (L_ij + t)). ``signs(i0, rows, n)``
    gives -z of a block (None: every pair a negative, -z = +1); ``mask_diag`` leaves (i, i) out."""
    s, t = _check_scale(scale), _check_bias(bias)
    in_dtype = x.dtype
    x, y = _centred_if_euclidean(*_compute_precision(x, y), similarity)
    n = y.shape[0]
    yn = y.square().sum(1) if similarity == "euclidean" else None
    step = _rows_per_chunk(n, x.shape[1], similarity)
    forward = grad_row is None
    need_dx, need_dy, need_dscale, need_dbias = output_mask
    if forward:
        row = x.new_empty(x.shape[0])
    else:
        grad_row = grad_row.to(x.dtype)
        dx = torch.zeros_like(x) if need_dx else None
        dy = torch.zeros_like(y) if need_dy else None
        dscale = x.new_zeros((), dtype=torch.float64)
        dbias = x.new_zeros((), dtype=torch.float64)
    for i0 in range(0, x.shape[0], step):
        rows = min(step, x.shape[0] - i0)
        xc = x[i0:i0 + rows]
        logits = s * _sim_block(xc, y, similarity, yn)
        sign = signs(i0, rows, n).to(x.dtype) if signs is not None else 1.0
        if forward:
            terms = _softplus(sign * (logits + t))
            if mask_diag:
                _mask_diagonal(terms, i0, 0.0)
            row[i0:i0 + rows] = terms.sum(1)
            continue
        g = grad_row[i0:i0 + rows, None] * sign * torch.sigmoid(sign * (logits + t))
        if mask_diag:
            _mask_diagonal(g, i0, 0.0)
        dscale += (g * logits).sum().double() / s
        dbias += g.sum().double()
        _apply_block_gradient(g, xc, y, s, similarity, dx[i0:i0 + rows] if need_dx else None, dy)
    if forward:
        return row
    empty = x.new_empty((0,), dtype=in_dtype)
    return (dx.to(in_dtype) if need_dx else empty, dy.to(in_dtype) if need_dy else empty,
            dscale.to(scale.dtype).reshape(scale.shape) if need_dscale else scale.new_empty((0,)),
            dbias.to(bias.dtype).reshape(bias.shape) if need_dbias else bias.new_empty((0,)))


def softplus_fwd(x: Tensor, y: Tensor, scale: Tensor, bias: Tensor, similarity: str, mask_diag: bool,
                 checks: bool = False, math_path: str = "auto") -> Tensor:
    """row_i = sum_j softplus(s sim(x_i, y_j) + t), t = bias, j == i left out when ``mask_diag``
    (the kernel options are ignored)."""
    return _softplus_rows(x, y, scale, bias, similarity, None, mask_diag)


def softplus_bwd(grad_row: Tensor, x: Tensor, y: Tensor, scale: Tensor, bias: Tensor, similarity: str,
                 mask_diag: bool, output_mask=(True, True, True, True), checks: bool = False,
                 math_path: str = "auto") -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """dx, dy, dscale, dbias from G_ij = gr_i sigmoid(s sim_ij + t), recomputed per chunk; outputs
    whose ``output_mask`` entry is False are empty (shape [0])."""
    return _softplus_rows(x, y, scale, bias, similarity, None, mask_diag, grad_row, output_mask)


def _label_signs(row_ids: Tensor, col_ids: Tensor, i0: int, rows: int, n_cols: int) -> Tensor:
    """-z_ij of the block of rows [i0, i0 + rows): -1 for the positives (equal ids; the pairs (i, i)
    without ids), +1 for the negatives."""
    pos, _ = _label_masks(row_ids, col_ids, i0, rows, n_cols, False)
    return 1.0 - 2.0 * pos.to(torch.float64)


def _label_sign_blocks(row_ids: Tensor, col_ids: Tensor):
    return lambda i0, rows, n: _label_signs(row_ids, col_ids, i0, rows, n)


def label_softplus_fwd(x: Tensor, y: Tensor, scale: Tensor, bias: Tensor, row_ids: Tensor, col_ids: Tensor,
                       similarity: str, checks: bool = False, math_path: str = "auto") -> Tensor:
    """row_i = sum_j softplus(-z_ij (s sim(x_i, y_j) + t)), z_ij = +1 for the positives (the kernel
    options are ignored)."""
    return _softplus_rows(x, y, scale, bias, similarity, _label_sign_blocks(row_ids, col_ids), False)


def label_softplus_bwd(grad_row: Tensor, x: Tensor, y: Tensor, scale: Tensor, bias: Tensor, row_ids: Tensor,
                       col_ids: Tensor, similarity: str, output_mask=(True, True, True, True), checks: bool = False,
                       math_path: str = "auto") -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """dx, dy, dscale, dbias from G_ij = -z_ij gr_i sigmoid(-z_ij (s sim_ij + t)), per chunk."""
    return _softplus_rows(x, y, scale, bias, similarity, _label_sign_blocks(row_ids, col_ids), False, grad_row,
                          output_mask)


def label_softplus_total(x: Tensor, y: Tensor, scale: Tensor, bias: Tensor, row_ids: Tensor, col_ids: Tensor,
                         similarity: str, output_mask=(True, True, True, True), checks: bool = False,
                         math_path: str = "auto") -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """(sum of :func:`label_softplus_fwd`, and :func:`label_softplus_bwd` for a unit gradient)."""
    row = label_softplus_fwd(x, y, scale, bias, row_ids, col_ids, similarity)
    grads = label_softplus_bwd(torch.ones_like(row), x, y, scale, bias, row_ids, col_ids, similarity, output_mask)
    return (row.sum(dtype=torch.float64).to(row.dtype), *grads)


def softplus_total(x: Tensor, y: Tensor, scale: Tensor, bias: Tensor, similarity: str, diagonal: str,
                   output_mask=(True, True, True, True), checks: bool = False,
                   math_path: str = "auto") -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """(the total of ``mmcl_fast::softplus_total``, and its gradients): :func:`softplus_fwd` summed
    and :func:`softplus_bwd` with an upstream gradient of 1 per row, the diagonal masked unless it
    is "negative"; for "positive", the pairs (i, i) added from their O(n D) terms."""
    if diagonal not in ("negative", "masked", "positive"):
        raise RuntimeError(f"diagonal must be 'negative', 'masked' or 'positive', got {diagonal!r}")
    mask = diagonal != "negative"
    row = softplus_fwd(x, y, scale, bias, similarity, mask)
    dx, dy, ds, dt = softplus_bwd(torch.ones_like(row), x, y, scale, bias, similarity, mask, output_mask)
    total = row.sum(dtype=torch.float64)
    if diagonal == "positive":  # the pairs (i, i): softplus(-z), z = s sim_ii + t; d/dz = -sigmoid(-z)
        n = min(x.shape[0], y.shape[0])
        xp, yp = _centred_if_euclidean(*_compute_precision(x[:n], y[:n]), similarity)
        if similarity == "euclidean":  # centred with the whole of x and y, as softplus_fwd/bwd do
            xs, ys = _centred_if_euclidean(*_compute_precision(x, y), similarity)
            xp, yp = xs[:n], ys[:n]
        s, t = _check_scale(scale), _check_bias(bias)
        diff = xp - yp
        sim = {"dot": (xp * yp).sum(1), "euclidean": -diff.square().sum(1), "l1": -diff.abs().sum(1)}[similarity]
        z = s * sim + t
        total = total + torch.logaddexp(-z, torch.zeros_like(z)).sum(dtype=torch.float64)
        g = -torch.sigmoid(-z)
        ddx = {"dot": yp, "euclidean": -2 * diff, "l1": -torch.sign(diff)}[similarity]
        ddy = {"dot": xp, "euclidean": 2 * diff, "l1": torch.sign(diff)}[similarity]
        if output_mask[0]:
            dx[:n] += (s * g[:, None] * ddx).to(dx.dtype)
        if output_mask[1]:
            dy[:n] += (s * g[:, None] * ddy).to(dy.dtype)
        if output_mask[2]:
            ds = ds + (g * sim).sum().to(ds.dtype)
        if output_mask[3]:
            dt = dt + g.sum().to(dt.dtype)
    return total.to(row.dtype), dx, dy, ds, dt


class ChunkedPairwiseLSE(torch.autograd.Function):
    """Autograd wrapper of the chunked pair outside the op registry, so that one process can run
    the losses on both the compiled and the pure-PyTorch implementation (the tests do)."""

    @staticmethod
    def forward(ctx, x, y, scale, similarity, mask_diag, compute_col):
        row, col = lse_fwd(x, y, scale, similarity, mask_diag, compute_col)
        ctx.save_for_backward(x, y, scale, row, col)
        ctx.similarity, ctx.mask_diag = similarity, mask_diag
        return row, col

    @staticmethod
    def backward(ctx, grad_row, grad_col):
        x, y, scale, row, col = ctx.saved_tensors
        gc = grad_col if (grad_col is not None and col.numel()) else row.new_empty(0)
        gr = grad_row if grad_row is not None else torch.zeros_like(row)
        need = ctx.needs_input_grad[:3]
        dx, dy, ds = lse_bwd(gr, gc, x, y, scale, row, col, ctx.similarity, ctx.mask_diag, need)
        return (dx if need[0] else None, dy if need[1] else None, ds if need[2] else None,
                None, None, None)
