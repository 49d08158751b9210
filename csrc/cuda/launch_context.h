// The device guard and the stream of the CUDA launchers (csrc/cuda_launch.cpp): c10's CUDA guard
// and current stream, or, in the host-emulated build (MMCL_FAST_CUDA_EMULATION, CPU tensors),
// no guard and the null stream of the emulator.
#pragma once

#include <c10/core/Device.h>
#include <cuda_runtime.h>

#ifdef MMCL_FAST_CUDA_EMULATION
namespace mmcl_fast {
struct LaunchDeviceGuard {
  explicit LaunchDeviceGuard(const c10::Device&) {}
};
inline cudaStream_t current_launch_stream() { return nullptr; }
}  // namespace mmcl_fast
#else
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
namespace mmcl_fast {
using LaunchDeviceGuard = c10::cuda::CUDAGuard;
inline cudaStream_t current_launch_stream() { return c10::cuda::getCurrentCUDAStream().stream(); }
}  // namespace mmcl_fast
#endif
