"""mmcl-fast: fused contrastive losses that never materialise the B x B logits matrix.

Public API::

    import mmcl_fast as mf
    mf.symmetric_infonce(img, txt, temperature=0.07)             # CLIP loss
    mf.infonce(query, keys, labels=None, temperature=0.1)         # one direction, extra negatives
    mf.nt_xent(v1, v2, temperature=0.1)                           # SimCLR / NT-Xent
    mf.siglip_loss(img, txt, logit_scale, logit_bias)             # SigLIP's sigmoid loss
    mf.symmetric_infonce(img, txt, temperature=0.07, ids=caption_ids)  # duplicates are positives
    mf.supcon_loss(features, labels, temperature=0.1)             # SupCon, [N, V, D] or [N, D]
    mf.comm_loss([z1_img, z1_txt, z1_full], [z2_img, z2_txt, z2_full])  # CoMM (multimodal views)
    mf.symmetric_lpsimclr(h1, h2, h1_neg, h2_neg, temperature=1.0)  # the simulations' estimator
    mf.pairwise_lse(x, y, scale, "dot")                           # the underlying operator
    mf.pairwise_label_lse(x, y, scale, row_ids, col_ids, "dot")   # its label-aware form
    mf.backend_info()                                             # which implementation is active
    mf.symmetric_infonce(img, txt, temperature=0.07,               # per-call kernel options: checks,
                         kernel_options=mf.KernelOptions(deterministic=True))  # determinism, math path
    mf.set_checks(True)                   # NaN/scale/label checks on CUDA too (they sync the host)
    mf.ClipLoss(...)                          # drop-in for open_clip's ClipLoss (multi-process too)
    mf.SigLipLoss(...)                        # drop-in for open_clip's SigLipLoss (multi-process too)
    mf.SymmetricInfoNCE(temperature=0.07, learnable=True)         # modules owning the scale
    mf.NTXent(temperature=0.1)
    mf.distributed.symmetric_infonce(a_local, b_local, ...)       # global loss over all ranks
"""
from . import distributed
from ._ops import (
    TorchMismatchError,
    backend_info,
    cpu_exp_rate,
    force_cpu_isa,
    pairwise_label_lse,
    pairwise_label_softplus,
    pairwise_lse,
    pairwise_softplus,
    pairwise_softplus_total,
)
from .clip_loss import ClipLoss
from .comm import comm_loss
from .losses import infonce, lpsimclr, nt_xent, symmetric_infonce, symmetric_lpsimclr
from .modules import NTXent, SymmetricInfoNCE
from .options import KernelOptions, set_checks
from .sigmoid_loss import SigLipLoss, siglip_loss
from .supcon import SupConLoss, supcon_loss

__all__ = ["symmetric_infonce", "infonce", "nt_xent", "siglip_loss", "supcon_loss", "comm_loss", "lpsimclr",
           "symmetric_lpsimclr", "pairwise_lse", "pairwise_label_lse", "pairwise_label_softplus", "pairwise_softplus",
           "pairwise_softplus_total",
           "SigLipLoss", "SupConLoss",
           "backend_info", "cpu_exp_rate", "force_cpu_isa", "TorchMismatchError", "KernelOptions", "set_checks",
           "ClipLoss", "SymmetricInfoNCE", "NTXent", "distributed"]
__version__ = "0.1.0"
