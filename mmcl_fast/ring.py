"""Passing row chunks around the ranks of a process group, one neighbour step at a time, with the
transfer of the next chunk in flight while the current one is computed on.

Rank r sends to r + 1 and receives from r - 1 (mod W); after k steps it holds the chunk of rank
r - k. Only point-to-point operations (``torch.distributed.isend`` / ``irecv``), so each rank
holds O(chunk) memory whatever the world size. Used by the ring mode of the distributed sigmoid
loss (:mod:`mmcl_fast.sigmoid_loss`).
"""
from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor


def _global_rank(group, rank: int) -> int:
    return rank if group is None else dist.get_global_rank(group, rank)


class RingPass:
    """``start(tensors)`` sends ``tensors`` to the right neighbour and posts the receive of the
    left neighbour's (same shapes); ``finish()`` waits for both and returns what arrived. Between
    the two the caller computes on the tensors it holds (they are only read by the send)."""

    def __init__(self, group=None):
        world, rank = dist.get_world_size(group), dist.get_rank(group)
        self.group = group
        self.right = _global_rank(group, (rank + 1) % world)
        self.left = _global_rank(group, (rank - 1) % world)
        self._reqs, self._incoming = None, None

    def start(self, tensors: list[Tensor]) -> None:
        self._incoming = [torch.empty_like(t) for t in tensors]
        self._reqs = [dist.isend(t.contiguous(), self.right, group=self.group) for t in tensors]
        self._reqs += [dist.irecv(t, self.left, group=self.group) for t in self._incoming]

    def finish(self) -> list[Tensor]:
        for req in self._reqs:
            req.wait()
        out, self._reqs, self._incoming = self._incoming, None, None
        return out
