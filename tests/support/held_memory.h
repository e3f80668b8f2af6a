// What a rank actually holds, measured rather than derived from the config: the bytes of the
// storages behind its parameters, gradients, fp32 masters and Adam moments (through the engines'
// state slices and the model's tensors), and a count of the bytes libtorch's CPU allocator hands
// out while a scope is open (c10's memory-reporting hook, the one the profiler uses). Tests hold
// these against Trainer::memory_plan().
#pragma once

#include <c10/core/Allocator.h>
#include <c10/util/ThreadLocalDebugInfo.h>
#include <torch/torch.h>

#include <cstdint>
#include <memory>
#include <set>

#include "deepseek_train/train/trainer.h"

namespace dst::testing {

// Counts CPU tensor bytes allocated minus freed on this thread while alive (allocations made
// before it and freed during it are not counted).
class AllocationCounter {
 public:
  AllocationCounter()
      : reporter_(std::make_shared<Reporter>()),
        guard_(c10::DebugInfoKind::PROFILER_STATE, reporter_) {}
  int64_t live_bytes() const { return reporter_->live; }
  int64_t peak_bytes() const { return reporter_->peak; }

 private:
  struct Reporter final : c10::MemoryReportingInfoBase {
    int64_t live = 0, peak = 0;
    void reportMemoryUsage(void*, int64_t alloc_size, size_t, size_t, c10::Device device) override {
      if (device.type() != c10::DeviceType::CPU) return;
      live += alloc_size;
      peak = std::max(peak, live);
    }
    bool memoryProfilingEnabled() const override { return true; }
  };
  std::shared_ptr<Reporter> reporter_;
  c10::DebugInfoGuard guard_;
};

// Bytes of the storages a rank holds, each storage counted once, in the first category that
// reaches it: parameters (the model's and the engines' parameter shards), masters, moments,
// gradients (the model's .grad() and the engines' gradient shards). A released storage (ZeRO-3
// between gathers) counts 0.
struct HeldBytes {
  int64_t parameters = 0, master_weights = 0, optimizer_moments = 0, gradients = 0;
  bool masters_are_fp32 = true;  // every master slice is float32
};

inline HeldBytes measure_held_bytes(Trainer& trainer) {
  HeldBytes held;
  std::set<const c10::StorageImpl*> seen;
  auto add = [&seen](int64_t& into, const torch::Tensor& t) {
    if (!t.defined()) return;
    const c10::StorageImpl* storage = t.storage().unsafeGetStorageImpl();
    if (seen.insert(storage).second) into += static_cast<int64_t>(storage->nbytes());
  };
  const std::vector<ParameterStateSlice> slices = trainer.engine_state_slices();
  for (const auto& [name, tensor] : trainer.named_parameters()) add(held.parameters, tensor);
  for (const ParameterStateSlice& s : slices) add(held.parameters, s.parameter);
  for (const ParameterStateSlice& s : slices) {
    add(held.master_weights, s.master);
    held.masters_are_fp32 = held.masters_are_fp32 && s.master.scalar_type() == torch::kFloat32;
  }
  for (const ParameterStateSlice& s : slices) {
    add(held.optimizer_moments, s.exp_avg);
    add(held.optimizer_moments, s.exp_avg_sq);
  }
  for (const auto& [name, tensor] : trainer.named_parameters()) add(held.gradients, tensor.grad());
  for (const ParameterStateSlice& s : slices) add(held.gradients, s.gradient);
  return held;
}

}  // namespace dst::testing
