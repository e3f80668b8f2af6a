#include "deepseek_train/train/step_metrics.h"

#include <sys/resource.h>
#include <torch/cuda.h>
#include <torch/torch.h>
#include <unistd.h>

#include <algorithm>
#include <fstream>
#include <functional>
#include <vector>

#include "deepseek_train/core/device.h"
#include "deepseek_train/kernels/cpu_gemm.h"
#include "deepseek_train/kernels/fused_ops.h"

namespace dst {

namespace {

using Clock = std::chrono::steady_clock;

// Every rank's `value`, by world rank.
std::vector<double> all_gather_values(comm::Communicator& group, double value) {
  at::Tensor all = at::zeros({group.size()}, at::kDouble);
  at::Tensor mine = at::full({1}, value, at::kDouble);
  group.all_gather(all, mine)->wait();
  const double* data = all.data_ptr<double>();
  return std::vector<double>(data, data + group.size());
}

}  // namespace

double peak_rss_megabytes() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return static_cast<double>(usage.ru_maxrss) / 1024.0;  // ru_maxrss is in KiB on Linux
}

int64_t resident_set_bytes() {
  std::ifstream statm("/proc/self/statm");
  int64_t size_pages = 0, resident_pages = 0;
  if (!(statm >> size_pages >> resident_pages)) return 0;
  return resident_pages * static_cast<int64_t>(sysconf(_SC_PAGESIZE));
}

namespace {

double measure_device_matmul_flops(double seconds, at::ScalarType dtype,
                                   const c10::Device& device) {
  constexpr int64_t n = 4096;
  const auto options = torch::TensorOptions().dtype(dtype).device(device);
  const torch::Tensor a = torch::randn({n, n}, options), b = torch::randn({n, n}, options);
  torch::Tensor c = torch::empty({n, n}, options);
  at::mm_out(c, a, b);
  torch::cuda::synchronize(device.index());
  int64_t runs = 0;
  const auto start = Clock::now();
  double elapsed = 0;
  do {
    for (int i = 0; i < 10; ++i) at::mm_out(c, a, b);
    torch::cuda::synchronize(device.index());
    runs += 10;
    elapsed = std::chrono::duration<double>(Clock::now() - start).count();
  } while (elapsed < seconds);
  return 2.0 * n * n * n * runs / elapsed;
}

}  // namespace

double measure_matmul_flops(double seconds, at::ScalarType dtype, const c10::Device& device) {
  if (device.is_cuda()) return measure_device_matmul_flops(seconds, dtype, device);
  // Where the CPU has no bf16 matrix instructions the model multiplies bf16 in fp32
  // (kernels/fused_ops.h): that is the rate its GEMMs reach.
  if (dtype == at::kBFloat16 && !cpu_has_bf16_matmul()) dtype = at::kFloat;
  constexpr int64_t n = 384;
  const torch::Tensor a = torch::randn({n, n}).to(dtype), b = torch::randn({n, n}).to(dtype);
  torch::Tensor c = torch::empty({n, n}, a.options());
  const auto rate = [&](const std::function<void()>& multiply) {
    multiply();
    int64_t runs = 0;
    const auto start = Clock::now();
    double elapsed = 0;
    do {
      multiply();
      ++runs;
      elapsed = std::chrono::duration<double>(Clock::now() - start).count();
    } while (elapsed < seconds);
    return 2.0 * n * n * n * runs / elapsed;
  };
  const double libtorch = rate([&] { at::mm_out(c, a, b); });
  if (dtype != at::kFloat) return libtorch;
  const double sgemm = rate([&] {
    kernels::sgemm(false, false, n, n, n, 1.0f, a.data_ptr<float>(), n, b.data_ptr<float>(), n,
                   0.0f, c.data_ptr<float>(), n);
  });
  return std::max(libtorch, sgemm);
}

StepMetricsRecorder::StepMetricsRecorder(comm::CommunicatorPtr world, int64_t total_steps,
                                         int64_t first_step, double model_parameters,
                                         double peak_flops, double planned_peak_rss_mb)
    : world_(std::move(world)),
      total_steps_(total_steps),
      first_step_(first_step),
      model_parameters_(model_parameters),
      peak_flops_(peak_flops),
      planned_peak_rss_mb_(planned_peak_rss_mb),
      start_(Clock::now()) {}

StepMetrics StepMetricsRecorder::record(const StepResult& result, int64_t skipped_steps) {
  window_tokens_ += result.tokens;
  window_seconds_ += result.seconds;
  total_tokens_ += result.tokens;
  StepMetrics m;
  m.step = result.step;
  m.total_steps = total_steps_;
  m.loss = result.loss;
  m.lr = result.lr;
  m.grad_norm = result.grad_norm;
  m.tokens = result.tokens;
  m.step_time_s = result.seconds;
  m.tokens_per_s = result.seconds > 0 ? result.tokens / result.seconds : 0.0;
  m.comm_bytes = result.comm_bytes;
  m.comm_wait_s = result.comm_wait_seconds;
  m.comm_bytes_by_op = result.comm_bytes_by_op;
  m.comm_wait_s_by_op = result.comm_wait_seconds_by_op;
  m.peak_rss_mb = peak_rss_megabytes();
  m.planned_peak_rss_mb = planned_peak_rss_mb_;
  if (device_.is_cuda()) {
    const DeviceMemory memory = device_memory(device_);
    m.peak_device_allocated_mb = static_cast<double>(memory.peak_allocated_bytes) / (1 << 20);
    m.peak_device_reserved_mb = static_cast<double>(memory.peak_reserved_bytes) / (1 << 20);
    m.planned_peak_device_mb = planned_device_peak_mb_;
  }
  m.peak_rss_mb_per_rank = all_gather_values(*world_, m.peak_rss_mb);
  m.peak_rss_mb_max =
      *std::max_element(m.peak_rss_mb_per_rank.begin(), m.peak_rss_mb_per_rank.end());
  m.mfu = mfu(m.tokens_per_s, static_cast<int64_t>(model_parameters_), peak_flops_);
  m.loss_scale = result.loss_scale;
  m.skipped = result.skipped;
  m.skipped_steps = skipped_steps;
  m.pipeline_wait_s = result.pipeline_wait_seconds;
  m.expert_load_max_over_mean = result.expert_load_max_over_mean;
  m.dropped_tokens = result.dropped_tokens;
  m.balance_loss = result.balance_loss;
  m.privacy = result.privacy;
  return m;
}

StepMetrics StepMetricsRecorder::windowed(const StepMetrics& metrics) {
  StepMetrics shown = metrics;
  shown.tokens_per_s = window_seconds_ > 0 ? window_tokens_ / window_seconds_ : 0.0;
  shown.mfu = mfu(shown.tokens_per_s, static_cast<int64_t>(model_parameters_), peak_flops_);
  window_tokens_ = window_seconds_ = 0;
  return shown;
}

double StepMetricsRecorder::elapsed_seconds() const {
  return std::chrono::duration<double>(Clock::now() - start_).count();
}

double StepMetricsRecorder::eta_seconds(int64_t step) const {
  return elapsed_seconds() / static_cast<double>(step - first_step_) *
         static_cast<double>(total_steps_ - step);
}

double StepMetricsRecorder::tokens_per_second() const {
  const double elapsed = elapsed_seconds();
  return elapsed > 0 ? total_tokens_ / elapsed : 0.0;
}

}  // namespace dst
