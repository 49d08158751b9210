// The importable module mmcl_fast._C: loading it registers the TORCH_LIBRARY ops of ops.cpp.
// It also reports how the extension was built (read by mmcl_fast.backend_info()).
#include <torch/extension.h>

#include "cpu/blas.h"

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

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "mmcl_fast compiled operators (torch.ops.mmcl_fast.lse_fwd / lse_bwd)";
#ifdef MMCL_FAST_WITH_CUDA
  m.attr("with_cuda") = true;
#else
  m.attr("with_cuda") = false;
#endif
  m.attr("cpu_flags") = MMCL_FAST_CPU_FLAGS;
  m.attr("source_hash") = MMCL_FAST_STRINGIFY(MMCL_FAST_SOURCE_HASH);
  m.def("cpu_blas", [] { return mmcl_fast::have_blas() ? "sgemm_/dgemm_ (torch BLAS)" : "ATen addmm fallback"; });
}
