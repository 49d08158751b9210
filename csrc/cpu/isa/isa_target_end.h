// Ends the ISA target that isa_target.h set: what follows is compiled for the baseline again.
#pragma once

#ifdef MMCL_FAST_ISA_TARGETED
#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC pop_options
#endif
#endif
