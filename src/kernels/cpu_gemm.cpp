#include "deepseek_train/kernels/cpu_gemm.h"

#include <ATen/ATen.h>

#include "deepseek_train/core/error.h"

#ifdef DST_HAVE_DNNL
#include <dnnl.h>
#endif

namespace dst::kernels {

void sgemm(bool transpose_a, bool transpose_b, int64_t m, int64_t n, int64_t k, float alpha,
           const float* a, int64_t lda, const float* b, int64_t ldb, float beta, float* c,
           int64_t ldc) {
  if (m == 0 || n == 0) return;
  if (k == 0) {  // an empty product: C = beta * C (C = 0 for beta 0, whatever C held)
    for (int64_t i = 0; i < m; ++i)
      for (int64_t j = 0; j < n; ++j) c[i * ldc + j] = beta == 0.0f ? 0.0f : beta * c[i * ldc + j];
    return;
  }
#ifdef DST_HAVE_DNNL
  const dnnl_status_t status = dnnl_sgemm(transpose_a ? 'T' : 'N', transpose_b ? 'T' : 'N', m, n, k,
                                          alpha, a, lda, b, ldb, beta, c, ldc);
  DST_CHECK(status == dnnl_success, InternalError,
            "oneDNN sgemm failed (status " << static_cast<int>(status) << ") for m=" << m
                                           << " n=" << n << " k=" << k);
#else
  // Views over the caller's memory (never written through except C), multiplied by ATen.
  const auto view = [](const float* data, int64_t rows, int64_t cols, int64_t ld, bool t) {
    at::Tensor matrix = at::from_blob(const_cast<float*>(data), {t ? cols : rows, t ? rows : cols},
                                      {ld, 1}, at::TensorOptions().dtype(at::kFloat));
    return t ? matrix.t() : matrix;
  };
  const at::Tensor a_view = view(a, m, k, lda, transpose_a);
  const at::Tensor b_view = view(b, k, n, ldb, transpose_b);
  at::Tensor c_view = view(c, m, n, ldc, false);
  if (beta == 0.0f) {
    at::Tensor product = at::mm(a_view, b_view);
    if (alpha != 1.0f) product.mul_(alpha);
    c_view.copy_(product);
  } else {
    c_view.addmm_(a_view, b_view, beta, alpha);
  }
#endif
}

const char* sgemm_backend() {
#ifdef DST_HAVE_DNNL
  return "onednn";
#else
  return "libtorch";
#endif
}

}  // namespace dst::kernels
