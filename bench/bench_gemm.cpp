// fp32 matmul rate of this machine through the two GEMMs the library can use: libtorch's
// (torch::mm, OpenBLAS on Debian) and kernels::sgemm (oneDNN when built with it).
// usage: dst_bench_gemm [threads] [n]  -> "libtorch_gflops X" and "sgemm_gflops Y" lines.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <functional>

#include "deepseek_train/kernels/cpu_gemm.h"

namespace {

// Best of 5 rounds of 10 products, in GFLOP/s.
double best_rate(int64_t n, const std::function<void()>& multiply) {
  for (int i = 0; i < 3; ++i) multiply();
  double best = 0.0;
  for (int round = 0; round < 5; ++round) {
    const auto start = std::chrono::steady_clock::now();
    for (int i = 0; i < 10; ++i) multiply();
    const double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    best = std::max(best, 10.0 * 2.0 * n * n * n / seconds / 1e9);
  }
  return best;
}

}  // namespace

int main(int argc, char** argv) {
  const int threads = argc > 1 ? std::atoi(argv[1]) : 1;
  const int64_t n = argc > 2 ? std::atoll(argv[2]) : 1024;
  at::set_num_threads(threads);
  const at::Tensor a = at::randn({n, n}), b = at::randn({n, n});
  at::Tensor c = at::empty({n, n});
  const double libtorch = best_rate(n, [&] { at::mm_out(c, a, b); });
  const double sgemm = best_rate(n, [&] {
    dst::kernels::sgemm(false, false, n, n, n, 1.0f, a.data_ptr<float>(), n, b.data_ptr<float>(), n,
                        0.0f, c.data_ptr<float>(), n);
  });
  std::printf("libtorch_gflops %.1f\nsgemm_gflops %.1f (%s)\n", libtorch, sgemm,
              dst::kernels::sgemm_backend());
  return 0;
}
