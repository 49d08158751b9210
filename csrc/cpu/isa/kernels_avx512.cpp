// The CPU tile engine compiled for AVX-512 F/BW/DQ/VL (+ AVX2, FMA); picked at run time by cpu_isa.cpp.
#define MMCL_FAST_ISA_AVX512
#include "isa_target.h"

#ifdef MMCL_FAST_ISA_UNAVAILABLE
const mmcl_fast::CpuKernels* mmcl_fast::cpu_kernels_avx512() { return nullptr; }
#else
#include "../tile_engine/engine_kernels.h"
#include "isa_target_end.h"

const mmcl_fast::CpuKernels* mmcl_fast::cpu_kernels_avx512() { return &tile_engine::AVX512::kCpuKernels; }
#endif
