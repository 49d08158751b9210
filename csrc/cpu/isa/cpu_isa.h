// Runtime ISA dispatch of the CPU kernels. The tile engine (csrc/cpu/tile_engine/) is compiled
// three times in one build, each copy in its own inline namespace (DEFAULT, AVX2, AVX512) and with
// its own code generation target (isa_target.h); the first call picks the widest copy that
//   * this binary holds (the AVX copies exist on x86-64 builds only),
//   * the running CPU executes (cpuid: AVX2+FMA+F16C; AVX-512 F/BW/DQ/VL), and
//   * torch's own CPU capability allows (at::get_cpu_capability(), which honours
//     ATEN_CPU_CAPABILITY=default|avx2|avx512, so a user or a test can force a lower level).
// The build host's flags play no part: a wheel built anywhere runs anywhere.
#pragma once

#include <ATen/core/Tensor.h>

#include <array>
#include <string>
#include <tuple>
#include <vector>

#include "../../similarity.h"

namespace mmcl_fast {

// One ISA's copy of the engine (tile_engine/engine_kernels.h has the formulas).
struct CpuKernels {
  const char* isa;  // "default", "avx2" or "avx512"
  // (row_lse [M], col_lse [N] or [0])
  std::tuple<at::Tensor, at::Tensor> (*lse_fwd)(const at::Tensor& x, const at::Tensor& y, double scale,
                                                Similarity sim, bool mask_diag, bool compute_col);
  // (dx or [0], dy or [0], dscale as a double)
  std::tuple<at::Tensor, at::Tensor, double> (*lse_bwd)(
      const at::Tensor& grad_row, const at::Tensor& grad_col, const at::Tensor& x, const at::Tensor& y,
      double scale, const at::Tensor& row_lse, const at::Tensor& col_lse, Similarity sim, bool mask_diag,
      std::array<bool, 3> output_mask);
  // (row_neg [M], col_neg, row_pos [M], col_pos, row_sum [M], col_sum): the label-aware LSE, the
  // column outputs [N] when compute_col, else [0]
  std::array<at::Tensor, 6> (*label_lse_fwd)(const at::Tensor& x, const at::Tensor& y, double scale,
                                             Similarity sim, const at::Tensor& row_ids, const at::Tensor& col_ids,
                                             bool mask_diag, bool compute_col);
  // (dx or [0], dy or [0], dscale as a double) from grads (gRN, gCN, gRP, gCP, gRS, gCS) and
  // lse (row_neg, col_neg, row_pos, col_pos)
  std::tuple<at::Tensor, at::Tensor, double> (*label_lse_bwd)(
      const std::array<at::Tensor, 6>& grads, const at::Tensor& x, const at::Tensor& y, double scale,
      Similarity sim, const at::Tensor& row_ids, const at::Tensor& col_ids, const std::array<at::Tensor, 4>& lse,
      bool mask_diag, std::array<bool, 3> output_mask);
  // sum_j softplus(scale sim(x_i, y_j) + bias) per row [M] (j == i left out when mask_diag)
  at::Tensor (*softplus_fwd)(const at::Tensor& x, const at::Tensor& y, double scale, double bias, Similarity sim,
                             bool mask_diag);
  // (dx or [0], dy or [0], dscale, dbias as doubles)
  std::tuple<at::Tensor, at::Tensor, double, double> (*softplus_bwd)(
      const at::Tensor& grad_row, const at::Tensor& x, const at::Tensor& y, double scale, double bias,
      Similarity sim, bool mask_diag, std::array<bool, 2> output_mask);
  // (row, dx or [0], dy or [0], dscale, dbias): the forward and the gradients of sum_i row_i in one
  // pass; diagonal 0: the pairs (i, i) are negatives, 1: left out, 2: positives
  std::tuple<at::Tensor, at::Tensor, at::Tensor, double, double> (*softplus_fwd_bwd)(
      const at::Tensor& x, const at::Tensor& y, double scale, double bias, Similarity sim, int diagonal,
      std::array<bool, 2> output_mask);
  // (row or [0], dx or [0], dy or [0], dscale, dbias): the label-aware sigmoid terms
  // sum_j softplus(-z_ij (L_ij + t)) (z = +1 for equal ids) and their gradients for grad_row, or,
  // with grad_row undefined, the row sums and the gradients of sum_i row_i in one pass
  std::tuple<at::Tensor, at::Tensor, at::Tensor, double, double> (*label_softplus)(
      const at::Tensor& grad_row, const at::Tensor& x, const at::Tensor& y, double scale, double bias,
      Similarity sim, const at::Tensor& row_ids, const at::Tensor& col_ids, std::array<bool, 2> output_mask);
  double (*vec_exp_rate)(double seconds);  // exp/s of the engine's vector exp on every ATen thread
};

// The copies in this binary: nullptr where the compiler could not target the ISA.
const CpuKernels* cpu_kernels_default();
const CpuKernels* cpu_kernels_avx2();
const CpuKernels* cpu_kernels_avx512();

// The copy the kernels run: the forced one if any, else the widest allowed (above), chosen once.
const CpuKernels& active_cpu_kernels();

// Names of the copies the running CPU can execute, narrowest first ("default", "avx2", ...).
std::vector<std::string> runnable_cpu_isas();

// Runs `isa` (one of runnable_cpu_isas()) from now on in this process; "" returns to the automatic
// choice. For tests and benchmarks that compare the levels in one process; raises for a level this
// CPU or binary lacks.
void force_cpu_isa(const std::string& isa);

}  // namespace mmcl_fast
