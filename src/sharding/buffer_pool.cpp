#include "buffer_pool.h"

#include <c10/core/StorageImpl.h>

namespace dst::detail {

namespace {
size_t bytes_of(const at::Tensor& flat) {
  return static_cast<size_t>(flat.numel()) * flat.element_size();
}
}  // namespace

bool has_storage(const at::Tensor& flat) {
  return flat.storage().unsafeGetStorageImpl()->nbytes() > 0 || flat.numel() == 0;
}

void BufferPool::attach(const at::Tensor& flat) {
  if (has_storage(flat)) return;
  c10::StorageImpl* storage = flat.storage().unsafeGetStorageImpl();
  const size_t bytes = bytes_of(flat);
  std::vector<at::DataPtr>& same_size = free_[bytes];
  at::DataPtr buffer;
  if (same_size.empty()) {
    buffer = storage->allocator()->allocate(bytes);
    ++allocations_;
  } else {
    buffer = std::move(same_size.back());
    same_size.pop_back();
  }
  storage->set_data_ptr_noswap(std::move(buffer));
  storage->set_nbytes(bytes);
}

void BufferPool::detach(const at::Tensor& flat) {
  if (flat.numel() == 0 || !has_storage(flat)) return;
  c10::StorageImpl* storage = flat.storage().unsafeGetStorageImpl();
  at::DataPtr buffer = storage->set_data_ptr(at::DataPtr(nullptr, flat.device()));
  storage->set_nbytes(0);
  std::vector<at::DataPtr>& same_size = free_[bytes_of(flat)];
  if (same_size.size() < keep_) same_size.push_back(std::move(buffer));
}

size_t BufferPool::free_buffers() const {
  size_t count = 0;
  for (const auto& [bytes, buffers] : free_) count += buffers.size();
  return count;
}

}  // namespace dst::detail
