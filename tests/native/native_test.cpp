// Native test of the registered mmcl_fast ops (no Python running): loads the library named by the
// first argument (CMake's libmmcl_fast_ops, or an installed mmcl_fast/_C extension) and checks
// lse_fwd / lse_bwd, called through the dispatcher, against a float64 ATen computation of the
// same formulas.
#include <dlfcn.h>

#include <array>
#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>

#include <algorithm>
#include <cstdio>
#include <torch/csrc/autograd/autograd.h>
#include <string>
#include <tuple>

namespace {

at::Tensor sim_matrix(const at::Tensor& x, const at::Tensor& y, const std::string& sim) {
  if (sim == "dot") return at::mm(x, y.t());
  if (sim == "euclidean") return -(x.unsqueeze(1) - y.unsqueeze(0)).square().sum(-1);
  return -(x.unsqueeze(1) - y.unsqueeze(0)).abs().sum(-1);
}

double max_rel(const at::Tensor& a, const at::Tensor& b) {
  return ((a - b).abs().max() / (b.abs().max() + 1e-30)).item<double>();
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s <library that registers the mmcl_fast ops>\n", argv[0]);
    return 2;
  }
  if (dlopen(argv[1], RTLD_NOW | RTLD_GLOBAL) == nullptr) {
    std::fprintf(stderr, "could not load %s: %s\n", argv[1], dlerror());
    return 2;
  }
  using Fwd = std::tuple<at::Tensor, at::Tensor>(const at::Tensor&, const at::Tensor&,
                                                 const at::Tensor&, c10::string_view, bool, bool, bool,
                                                 bool, c10::string_view);
  using Bwd = std::tuple<at::Tensor, at::Tensor, at::Tensor>(
      const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&,
      const at::Tensor&, const at::Tensor&, const at::Tensor&, c10::string_view, bool,
      std::array<bool, 3>, bool, c10::string_view);
  auto fwd = c10::Dispatcher::singleton().findSchemaOrThrow("mmcl_fast::lse_fwd", "").typed<Fwd>();
  auto bwd = c10::Dispatcher::singleton().findSchemaOrThrow("mmcl_fast::lse_bwd", "").typed<Bwd>();
  at::manual_seed(0);
  int failures = 0;
  for (const std::string sim : {"dot", "euclidean", "l1"}) {
    for (bool mask : {false, true}) {
      const int64_t M = 67, N = mask ? 67 : 301, D = 13;
      auto x = at::randn({M, D}, at::kDouble).requires_grad_(true);
      auto y = at::randn({N, D}, at::kDouble).requires_grad_(true);
      auto s = at::scalar_tensor(0.7, at::kDouble).requires_grad_(true);
      auto L = s * sim_matrix(x, y, sim);
      if (mask) L = L.masked_fill(at::eye(M, at::kBool), -INFINITY);
      auto want_row = at::logsumexp(L, {1}), want_col = at::logsumexp(L, {0});
      auto gr = at::rand({M}, at::kDouble), gc = at::rand({N}, at::kDouble);
      auto grads = torch::autograd::grad({(want_row * gr).sum() + (want_col * gc).sum()}, {x, y, s});
      auto [row, col] = fwd.call(x.detach(), y.detach(), s.detach(), sim, mask, true, true, false, "auto");
      auto [dx, dy, ds] = bwd.call(gr, gc, x.detach(), y.detach(), s.detach(), row, col, sim, mask, std::array<bool, 3>{true, true, true}, true, "auto");
      const double err = std::max({max_rel(row, want_row.detach()), max_rel(col, want_col.detach()),
                                   max_rel(dx, grads[0]), max_rel(dy, grads[1]), max_rel(ds, grads[2])});
      std::printf("%-9s mask=%d  max rel err %.2e\n", sim.c_str(), int(mask), err);
      failures += err > 1e-10;
    }
  }
  std::printf("%d passed, %d failed\n", 6 - failures, failures);
  return failures ? 1 : 0;
}
