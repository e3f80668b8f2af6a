#include "kernels/cpu_elementwise.h"

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>

// Each public kernel is compiled three times (AVX-512, AVX2, baseline x86-64) and picked at load
// time by the CPU's features; loops are `omp simd` (-fopenmp-simd, no OpenMP runtime).
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && \
    !defined(__SANITIZE_ADDRESS__)
#define DST_ISA_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define DST_ISA_CLONES
#endif

namespace dst::kernels {
namespace {

// exp(x) in float arithmetic that vectorises (range reduction to r in [-ln2/2, ln2/2] and the
// Cephes expf polynomial): within 2 ulp of std::exp where the result is a normal float, 0 below
// -87.34 (and for -inf), +inf above 88.72 (and for +inf), NaN for NaN.
inline float fast_exp(float x) {
  constexpr float kHigh = 88.72283935546875f, kLow = -87.33654022216797f;
  const float clamped = x > kHigh ? kHigh : (x < kLow ? kLow : x);
  const float safe = clamped == clamped ? clamped : 0.0f;  // NaN: computed as 0, returned as NaN
  // Round to nearest by adding and subtracting 1.5 * 2^23 (no call to floor, so it vectorises).
  const float n = (safe * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
  float r = safe - n * 0.693359375f;
  r = r - n * -2.12194440e-4f;
  const float r2 = r * r;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r2 + r + 1.0f;
  // 2^n through the exponent bits, n in [-126, 128]; n = 128 is 2^127 * 2 (finite results up to
  // FLT_MAX instead of an early +inf).
  const float top = n > 127.5f ? 1.0f : 0.0f;
  const int32_t bits = (static_cast<int32_t>(n - top) + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof(scale));
  float result = p * scale * (1.0f + top);
  result = x < kLow ? 0.0f : result;
  result = x > kHigh ? std::numeric_limits<float>::infinity() : result;
  return x == x ? result : x;
}

inline float sigmoid(float x) { return 1.0f / (1.0f + fast_exp(-x)); }

}  // namespace

DST_ISA_CLONES
void rms_norm_forward(const float* x, const float* w, float* y, float* rstd, int64_t rows,
                      int64_t dim, float eps) {
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = x + r * dim;
    float* yr = y + r * dim;
    float sum_sq = 0.0f;
#pragma omp simd reduction(+ : sum_sq)
    for (int64_t i = 0; i < dim; ++i) sum_sq += xr[i] * xr[i];
    const float inv = 1.0f / std::sqrt(sum_sq / static_cast<float>(dim) + eps);
    rstd[r] = inv;
#pragma omp simd
    for (int64_t i = 0; i < dim; ++i) yr[i] = w[i] * (xr[i] * inv);
  }
}

DST_ISA_CLONES
void rms_norm_backward(const float* dy, const float* x, const float* w, const float* rstd,
                       float* dx, float* dw_accum, int64_t rows, int64_t dim) {
  const float inv_dim = 1.0f / static_cast<float>(dim);
  for (int64_t r = 0; r < rows; ++r) {
    const float* dyr = dy + r * dim;
    const float* xr = x + r * dim;
    const float inv = rstd[r];
    if (dw_accum != nullptr) {
#pragma omp simd
      for (int64_t i = 0; i < dim; ++i) dw_accum[i] += dyr[i] * (xr[i] * inv);
    }
    if (dx == nullptr) continue;
    // y = w * x * inv with inv = (mean(x^2) + eps)^-1/2:
    // dx = inv * (w dy) - x * inv^3 * mean(w dy x).
    float dot = 0.0f;
#pragma omp simd reduction(+ : dot)
    for (int64_t i = 0; i < dim; ++i) dot += w[i] * dyr[i] * xr[i];
    const float coef = dot * inv_dim * inv * inv * inv;
    float* dxr = dx + r * dim;
#pragma omp simd
    for (int64_t i = 0; i < dim; ++i) dxr[i] = inv * (w[i] * dyr[i]) - xr[i] * coef;
  }
}

DST_ISA_CLONES
void swiglu_forward(const float* gate, const float* up, float* out, int64_t n) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) out[i] = gate[i] * sigmoid(gate[i]) * up[i];
}

DST_ISA_CLONES
void swiglu_backward(const float* dout, const float* gate, const float* up, float* dgate,
                     float* dup, int64_t n) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) {
    const float g = gate[i];
    const float s = sigmoid(g);
    const float silu = g * s;
    if (dup != nullptr) dup[i] = dout[i] * silu;
    // d silu / dg = s * (1 + g * (1 - s))
    if (dgate != nullptr) dgate[i] = dout[i] * up[i] * (s * (1.0f + g * (1.0f - s)));
  }
}

DST_ISA_CLONES
void rotary_rows(float* x, int64_t stride, const float* cos, const float* sin, int64_t rows,
                 int64_t dim, bool inverse) {
  const int64_t half = dim / 2;
  const float sign = inverse ? -1.0f : 1.0f;
  for (int64_t r = 0; r < rows; ++r) {
    float* x1 = x + r * stride;
    float* x2 = x1 + half;
    const float* c = cos + r * half;
    const float* s = sin + r * half;
#pragma omp simd
    for (int64_t i = 0; i < half; ++i) {
      const float a = x1[i], b = x2[i], si = sign * s[i];
      x1[i] = a * c[i] - b * si;
      x2[i] = b * c[i] + a * si;
    }
  }
}

DST_ISA_CLONES
float masked_softmax_row(float* row, int64_t valid, int64_t len) {
  float max = -std::numeric_limits<float>::infinity();
#pragma omp simd reduction(max : max)
  for (int64_t i = 0; i < valid; ++i) max = row[i] > max ? row[i] : max;
  float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
  for (int64_t i = 0; i < valid; ++i) {
    row[i] = fast_exp(row[i] - max);
    sum += row[i];
  }
  const float inv = 1.0f / sum;
#pragma omp simd
  for (int64_t i = 0; i < valid; ++i) row[i] *= inv;
  for (int64_t i = valid; i < len; ++i) row[i] = 0.0f;
  return max + std::log(sum);
}

DST_ISA_CLONES
void softmax_from_lse_row(float* row, float lse, int64_t valid, int64_t len) {
#pragma omp simd
  for (int64_t i = 0; i < valid; ++i) row[i] = fast_exp(row[i] - lse);
  for (int64_t i = valid; i < len; ++i) row[i] = 0.0f;
}

DST_ISA_CLONES
void masked_softmax_backward_row(const float* p, float* dp, int64_t valid, int64_t len) {
  float dot = 0.0f;
#pragma omp simd reduction(+ : dot)
  for (int64_t i = 0; i < valid; ++i) dot += p[i] * dp[i];
#pragma omp simd
  for (int64_t i = 0; i < valid; ++i) dp[i] = p[i] * (dp[i] - dot);
  for (int64_t i = valid; i < len; ++i) dp[i] = 0.0f;
}

DST_ISA_CLONES
float log_sum_exp_row(const float* logits, int64_t vocab) {
  float max = -std::numeric_limits<float>::infinity();
#pragma omp simd reduction(max : max)
  for (int64_t i = 0; i < vocab; ++i) max = logits[i] > max ? logits[i] : max;
  float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
  for (int64_t i = 0; i < vocab; ++i) sum += fast_exp(logits[i] - max);
  return max + std::log(sum);
}

DST_ISA_CLONES
void cross_entropy_backward_row(const float* logits, float lse, int64_t label, float scale,
                                float* dlogits, int64_t vocab) {
#pragma omp simd
  for (int64_t i = 0; i < vocab; ++i) dlogits[i] = scale * fast_exp(logits[i] - lse);
  if (label >= 0 && label < vocab) dlogits[label] -= scale;
}

}  // namespace dst::kernels
