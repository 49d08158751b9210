// <cuda_bf16.h> of the host CUDA emulation (see ../cuda_emulation_half.h).
#pragma once
#include "../cuda_emulation_half.h"
