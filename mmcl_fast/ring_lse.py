"""The log-sum-exp statistics of the distributed InfoNCE losses, computed on a ring of ranks.

Rank r holds its B rows a_r, b_r of a global batch of B_g = W * B pairs, and the logits are
L_ij = s * sim(a_i, b_j). :class:`RingLSE` returns, on rank r,

* for its rows i:    the LSE over all B_g columns,  row_i = log sum_j exp(L_ij);
* for its columns j: the LSE over all B_g rows,     col_j = log sum_i exp(L_ij)  (optional);

with label-aware positives (int64 ids, equal id = positive) each as two LSEs, over the negatives
and over the positives. The rows of b travel around the ring (:class:`mmcl_fast.ring.RingPass`),
one B x B tile pass per step with the next chunk in flight:

* forward: each rank merges its row statistics online (exact ``logaddexp``, no fixed maximum);
  each chunk's column statistics travel one step behind it, each holder merging its block's
  partials, and arrive home complete after W steps;
* backward: the chunks travel again with their complete column statistics and the upstream
  gradient of those, plus the dY accumulator one step behind; each holder adds its block's share
  (the operator's ``lse_bwd`` / ``label_lse_bwd`` with the complete LSEs) and every accumulator
  arrives at its owner holding the sum over all ranks' blocks. dX and the scale's gradient stay
  local (the scale's is this rank's blocks' share: the caller sums it over ranks).

Extra memory per rank: two or three B x D chunks and the O(B) statistics in flight, whatever W.
The caller's autograd graph sees the statistics of its own rows and columns only; the gradients
it receives for a_r and b_r are those of the sum over ranks of every rank's use of them.
"""
from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor

from . import _ops
from .options import KernelOptions
from .ring import RingPass


def _merge(acc: list[Tensor] | None, part: list[Tensor]) -> list[Tensor]:
    return part if acc is None else [torch.logaddexp(x, y) for x, y in zip(acc, part)]


class _Block:
    """The operator calls of one B x B block: its statistics and their backward, plain or with ids.
    Statistics are lists (plain: [lse]; labels: [lse over negatives, lse over positives])."""

    def __init__(self, similarity: str, opts: KernelOptions, labels: bool, compute_col: bool):
        self.similarity, self.opts, self.labels, self.compute_col = similarity, opts, labels, compute_col

    def forward(self, a, chunk, s, ids, chunk_ids) -> tuple[list[Tensor], list[Tensor]]:
        if not self.labels:
            row, col = torch.ops.mmcl_fast.lse_fwd(a, chunk, s, self.similarity, False, self.compute_col,
                                                   *self.opts.op_arguments())
            return [row], [col]
        rn, cn, rp, cp, _, _ = torch.ops.mmcl_fast.label_lse_fwd(
            a, chunk, s, ids, chunk_ids, self.similarity, False, self.compute_col, *self.opts.op_arguments())
        return [rn, rp], [cn, cp]

    def backward(self, grad_rows, grad_cols, a, chunk, s, ids, chunk_ids, rows, cols, mask):
        checks, math_path = self.opts.checks, self.opts.cuda_math_path
        if not self.labels:
            return torch.ops.mmcl_fast.lse_bwd(grad_rows[0], grad_cols[0], a, chunk, s, rows[0], cols[0],
                                               self.similarity, False, mask, checks, math_path)
        # the label op's upstream: (row_neg, col_neg, row_pos, col_pos, row_sum, col_sum)
        grads = [grad_rows[0], grad_cols[0], grad_rows[1], grad_cols[1], torch.zeros_like(grad_rows[0]),
                 torch.zeros_like(grad_cols[0])]
        lse = [rows[0], cols[0], rows[1], cols[1]]
        return torch.ops.mmcl_fast.label_lse_bwd(grads, a, chunk, s, ids, chunk_ids, lse, self.similarity, False,
                                                 mask, checks, math_path)


class RingLSE(torch.autograd.Function):
    """``RingLSE.apply(a, b, s, similarity, group, opts, compute_col, ids)`` -> the statistics of
    this rank's rows, then of its columns (empty tensors unless ``compute_col``): ``(row, col)``
    without ids, ``(row_neg, row_pos, col_neg, col_pos)`` with them. ``a``, ``b`` are kernel
    inputs (normalised for cosine), ``s`` a one-element scale, ``ids`` int64 [B] or None."""

    @staticmethod
    def forward(ctx, a, b, s, similarity, group, opts, compute_col, ids=None):
        _ops.load_backend()
        labels = ids is not None
        block = _Block(similarity, opts, labels, compute_col)
        w = dist.get_world_size(group)
        ring = RingPass(group)
        own = [b] + ([ids] if labels else [])
        chunk, rows, col_done = own, None, None
        # Step k: this rank holds the chunk of rank r - k. In flight during its block: that chunk on
        # to the right, the next one in from the left, the finished column statistics of the
        # previous step's chunk on to the right and those of this step's chunk (every earlier
        # holder's merge) in from the left.
        for step in range(w):
            sends = (chunk if step + 1 < w else []) + (col_done if compute_col and step > 0 else [])
            if sends:
                ring.start(sends)
            row_part, col_part = block.forward(a, chunk[0], s, ids, chunk[1] if labels else None)
            rows = _merge(rows, row_part)
            received = ring.finish() if sends else []
            if step + 1 < w:
                chunk, received = received[:len(own)], received[len(own):]
            if compute_col:
                col_done = col_part if step == 0 else _merge(received, col_part)
        if compute_col:  # the last merge belongs to the right neighbour; this rank's comes from the left
            ring.start(col_done)
            cols = ring.finish()
        else:
            cols = [rows[0].new_empty(0) for _ in rows]
        ctx.save_for_backward(a, b, s, ids, *rows, *cols)
        ctx.block, ctx.group, ctx.n_stats = block, group, len(rows)
        return (*rows, *cols)

    @staticmethod
    def backward(ctx, *grads):
        a, b, s, ids, *stats = ctx.saved_tensors
        block, k = ctx.block, ctx.n_stats
        rows, cols = stats[:k], stats[k:]
        need_a, need_b, need_s = ctx.needs_input_grad[:3]
        mask = [need_a, need_b, need_s]
        labels, compute_col = block.labels, block.compute_col
        w = dist.get_world_size(ctx.group)
        ring = RingPass(ctx.group)

        def upstream(g, like):
            return torch.zeros_like(like) if g is None else g.contiguous()

        grad_rows = [upstream(g, x) for g, x in zip(grads[:k], rows)]
        grad_cols = [upstream(g, x) for g, x in zip(grads[k:], cols)]
        # what travels with a chunk: its rows (and ids), and its complete column statistics with
        # their upstream gradients (the owner's)
        own = [b] + ([ids] if labels else []) + ((list(cols) + grad_cols) if compute_col else [])
        n_own = len(own)
        acc_dtype = _ops.lse_dtype(b.dtype)
        da = torch.zeros_like(a) if need_a else None
        ds = torch.zeros_like(s) if need_s else None
        chunk, done = own, None
        for step in range(w):
            sends = (chunk if step + 1 < w else []) + ([done] if need_b and step > 0 else [])
            if sends:
                ring.start(sends)
            y, y_ids = chunk[0], (chunk[1] if labels else None)
            tail = chunk[2 if labels else 1:]
            if compute_col:
                c_stats, c_grads = tail[:k], tail[k:]
            else:
                empty = rows[0].new_empty(0)
                c_stats, c_grads = [empty] * k, [empty] * k
            dxp, dyp, dsp = block.backward(grad_rows, c_grads, a, y, s, ids, y_ids, rows, c_stats, mask)
            if need_a:
                da += dxp
            if need_s:
                ds += dsp
            dxp = None
            received = ring.finish() if sends else []
            sends = done = None
            if step + 1 < w:
                chunk, received = received[:n_own], received[n_own:]
            if need_b:
                dyp = dyp.to(acc_dtype)
                done = dyp if step == 0 else received[0].add_(dyp)
            received = dyp = None  # only the chunk, its statistics and the accumulator cross steps
        db = None
        if need_b:  # the last accumulator belongs to the right neighbour; this rank's comes from the left
            ring.start([done])
            (db,) = ring.finish()
            db = db.to(b.dtype)
        return da, db, ds, None, None, None, None, None
