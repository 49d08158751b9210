// The schemas of mmcl_fast's operators, shared by ops.cpp (namespace mmcl_fast) and the emulated
// CUDA test build (csrc/cuda/emulation/emulated_ops.cpp, namespace mmcl_fast_emu).
//
// The kernel options arrive as the last arguments (mmcl_fast/options.py, KernelOptions), never
// from the environment: checks (the data-dependent checks on CUDA; the CPU kernels always check),
// deterministic (CUDA column LSEs without atomics; torch.use_deterministic_algorithms(True) turns
// it on too) and math_path ("auto", "simt" or "tc": the CUDA kernels' tile products). The CPU
// kernels accept and ignore them.
#pragma once

namespace mmcl_fast {

inline constexpr const char* kLseFwdSchema =
    "lse_fwd(Tensor x, Tensor y, Tensor scale, str similarity, bool mask_diag, bool compute_col,"
    " bool checks=False, bool deterministic=False, str math_path=\"auto\") -> (Tensor, Tensor)";
inline constexpr const char* kLseBwdSchema =
    "lse_bwd(Tensor grad_row, Tensor grad_col, Tensor x, Tensor y, Tensor scale, Tensor row_lse,"
    " Tensor col_lse, str similarity, bool mask_diag, bool[3] output_mask, bool checks=False,"
    " str math_path=\"auto\") -> (Tensor, Tensor, Tensor)";

// The label-aware pair: positives are the pairs with row_ids_i == col_ids_j (int64 ids; the pairs
// (i, i) are neither positive nor negative when mask_diag), negatives the rest. The forward returns
// (row_neg, col_neg, row_pos, col_pos, row_sum, col_sum): each row's (column's) LSE over its
// negatives and over its positives (-inf over none) and the sum of its positive logits; the
// column outputs are empty unless compute_col. The backward takes the six upstream gradients
// (column ones empty when the columns have none) and the four LSEs as lists.
inline constexpr const char* kLabelLseFwdSchema =
    "label_lse_fwd(Tensor x, Tensor y, Tensor scale, Tensor row_ids, Tensor col_ids, str similarity,"
    " bool mask_diag, bool compute_col, bool checks=False, bool deterministic=False, str math_path=\"auto\")"
    " -> (Tensor, Tensor, Tensor, Tensor, Tensor, Tensor)";
inline constexpr const char* kLabelLseBwdSchema =
    "label_lse_bwd(Tensor[] grads, Tensor x, Tensor y, Tensor scale, Tensor row_ids, Tensor col_ids,"
    " Tensor[] lse, str similarity, bool mask_diag, bool[3] output_mask, bool checks=False,"
    " str math_path=\"auto\") -> (Tensor, Tensor, Tensor)";

// The pairwise softplus pair of the sigmoid (SigLIP) loss: row_i = sum_j softplus(s sim(x_i, y_j) + t)
// with t = bias (one element, finite, any sign), j == i left out when mask_diag, and its backward
// (dx, dy, dscale, dbias).
inline constexpr const char* kSoftplusFwdSchema =
    "softplus_fwd(Tensor x, Tensor y, Tensor scale, Tensor bias, str similarity, bool mask_diag,"
    " bool checks=False, str math_path=\"auto\") -> Tensor";
inline constexpr const char* kSoftplusBwdSchema =
    "softplus_bwd(Tensor grad_row, Tensor x, Tensor y, Tensor scale, Tensor bias, str similarity,"
    " bool mask_diag, bool[4] output_mask, bool checks=False, str math_path=\"auto\") -> (Tensor, Tensor, Tensor, Tensor)";
// The losses' reductions over rows (mean, sum) need only the total: softplus_total returns
// sum_ij of softplus(L_ij + t) over the negatives and softplus(-(L_ii + t)) over the positives,
// with its gradients, computed in the same pass over the tiles where the kernels can (the autograd
// scales them by the upstream gradient, a scalar). diagonal: what the pairs (i, i) are:
// "negative" (like every other pair), "masked" (left out) or "positive".
inline constexpr const char* kSoftplusTotalSchema =
    "softplus_total(Tensor x, Tensor y, Tensor scale, Tensor bias, str similarity, str diagonal,"
    " bool[4] output_mask, bool checks=False, str math_path=\"auto\") -> (Tensor, Tensor, Tensor, Tensor, Tensor)";

// The label-aware sigmoid terms: row_i = sum_j softplus(-z_ij (s sim(x_i, y_j) + t)) with z_ij = +1
// where row_ids_i == col_ids_j (the pairs (i, i) when both ids are empty) and -1 elsewhere: the
// whole per-anchor sigmoid loss, positives included; and its backward (dx, dy, dscale, dbias) with
// G_ij = -z_ij grad_row_i sigmoid(-z_ij (L_ij + t)).
inline constexpr const char* kLabelSoftplusFwdSchema =
    "label_softplus_fwd(Tensor x, Tensor y, Tensor scale, Tensor bias, Tensor row_ids, Tensor col_ids,"
    " str similarity, bool checks=False, str math_path=\"auto\") -> Tensor";
inline constexpr const char* kLabelSoftplusBwdSchema =
    "label_softplus_bwd(Tensor grad_row, Tensor x, Tensor y, Tensor scale, Tensor bias, Tensor row_ids,"
    " Tensor col_ids, str similarity, bool[4] output_mask, bool checks=False, str math_path=\"auto\")"
    " -> (Tensor, Tensor, Tensor, Tensor)";
// Its total sum_i row_i with the gradients, as softplus_total (one pass over the tiles on CPU).
inline constexpr const char* kLabelSoftplusTotalSchema =
    "label_softplus_total(Tensor x, Tensor y, Tensor scale, Tensor bias, Tensor row_ids, Tensor col_ids,"
    " str similarity, bool[4] output_mask, bool checks=False, str math_path=\"auto\")"
    " -> (Tensor, Tensor, Tensor, Tensor, Tensor)";

// The O((M + N) D) operands of a loss around the pairwise LSE (CPU only; csrc/cpu/operands_cpu.cpp):
// the kernel inputs ka, kb (L2-normalised for cosine, else copies), the positive-pair similarities
// pos_i = sim(ka_i, kb_i) for i < M <= N, and the row norms (empty unless cosine).
inline constexpr const char* kOperandsFwdSchema =
    "operands_fwd(Tensor a, Tensor b, str similarity) -> (Tensor, Tensor, Tensor, Tensor, Tensor)";
inline constexpr const char* kOperandsBwdSchema =
    "operands_bwd(Tensor grad_ka, Tensor grad_kb, Tensor grad_pos, Tensor ka, Tensor kb, Tensor norm_a,"
    " Tensor norm_b, str similarity, bool[2] output_mask) -> (Tensor, Tensor)";

}  // namespace mmcl_fast
