// Row-major single-precision GEMM on host memory, the one matrix multiply behind the fused CPU
// ops: C = alpha * op(A) * op(B) + beta * C with op(X) = X or its transpose and leading dimensions
// (row strides) given, so it reads heads and blocks in place. oneDNN's sgemm when the library was
// built with it (about 1.15x OpenBLAS's on AVX-512 here, see docs/performance.md), libtorch's
// BLAS otherwise. Torch-free header.
#pragma once

#include <cstdint>

namespace dst::kernels {

void sgemm(bool transpose_a, bool transpose_b, int64_t m, int64_t n, int64_t k, float alpha,
           const float* a, int64_t lda, const float* b, int64_t ldb, float beta, float* c,
           int64_t ldc);

// "onednn" or "libtorch": which library sgemm calls.
const char* sgemm_backend();

}  // namespace dst::kernels
