// The importable module mmcl_fast._C: loading it registers the TORCH_LIBRARY ops of ops.cpp.
// It also reports how the extension was built (read by mmcl_fast.backend_info()).
#include <pybind11/pybind11.h>
#include <ATen/Parallel.h>
#include <ATen/cpu/vec/vec.h>

#include <chrono>
#include <vector>

#include "cpu/runtime/blas.h"

#ifdef CPU_CAPABILITY_AVX2
#define MMCL_FAST_CPU_FLAGS "avx2+fma (at::vec AVX2)"
#else
#define MMCL_FAST_CPU_FLAGS "generic (at::vec default)"
#endif

// The build passes -DMMCL_FAST_SOURCE_HASH=<hex> (mmcl_fast/_build_config.py: source_hash).
#ifndef MMCL_FAST_SOURCE_HASH
#define MMCL_FAST_SOURCE_HASH unknown
#endif
#define MMCL_FAST_STRINGIFY_(x) #x
#define MMCL_FAST_STRINGIFY(x) MMCL_FAST_STRINGIFY_(x)

namespace {

// Exponentials per second of a tight at::vec exp_u20 loop (the exp the CPU kernel evaluates) on
// every ATen thread over an L1-resident buffer, for `seconds`: the exp limit that
// benchmarks/bench_loss.py compares the fused kernel with. Each repetition shifts the argument,
// as the kernel's exp(L - offset) does, so the exps cannot be hoisted out of the loop.
double vec_exp_rate(double seconds) {
  using V = at::vec::Vectorized<float>;
  constexpr int64_t kLen = 1024, kReps = 64;
  const int64_t threads = at::get_num_threads();
  std::vector<double> rates(threads, 0.0);
  std::vector<float> sink(threads, 0.f);
  at::parallel_for(0, threads, 1, [&](int64_t b, int64_t e) {
    for (int64_t t = b; t < e; ++t) {
      alignas(64) float buf[kLen];
      for (int64_t i = 0; i < kLen; ++i) buf[i] = -float(i) / float(kLen);
      V acc(0.f);
      int64_t count = 0, round = 0;
      const auto start = std::chrono::steady_clock::now();
      double elapsed = 0;
      do {
        for (int64_t rep = 0; rep < kReps; ++rep, ++round) {
          const V offset(float(round & 1023) * 1e-3f);
          for (int64_t i = 0; i < kLen; i += V::size()) acc = acc + (V::loadu(buf + i) - offset).exp_u20();
        }
        count += kReps * kLen;
        elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      } while (elapsed < seconds);
      float lanes[V::size()];
      acc.store(lanes);
      sink[t] = lanes[0];
      rates[t] = double(count) / elapsed;
    }
  });
  double total = 0;
  for (int64_t t = 0; t < threads; ++t) total += rates[t] + 0.0 * sink[t];
  return total;
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "mmcl_fast compiled operators (torch.ops.mmcl_fast.lse_fwd / lse_bwd)";
#ifdef MMCL_FAST_WITH_CUDA
  m.attr("with_cuda") = true;
#else
  m.attr("with_cuda") = false;
#endif
  m.attr("cpu_flags") = MMCL_FAST_CPU_FLAGS;
  m.attr("source_hash") = MMCL_FAST_STRINGIFY(MMCL_FAST_SOURCE_HASH);
  m.def("vec_exp_rate", &vec_exp_rate, "exp/s of a tight at::vec exp_u20 loop on every thread",
        pybind11::arg("seconds") = 0.5);
  m.def("cpu_blas", [] { return mmcl_fast::have_blas() ? "sgemm_/dgemm_ (torch BLAS)" : "ATen addmm fallback"; });
}
