// Host emulation of the CUDA runtime API used by csrc/cuda and its launchers: dim3, error codes,
// streams (there is one host "device"; every call is synchronous) and cudaMemsetAsync.
// Compiled only with MMCL_FAST_CUDA_EMULATION; see cuda_emulation_device.h for the kernel side.
#pragma once

#ifndef MMCL_FAST_CUDA_EMULATION
#error "csrc/cuda/emulation is the host emulation of CUDA: build it with -DMMCL_FAST_CUDA_EMULATION"
#endif

#include <cstddef>

struct dim3 {
  unsigned x, y, z;
  constexpr dim3(unsigned vx = 1, unsigned vy = 1, unsigned vz = 1) : x(vx), y(vy), z(vz) {}
};
struct uint3 {
  unsigned x, y, z;
};

// The codes of CUDA's cudaError that the emulator can produce, with CUDA's values.
enum cudaError {
  cudaSuccess = 0,
  cudaErrorInvalidValue = 1,
  cudaErrorMemoryAllocation = 2,
  cudaErrorInvalidConfiguration = 9,
};
using cudaError_t = cudaError;

struct CUstream_st;  // never defined: a stream is an opaque handle, null is the default stream
using cudaStream_t = CUstream_st*;

// Sets `bytes` bytes at `ptr` to `value` (host memory); the stream is ignored.
cudaError_t cudaMemsetAsync(void* ptr, int value, size_t bytes, cudaStream_t stream = nullptr);
cudaError_t cudaMemset(void* ptr, int value, size_t bytes);
cudaError_t cudaStreamSynchronize(cudaStream_t stream);
cudaError_t cudaDeviceSynchronize();
// The calling host thread's last launch error, reset to cudaSuccess (as in CUDA).
cudaError_t cudaGetLastError();
cudaError_t cudaPeekAtLastError();
const char* cudaGetErrorString(cudaError_t error);
