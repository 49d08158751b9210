// The importable module mmcl_fast._C: loading it registers the TORCH_LIBRARY ops of ops.cpp.
// It also reports how the extension was built (read by mmcl_fast.backend_info()).
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>
#include <c10/util/Exception.h>

#include <string>
#include <vector>

#include "cpu/isa/cpu_isa.h"
#include "cpu/runtime/blas.h"

// The build passes -DMMCL_FAST_SOURCE_HASH=<hex> (mmcl_fast/_build_config.py: source_hash).
#ifndef MMCL_FAST_SOURCE_HASH
#define MMCL_FAST_SOURCE_HASH unknown
#endif
// setup.py passes -DMMCL_FAST_TORCH_BUILT=<release>: the torch this binary is compiled against.
#ifndef MMCL_FAST_TORCH_BUILT
#define MMCL_FAST_TORCH_BUILT unknown
#endif
#define MMCL_FAST_STRINGIFY_(x) #x
#define MMCL_FAST_STRINGIFY(x) MMCL_FAST_STRINGIFY_(x)

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "mmcl_fast compiled operators (torch.ops.mmcl_fast.lse_fwd / lse_bwd)";
#ifdef MMCL_FAST_WITH_CUDA
  m.attr("with_cuda") = true;
  m.attr("with_cuda_softplus") = true;  // the softplus pair's CUDA kernels (else: the chunked fallback)
  m.attr("with_cuda_labels") = true;    // the label-aware pair's CUDA kernels (else: the chunked fallback)
#else
  m.attr("with_cuda") = false;
#endif
  m.attr("source_hash") = MMCL_FAST_STRINGIFY(MMCL_FAST_SOURCE_HASH);
  m.attr("torch_built") = MMCL_FAST_STRINGIFY(MMCL_FAST_TORCH_BUILT);
  m.def("vec_exp_rate", [](double seconds) { return mmcl_fast::active_cpu_kernels().vec_exp_rate(seconds); },
        "exp/s of a tight at::vec exp_u20 loop on every ATen thread, in the active ISA's copy",
        pybind11::arg("seconds") = 0.5);
  m.def("cpu_isa", [] { return std::string(mmcl_fast::active_cpu_kernels().isa); },
        "the ISA copy of the CPU kernels in use: 'default', 'avx2' or 'avx512'");
  m.def("runnable_cpu_isas", &mmcl_fast::runnable_cpu_isas,
        "the ISA copies this binary holds and this CPU executes, narrowest first");
  m.def("force_cpu_isa",
        [](const std::string& isa) {
          try {
            mmcl_fast::force_cpu_isa(isa);
          } catch (const c10::Error& e) {
            throw pybind11::value_error(e.what_without_backtrace());
          }
        },
        "run one ISA copy from now on ('' restores the automatic choice); for tests and benchmarks",
        pybind11::arg("isa"));
  m.def("cpu_blas", [] { return mmcl_fast::have_blas() ? "sgemm_/dgemm_ (torch BLAS)" : "ATen addmm fallback"; });
}
