// The CPU tile engine compiled for AVX2 + FMA + F16C; picked at run time by cpu_isa.cpp.
#define MMCL_FAST_ISA_AVX2
#include "isa_target.h"

#ifdef MMCL_FAST_ISA_UNAVAILABLE
const mmcl_fast::CpuKernels* mmcl_fast::cpu_kernels_avx2() { return nullptr; }
#else
#include "../tile_engine/engine_kernels.h"
#include "isa_target_end.h"

const mmcl_fast::CpuKernels* mmcl_fast::cpu_kernels_avx2() { return &tile_engine::AVX2::kCpuKernels; }
#endif
