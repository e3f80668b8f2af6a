// Reused host buffers for the flat tensors ZeRO materialises and releases over and over within a
// step (stage 3's gathered unit parameters, gathered again for backward; stage 2-3's unit
// gradients). A released tensor's buffer returns to the pool and is handed to the next tensor of
// the same size instead of a fresh allocation (sizes repeat: every decoder layer's unit has the
// same), so a step does not page-fault and churn the allocator per gather. At most `keep` free
// buffers of each size are kept; trim() returns them all to the allocator, which the engine does
// after each optimizer step, so between steps the pool holds nothing (the memory plan's
// held-between-steps figure stays exact). Private to the sharding module.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstddef>
#include <map>
#include <vector>

namespace dst::detail {

class BufferPool {
 public:
  explicit BufferPool(size_t keep_per_size) : keep_(keep_per_size) {}

  // Gives `flat` (whose storage is empty) a buffer of its size; its contents are whatever the
  // buffer last held.
  void attach(const at::Tensor& flat);
  // Takes `flat`'s buffer back; every view of `flat` stays valid as an object, without memory.
  void detach(const at::Tensor& flat);
  // Returns every free buffer to the allocator.
  void trim() { free_.clear(); }

  size_t free_buffers() const;
  size_t allocations() const { return allocations_; }  // buffers ever allocated

 private:
  size_t keep_;
  std::map<size_t, std::vector<at::DataPtr>> free_;  // by size in bytes
  size_t allocations_ = 0;
};

// Whether `flat` has memory (an empty tensor always counts as having it).
bool has_storage(const at::Tensor& flat);

}  // namespace dst::detail
