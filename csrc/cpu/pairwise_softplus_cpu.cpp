// The CPU implementation of the pairwise softplus op pair: the scalar checks shared by every ISA,
// then the engine copy that cpu_isa.cpp picked (formulas: tile_engine/softplus_reduction.h).
#include "pairwise_softplus_cpu.h"

#include <ATen/Dispatch.h>
#include <ATen/ops/full.h>

#include "isa/cpu_isa.h"
#include "scalar_arguments.h"

namespace mmcl_fast {

at::Tensor softplus_fwd_cpu(const at::Tensor& x, const at::Tensor& y, const at::Tensor& scale,
                            const at::Tensor& bias, const std::string& similarity, bool mask_diag) {
  const Similarity sim = parsed(similarity);
  return active_cpu_kernels().softplus_fwd(x, y, checked_scale(scale), checked_bias(bias), sim, mask_diag);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> softplus_bwd_cpu(
    const at::Tensor& grad_row, const at::Tensor& x, const at::Tensor& y, const at::Tensor& scale,
    const at::Tensor& bias, const std::string& similarity, bool mask_diag, std::array<bool, 4> output_mask) {
  const Similarity sim = parsed(similarity);
  auto [dx, dy, dscale, dbias] = active_cpu_kernels().softplus_bwd(
      grad_row, x, y, checked_scale(scale), checked_bias(bias), sim, mask_diag, {output_mask[0], output_mask[1]});
  auto dscale_t = output_mask[2] ? at::full(scale.sizes(), dscale, scale.options()) : scale.new_empty({0});
  auto dbias_t = output_mask[3] ? at::full(bias.sizes(), dbias, bias.options()) : bias.new_empty({0});
  return {dx, dy, dscale_t, dbias_t};
}

at::Tensor label_softplus_fwd_cpu(const at::Tensor& x, const at::Tensor& y, const at::Tensor& scale,
                                  const at::Tensor& bias, const at::Tensor& row_ids, const at::Tensor& col_ids,
                                  const std::string& similarity) {
  const Similarity sim = parsed(similarity);
  // the row sums of the one-pass forward + backward, without dx and dy
  return std::get<0>(active_cpu_kernels().label_softplus(at::Tensor(), x, y, checked_scale(scale), checked_bias(bias),
                                                         sim, row_ids, col_ids, {false, false}));
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> label_softplus_bwd_cpu(
    const at::Tensor& grad_row, const at::Tensor& x, const at::Tensor& y, const at::Tensor& scale,
    const at::Tensor& bias, const at::Tensor& row_ids, const at::Tensor& col_ids, const std::string& similarity,
    std::array<bool, 4> output_mask) {
  const Similarity sim = parsed(similarity);
  auto [row, dx, dy, dscale, dbias] = active_cpu_kernels().label_softplus(
      grad_row, x, y, checked_scale(scale), checked_bias(bias), sim, row_ids, col_ids,
      {output_mask[0], output_mask[1]});
  auto dscale_t = output_mask[2] ? at::full(scale.sizes(), dscale, scale.options()) : scale.new_empty({0});
  auto dbias_t = output_mask[3] ? at::full(bias.sizes(), dbias, bias.options()) : bias.new_empty({0});
  return {dx, dy, dscale_t, dbias_t};
}

namespace {

// sum_i row_i in double, in row order, on this thread (M additions; no OpenMP region).
at::Tensor row_total(const at::Tensor& row) {
  double total = 0;
  const auto rc = row.contiguous();
  AT_DISPATCH_FLOATING_TYPES(rc.scalar_type(), "softplus_total_sum", [&] {
    const scalar_t* r = rc.data_ptr<scalar_t>();
    for (int64_t i = 0; i < rc.numel(); ++i) total += double(r[i]);
  });
  return at::full({}, total, row.options());
}

}  // namespace

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> label_softplus_total_cpu(
    const at::Tensor& x, const at::Tensor& y, const at::Tensor& scale, const at::Tensor& bias,
    const at::Tensor& row_ids, const at::Tensor& col_ids, const std::string& similarity,
    std::array<bool, 4> output_mask) {
  const Similarity sim = parsed(similarity);
  auto [row, dx, dy, dscale, dbias] = active_cpu_kernels().label_softplus(
      at::Tensor(), x, y, checked_scale(scale), checked_bias(bias), sim, row_ids, col_ids,
      {output_mask[0], output_mask[1]});
  auto dscale_t = output_mask[2] ? at::full(scale.sizes(), dscale, scale.options()) : scale.new_empty({0});
  auto dbias_t = output_mask[3] ? at::full(bias.sizes(), dbias, bias.options()) : bias.new_empty({0});
  return {row_total(row), dx, dy, dscale_t, dbias_t};
}

int parsed_diagonal(const std::string& diagonal) {
  if (diagonal == "negative") return 0;
  if (diagonal == "masked") return 1;
  TORCH_CHECK(diagonal == "positive", "diagonal must be 'negative', 'masked' or 'positive', got '", diagonal, "'");
  return 2;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> softplus_total_cpu(
    const at::Tensor& x, const at::Tensor& y, const at::Tensor& scale, const at::Tensor& bias,
    const std::string& similarity, const std::string& diagonal, std::array<bool, 4> output_mask) {
  const Similarity sim = parsed(similarity);
  const int diag = parsed_diagonal(diagonal);
  auto [row, dx, dy, dscale, dbias] = active_cpu_kernels().softplus_fwd_bwd(
      x, y, checked_scale(scale), checked_bias(bias), sim, diag, {output_mask[0], output_mask[1]});
  auto dscale_t = output_mask[2] ? at::full(scale.sizes(), dscale, scale.options()) : scale.new_empty({0});
  auto dbias_t = output_mask[3] ? at::full(bias.sizes(), dbias, bias.options()) : bias.new_empty({0});
  return {row_total(row), dx, dy, dscale_t, dbias_t};
}

}  // namespace mmcl_fast
