// <mma.h> of the host CUDA emulation (see ../cuda_emulation_wmma.h).
#pragma once
#include "../cuda_emulation_wmma.h"
