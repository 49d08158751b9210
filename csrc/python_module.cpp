// The importable module mmcl_fast._C: loading it registers the TORCH_LIBRARY ops of ops.cpp.
// It also reports how the extension was built (read by mmcl_fast.backend_info()).
#include <torch/extension.h>

#include "cpu/blas.h"

#ifdef CPU_CAPABILITY_AVX2
#define MMCL_FAST_CPU_FLAGS "avx2+fma (at::vec AVX2)"
#else
#define MMCL_FAST_CPU_FLAGS "generic (at::vec default)"
#endif

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "mmcl_fast compiled operators (torch.ops.mmcl_fast.lse_fwd / lse_bwd)";
#ifdef MMCL_FAST_WITH_CUDA
  m.attr("with_cuda") = true;
#else
  m.attr("with_cuda") = false;
#endif
  m.attr("cpu_flags") = MMCL_FAST_CPU_FLAGS;
  m.def("cpu_blas", [] { return mmcl_fast::have_blas() ? "sgemm_/dgemm_ (torch BLAS)" : "ATen addmm fallback"; });
}
