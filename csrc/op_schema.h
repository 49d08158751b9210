// The schemas of mmcl_fast's operators, shared by ops.cpp (namespace mmcl_fast) and the emulated
// CUDA test build (csrc/cuda/emulation/emulated_ops.cpp, namespace mmcl_fast_emu).
#pragma once

namespace mmcl_fast {

inline constexpr const char* kLseFwdSchema =
    "lse_fwd(Tensor x, Tensor y, Tensor scale, str similarity, bool mask_diag, bool compute_col)"
    " -> (Tensor, Tensor)";
inline constexpr const char* kLseBwdSchema =
    "lse_bwd(Tensor grad_row, Tensor grad_col, Tensor x, Tensor y, Tensor scale, Tensor row_lse,"
    " Tensor col_lse, str similarity, bool mask_diag, bool[3] output_mask) -> (Tensor, Tensor, Tensor)";

}  // namespace mmcl_fast
