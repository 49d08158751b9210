// The host-emulated CUDA backend used by the tests: the operators' CUDA implementations
// (csrc/cuda_launch.cpp, kernels of csrc/cuda/pairwise_lse.cu run by the emulator) registered as
// mmcl_fast_emu::lse_fwd / lse_bwd (label_lse_*, softplus_*) for CPU tensors, the emulator's half-precision conversions as
// mmcl_fast_emu::to_half_bits / from_half_bits, and its controls (a pybind11 module).
// Built on demand by tests/emulated_cuda.py; never part of the installed package.
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <pybind11/pybind11.h>
#include <torch/library.h>

#include "../../cuda_launch.h"
#include "../../op_schema.h"
#include "cuda_emulation_device.h"
#include "cuda_emulation_half.h"

namespace {

// Element-wise float32 -> float16 / bfloat16 bits and back with the emulator's conversions.
at::Tensor to_half_bits(const at::Tensor& values, bool bfloat16) {
  auto v = values.to(at::kFloat).contiguous();
  auto out = at::empty(v.sizes(), v.options().dtype(at::kShort));
  const float* src = v.data_ptr<float>();
  int16_t* dst = out.data_ptr<int16_t>();
  for (int64_t i = 0; i < v.numel(); ++i)
    dst[i] = static_cast<int16_t>(bfloat16 ? __bfloat16_as_ushort(__float2bfloat16(src[i]))
                                           : __half_as_ushort(__float2half(src[i])));
  return out;
}

at::Tensor from_half_bits(const at::Tensor& bits, bool bfloat16) {
  auto b = bits.contiguous();
  TORCH_CHECK(b.scalar_type() == at::kShort, "from_half_bits: bits must be int16");
  auto out = at::empty(b.sizes(), b.options().dtype(at::kFloat));
  const int16_t* src = b.data_ptr<int16_t>();
  float* dst = out.data_ptr<float>();
  for (int64_t i = 0; i < b.numel(); ++i) {
    const auto u = static_cast<unsigned short>(src[i]);
    dst[i] = bfloat16 ? __bfloat162float(__ushort_as_bfloat16(u)) : __half2float(__ushort_as_half(u));
  }
  return out;
}

}  // namespace

TORCH_LIBRARY(mmcl_fast_emu, m) {
  m.def(mmcl_fast::kLseFwdSchema);
  m.def(mmcl_fast::kLseBwdSchema);
  m.def(mmcl_fast::kLabelLseFwdSchema);
  m.def(mmcl_fast::kLabelLseBwdSchema);
  m.def(mmcl_fast::kSoftplusFwdSchema);
  m.def(mmcl_fast::kSoftplusBwdSchema);
  m.def(mmcl_fast::kSoftplusTotalSchema);
  m.def(mmcl_fast::kLabelSoftplusFwdSchema);
  m.def(mmcl_fast::kLabelSoftplusBwdSchema);
  m.def(mmcl_fast::kLabelSoftplusTotalSchema);
  m.def("to_half_bits(Tensor values, bool bfloat16) -> Tensor");
  m.def("from_half_bits(Tensor bits, bool bfloat16) -> Tensor");
}

TORCH_LIBRARY_IMPL(mmcl_fast_emu, CPU, m) {
  m.impl("lse_fwd", &mmcl_fast::lse_fwd_cuda);
  m.impl("lse_bwd", &mmcl_fast::lse_bwd_cuda);
  m.impl("label_lse_fwd", &mmcl_fast::label_lse_fwd_cuda);
  m.impl("label_lse_bwd", &mmcl_fast::label_lse_bwd_cuda);
  m.impl("softplus_fwd", &mmcl_fast::softplus_fwd_cuda);
  m.impl("softplus_bwd", &mmcl_fast::softplus_bwd_cuda);
  m.impl("softplus_total", &mmcl_fast::softplus_total_cuda);
  m.impl("label_softplus_fwd", &mmcl_fast::label_softplus_fwd_cuda);
  m.impl("label_softplus_bwd", &mmcl_fast::label_softplus_bwd_cuda);
  m.impl("label_softplus_total", &mmcl_fast::label_softplus_total_cuda);
  m.impl("to_half_bits", &to_half_bits);
  m.impl("from_half_bits", &from_half_bits);
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "mmcl_fast's CUDA kernels under the host emulator (test backend)";
  m.def("set_concurrent_blocks", &mmcl_fast::cuda_emulation::set_concurrent_blocks,
        "How many thread blocks of a launch run at once (1: one after another)");
  m.def("concurrent_blocks", &mmcl_fast::cuda_emulation::concurrent_blocks);
}
