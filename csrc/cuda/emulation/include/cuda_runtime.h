// <cuda_runtime.h> of the host CUDA emulation: this directory is on the include path only when
// csrc/cuda is compiled with -DMMCL_FAST_CUDA_EMULATION (see ../cuda_emulation_runtime.h).
#pragma once
#include "../cuda_emulation_runtime.h"
