#include "deepseek_train/sharding/grad_reducer.h"

#include <torch/torch.h>

#include "deepseek_train/core/error.h"
#include "post_accumulate_hook.h"

namespace dst {

// Keeps the gradient-accumulator nodes alive: autograd holds them weakly, and a hook registered
// on a node that is later recreated would never fire.
// Hooks reach the reducer through `self`, which the reducer resets when it is destroyed, so a
// graph that outlives the reducer never calls into freed memory.
struct GradientReducer::HookHandles {
  std::vector<std::shared_ptr<torch::autograd::Node>> accumulators;
  std::shared_ptr<GradientReducer*> self;
};

GradientReducer::GradientReducer(std::vector<at::Tensor> parameters, comm::CommunicatorPtr dp_group,
                                 const DataParallelOptions& options, at::ScalarType reduce_type)
    : parameters_(std::move(parameters)),
      bucket_of_parameter_(parameters_.size(), -1),
      group_(std::move(dp_group)),
      reduce_type_(reduce_type),
      hooks_(std::make_unique<HookHandles>()) {
  DST_CHECK(!parameters_.empty(), ConfigError, "data parallel: the model has no parameters");
  const auto dtype = parameters_.front().scalar_type();
  const auto device = parameters_.front().device();
  const int64_t bucket_limit =
      std::max<int64_t>(1, static_cast<int64_t>(options.bucket_mb * 1024 * 1024));

  // Assign parameters to buckets in reverse order.
  std::vector<std::vector<int>> groups;
  int64_t current_bytes = 0;
  for (int i = static_cast<int>(parameters_.size()) - 1; i >= 0; --i) {
    const at::Tensor& p = parameters_[i];
    DST_CHECK(p.requires_grad(), ConfigError,
              "data parallel: parameter " << i << " does not require grad");
    DST_CHECK(p.scalar_type() == dtype && p.device() == device, ConfigError,
              "data parallel: parameters must share one dtype and device");
    const int64_t bytes = p.numel() * p.element_size();
    if (groups.empty() || (current_bytes > 0 && current_bytes + bytes > bucket_limit)) {
      groups.emplace_back();
      current_bytes = 0;
    }
    groups.back().push_back(i);
    current_bytes += bytes;
  }

  for (auto& indices : groups) {
    Bucket bucket;
    int64_t numel = 0;
    for (int i : indices) numel += parameters_[i].numel();
    bucket.flat = torch::zeros({numel}, torch::TensorOptions().dtype(dtype).device(device));
    int64_t offset = 0;
    for (int i : indices) {
      at::Tensor& p = parameters_[i];
      p.mutable_grad() = bucket.flat.narrow(0, offset, p.numel()).view(p.sizes());
      offset += p.numel();
      bucket_of_parameter_[i] = static_cast<int>(buckets_.size());
    }
    bucket.parameter_indices = indices;
    bucket.pending = static_cast<int>(indices.size());
    buckets_.push_back(std::move(bucket));
  }

  hooks_->self = std::make_shared<GradientReducer*>(this);
  std::weak_ptr<GradientReducer*> weak_self = hooks_->self;
  for (int i = 0; i < static_cast<int>(parameters_.size()); ++i) {
    hooks_->accumulators.push_back(detail::add_post_accumulate_hook(parameters_[i], [weak_self, i] {
      if (auto self = weak_self.lock()) (*self)->on_gradient_ready(i);
    }));
  }
}

GradientReducer::~GradientReducer() { hooks_->self.reset(); }

void GradientReducer::zero_grad() {
  for (Bucket& bucket : buckets_) {
    DST_ASSERT(bucket.work == nullptr, "zero_grad() while a reduction is in flight");
    bucket.flat.zero_();
    bucket.pending = static_cast<int>(bucket.parameter_indices.size());
  }
  next_to_launch_ = 0;
}

void GradientReducer::set_sync(bool sync) { sync_ = sync; }

void GradientReducer::on_gradient_ready(int parameter_index) {
  if (!sync_) return;
  Bucket& bucket = buckets_[bucket_of_parameter_[parameter_index]];
  DST_ASSERT(bucket.pending > 0,
             "gradient of parameter " << parameter_index << " became ready twice in one backward");
  --bucket.pending;
  launch_ready_buckets();
  // MPI's non-blocking collectives advance only inside MPI calls: test the buckets in flight so
  // their reduction proceeds while backward computes the remaining gradients.
  for (int b = 0; b < next_to_launch_; ++b)
    if (buckets_[b].work) buckets_[b].work->is_completed();
}

void GradientReducer::launch_ready_buckets() {
  while (next_to_launch_ < static_cast<int>(buckets_.size()) &&
         buckets_[next_to_launch_].pending == 0) {
    const int index = next_to_launch_++;
    Bucket& bucket = buckets_[index];
    if (bucket.flat.scalar_type() == reduce_type_) {
      bucket.work = group_->all_reduce(bucket.flat, comm::ReduceOp::kSum);
    } else {
      // At most two widened copies in flight (the memory plan's units in flight): the one before
      // the previous bucket completes first (launch order, the same on every rank).
      if (index >= 2 && buckets_[index - 2].reduce_copy.defined()) complete(buckets_[index - 2]);
      bucket.reduce_copy = bucket.flat.to(reduce_type_);
      bucket.work = group_->all_reduce(bucket.reduce_copy, comm::ReduceOp::kSum);
    }
  }
}

void GradientReducer::finish() {
  if (!sync_) return;  // an accumulation micro-batch: nothing was launched
  // Buckets whose gradients never arrived (unused parameters) are launched now, still in order.
  for (Bucket& bucket : buckets_) bucket.pending = 0;
  launch_ready_buckets();
  for (Bucket& bucket : buckets_) {
    complete(bucket);
    bucket.pending = static_cast<int>(bucket.parameter_indices.size());
  }
  next_to_launch_ = 0;
}

void GradientReducer::complete(Bucket& bucket) {
  if (bucket.work) bucket.work->wait();
  bucket.work.reset();
  if (bucket.reduce_copy.defined()) {
    bucket.flat.copy_(bucket.reduce_copy);
    bucket.reduce_copy = at::Tensor();
  }
}

std::vector<int64_t> GradientReducer::bucket_bytes() const {
  std::vector<int64_t> bytes;
  for (const Bucket& bucket : buckets_)
    bytes.push_back(bucket.flat.numel() * bucket.flat.element_size());
  return bytes;
}

}  // namespace dst
