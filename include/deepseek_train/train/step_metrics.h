// From a step's StepResult to the StepMetrics row that metrics.jsonl, Prometheus and the progress
// line report: tokens/s, MFU against the ranks' matmul peak, every rank's peak RSS; and the
// throughput over the current logging window, the run's elapsed time and its ETA.
#pragma once

#include <ATen/core/ScalarType.h>
#include <c10/core/Device.h>

#include <chrono>
#include <cstdint>

#include "deepseek_train/comm/communicator.h"
#include "deepseek_train/train/metrics.h"
#include "deepseek_train/train/step_types.h"

namespace dst {

// Achieved matmul FLOP/s of this process with its intra-op threads in `dtype`, over ~`seconds`
// per GEMM: for fp32 the faster of libtorch's and kernels::sgemm (which the fused kernels use),
// for bf16 libtorch's (oneDNN, AMX where the CPU has it) — or the fp32 rate where the CPU has no
// bf16 matrix instructions, since the model then multiplies bf16 in fp32.
// On a CUDA `device`: the rate of ATen's (cuBLAS) GEMM at 4096^3 there.
double measure_matmul_flops(double seconds, at::ScalarType dtype,
                            const c10::Device& device = c10::Device(c10::kCPU));

// This process's peak resident memory so far, in MiB.
double peak_rss_megabytes();
// This process's resident memory now, in bytes (0 where /proc/self/statm cannot be read).
int64_t resident_set_bytes();

class StepMetricsRecorder {
 public:
  // `model_parameters`: the whole model's (for MFU); `peak_flops`: the sum over every rank;
  // `planned_peak_rss_mb`: this rank's MemoryPlan::peak() in MiB, reported beside the measured
  // peak (0: none).
  StepMetricsRecorder(comm::CommunicatorPtr world, int64_t total_steps, int64_t first_step,
                      double model_parameters, double peak_flops, double planned_peak_rss_mb = 0);
  // The row of a step; collective over the world (every rank's peak RSS).
  StepMetrics record(const StepResult& result, int64_t skipped_steps);
  // The row as a progress line shows it: tokens/s and MFU over the steps since the previous
  // call (the logging window), which starts a new window.
  StepMetrics windowed(const StepMetrics& metrics);
  // Seconds to the last step at the run's pace so far.
  double eta_seconds(int64_t step) const;
  double elapsed_seconds() const;
  double tokens_per_second() const;  // over the whole run
  // Where the model computes: on a GPU each row reports its peak device memory beside the plan's
  // (MemoryPlan::device_peak, MiB).
  void set_device(const c10::Device& device, double planned_device_peak_mb) {
    device_ = device;
    planned_device_peak_mb_ = planned_device_peak_mb;
  }

 private:
  comm::CommunicatorPtr world_;
  int64_t total_steps_, first_step_;
  double model_parameters_, peak_flops_, planned_peak_rss_mb_;
  std::chrono::steady_clock::time_point start_;
  c10::Device device_{c10::kCPU};
  double planned_device_peak_mb_ = 0;
  double window_tokens_ = 0, window_seconds_ = 0, total_tokens_ = 0;
};

}  // namespace dst
