#include "deepseek_train/core/deferred_tensor.h"

#include <ATen/ATen.h>
#include <c10/core/CPUAllocator.h>

namespace dst {

at::Tensor deferred_tensor(at::IntArrayRef shape, at::ScalarType dtype) {
  c10::Storage storage(c10::Storage::use_byte_size_t(), 0,
                       c10::DataPtr(nullptr, c10::Device(c10::kCPU)), c10::GetCPUAllocator(),
                       /*resizable=*/true);
  at::Tensor t = at::detail::make_tensor<c10::TensorImpl>(
      std::move(storage), c10::DispatchKeySet(c10::DispatchKey::CPU),
      c10::scalarTypeToTypeMeta(dtype));
  t.unsafeGetTensorImpl()->set_sizes_contiguous(shape);
  return t;
}

bool is_deferred(const at::Tensor& t) {
  return t.defined() && t.numel() > 0 && t.storage().nbytes() == 0;
}

void allocate_deferred(at::Tensor& parameter) {
  if (!is_deferred(parameter)) return;
  at::NoGradGuard no_grad;
  parameter.set_data(at::empty(parameter.sizes(), parameter.options()));
}

}  // namespace dst
