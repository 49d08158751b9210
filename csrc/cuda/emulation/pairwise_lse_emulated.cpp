// csrc/cuda/pairwise_lse.cu compiled as C++ against the host CUDA emulation (this directory's
// include/ must be on the include path, and MMCL_FAST_CUDA_EMULATION defined). The kernels are
// included, not copied: the emulated build runs exactly the source nvcc compiles.
#include "../pairwise_lse.cu"
