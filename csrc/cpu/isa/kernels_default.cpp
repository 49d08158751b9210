// The CPU tile engine compiled for the x86-64 baseline (SSE2) or the target's own baseline; picked at run time by cpu_isa.cpp.
#define MMCL_FAST_ISA_DEFAULT
#include "isa_target.h"

#ifdef MMCL_FAST_ISA_UNAVAILABLE
const mmcl_fast::CpuKernels* mmcl_fast::cpu_kernels_default() { return nullptr; }
#else
#include "../tile_engine/engine_kernels.h"
#include "isa_target_end.h"

const mmcl_fast::CpuKernels* mmcl_fast::cpu_kernels_default() { return &tile_engine::DEFAULT::kCpuKernels; }
#endif
