// Torch-free CUDA entry points of the pairwise operators (raw pointers + stream).
//
// Formulas (L_ij = s * sim(x_i, y_j), see ../similarity.h), log-sum-exp pair:
//   forward:  row_lse_i = log sum_j exp(L_ij), col_lse_j = log sum_i exp(L_ij)  (j == i masked)
//   backward: G_ij = gr_i exp(L_ij - row_lse_i) + gc_j exp(L_ij - col_lse_j)
//             dx_i = s sum_j G_ij d sim_ij/d x_i,  dy_j = s sum_i G_ij d sim_ij/d y_j,
//             dscale = sum_ij G_ij sim_ij
// softplus pair (the sigmoid loss, t = bias):
//   forward:  row_i = sum_j softplus(L_ij + t)   (j == i masked)
//   backward: G_ij = gr_i sigmoid(L_ij + t), dx, dy and dscale as above, dbias = sum_ij G_ij
// Inputs may be float32, float16 or bfloat16; all arithmetic, statistics, dscale and dbias are
// float32.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace mmcl_fast {
namespace cuda {

enum class DType : int { F32 = 0, F16 = 1, BF16 = 2 };

// Which units compute the tile products. Simt: CUDA cores, float32 FMAs, every similarity.
// TensorCore: WMMA tiles with float16/bfloat16 operands as given, float32 inputs as TF32, float32
// accumulation; dot and euclidean only (l1 has no matrix-product form and always runs Simt).
enum class MathPath : int { Simt = 0, TensorCore = 1 };

struct Problem {
  const void* x;      // M x D, row-major
  const void* y;      // N x D, row-major
  int64_t M, N, D;
  DType dtype;
  int similarity;     // mmcl_fast::Similarity
  const float* scale; // device pointer to s (> 0)
  bool mask_diag;
  MathPath path = MathPath::Simt;
};

// The path the kernels take for p: TensorCore requested for l1, or on a device older than sm_80,
// gives Simt.
MathPath effective_path(const Problem& p);

// Bytes of device workspace lse_forward needs (column (max, sum) pairs), 0 when !compute_col.
size_t lse_forward_workspace(const Problem& p, bool compute_col, bool deterministic);

// row_lse [M]; col_lse [N] when compute_col. deterministic: the column LSE is a second pass over
// the swapped problem instead of an atomic merge of per-block (max, sum) pairs.
cudaError_t lse_forward(const Problem& p, float* row_lse, float* col_lse, bool compute_col,
                        bool deterministic, void* workspace, cudaStream_t stream);

// Bytes of device workspace lse_backward needs (float accumulators + dscale partials).
size_t lse_backward_workspace(const Problem& p);

// dx [M x D], dy [N x D] in the input dtype; dscale [1] float32. grad_col may be null (then the
// column term is absent). A null dx, dy or dscale is not computed (its kernel pass is skipped).
// Deterministic: no floating-point atomics.
cudaError_t lse_backward(const Problem& p, const float* grad_row, const float* grad_col,
                         const float* row_lse, const float* col_lse, void* dx, void* dy,
                         float* dscale, void* workspace, cudaStream_t stream);

// Bytes of device workspace of softplus_forward / softplus_backward.
size_t softplus_forward_workspace(const Problem& p);
size_t softplus_backward_workspace(const Problem& p);

// row [M] float32; bias: device pointer to t.
cudaError_t softplus_forward(const Problem& p, const float* bias, float* row, void* workspace,
                             cudaStream_t stream);

// dx [M x D], dy [N x D] in the input dtype; dscale, dbias [1] float32. A null output is not
// computed (its kernel pass is skipped). Deterministic: no floating-point atomics.
cudaError_t softplus_backward(const Problem& p, const float* bias, const float* grad_row, void* dx, void* dy,
                              float* dscale, float* dbias, void* workspace, cudaStream_t stream);

}  // namespace cuda
}  // namespace mmcl_fast
