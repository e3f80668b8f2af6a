#include "deepseek_train/sharding/zero.h"

#include <torch/cuda.h>
#include <torch/torch.h>

#include "buffer_pool.h"
#include "deepseek_train/core/error.h"
#include "deepseek_train/optim/adamw.h"
#include "deepseek_train/optim/grad_clip.h"
#include "post_accumulate_hook.h"

namespace dst {

namespace {

// Frees the memory behind a flat buffer while every view of it (parameters, gradients, tensors
// autograd saved for backward) stays valid as an object; materialize() gives the storage memory
// again, so those views see whatever is written into it next (the all-gathered values).
void release_storage(const at::Tensor& flat) {
  c10::StorageImpl* storage = flat.storage().unsafeGetStorageImpl();
  storage->set_data_ptr_noswap(at::DataPtr(nullptr, flat.device()));
  storage->set_nbytes(0);
}

bool is_materialized(const at::Tensor& flat) {
  return flat.storage().unsafeGetStorageImpl()->nbytes() > 0 || flat.numel() == 0;
}

// Free buffers of one size the pool keeps within a step: units of one size live at once are the
// one computing, the prefetched one and gradients still being reduce-scattered.
constexpr size_t kPooledBuffersKept = 4;

}  // namespace

struct ZeroEngine::Unit {
  std::vector<std::string> names;
  std::vector<at::Tensor> params;
  std::vector<int64_t> offsets;
  std::vector<bool> decay;
  std::vector<bool> counted;  // in the gradient norm
  int64_t padded = 0;
  int64_t shard = 0;
  at::Tensor flat_param;    // [padded]; stage 3: storage present only while gathered
  at::Tensor flat_grad;     // [padded]; stages 2-3: storage present only during the unit's backward
  at::Tensor param_shard;   // [shard]; stages 1-2: a view of flat_param; stage 3: its own tensor
  at::Tensor master_shard;  // [shard] fp32; the same tensor as param_shard for fp32 parameters
  // optim.offload cpu with device parameters: the step's gradient copied to pinned host memory
  // (master and moments live there too); undefined otherwise.
  at::Tensor grad_host;
  at::Tensor reduce_input;  // flat_grad widened to the reduce dtype while it is reduced
  at::Tensor grad_shard, exp_avg, exp_avg_sq, reduce_buffer;  // [shard]
  comm::WorkPtr gather_work;
  comm::WorkPtr reduce_work;
  comm::WorkPtr replica_work;  // HSDP: the reduced shard's sum across the replicas
  int pending = 0;             // gradients not yet accumulated in the current backward

  // The part of parameter i inside rank's shard: `local` is its offset in the shard, `in_param`
  // its offset in the flattened parameter.
  struct Segment {
    size_t i;
    int64_t local, in_param, length;
  };
  std::vector<Segment> owned_segments(int64_t rank) const {
    std::vector<Segment> segments;
    const int64_t shard_begin = rank * shard;
    for (size_t i = 0; i < params.size(); ++i) {
      const int64_t begin = std::max(offsets[i], shard_begin);
      const int64_t end = std::min(offsets[i] + params[i].numel(), shard_begin + shard);
      if (begin < end)
        segments.push_back({i, begin - shard_begin, begin - offsets[i], end - begin});
    }
    return segments;
  }
};

// Hooks reach the engine through this, reset when the engine is destroyed.
struct ZeroEngine::HookState {
  ZeroEngine* engine = nullptr;
  std::vector<std::shared_ptr<torch::autograd::Node>> accumulators;
};

ZeroEngine::ZeroEngine(const DataParallelEngineSpec& spec)
    : group_(spec.dp_group),
      replicate_group_(spec.dp_replicate_group && spec.dp_replicate_group->size() > 1
                           ? spec.dp_replicate_group
                           : nullptr),
      stage_(spec.data_parallel.zero_stage),
      options_(spec.optim),
      tied_(spec.first_unit_reused_by_last),
      reduce_type_(spec.reduce_type),
      hook_state_(std::make_shared<HookState>()) {
  const int stage = stage_;
  const at::ScalarType param_type = spec.param_type;
  DST_CHECK(stage >= 1 && stage <= 3, ConfigError, "ZeRO stage must be 1, 2 or 3, got " << stage);
  const int world = group_->size();
  const int rank = group_->rank();
  torch::NoGradGuard no_grad;
  for (auto named : spec.units) {
    // One unit at a time: its parameters get memory and values, are copied into the unit's flat
    // buffers, and (stage 3) leave only this rank's shard behind before the next unit starts.
    if (spec.materialize) spec.materialize(named);
    auto unit = std::make_unique<Unit>();
    int64_t numel = 0;
    for (auto& [name, param] : named) {
      DST_CHECK(param.scalar_type() == at::kFloat, ConfigError,
                "ZeRO: parameter '" << name << "' is " << param.scalar_type()
                                    << "; pass fp32 parameters (the engine casts them)");
      unit->names.push_back(name);
      unit->offsets.push_back(numel);
      unit->decay.push_back(spec.decays(name, param));
      unit->counted.push_back(!spec.counts_in_norm || spec.counts_in_norm(name));
      unit->params.push_back(param);
      numel += param.numel();
    }
    unit->padded = (numel + world - 1) / world * world;
    unit->shard = unit->padded / world;
    // The unit's buffers live where its parameters do (train.device).
    const c10::Device device =
        unit->params.empty() ? c10::Device(c10::kCPU) : unit->params.front().device();
    auto options_fp32 = torch::TensorOptions().dtype(torch::kFloat32).device(device);
    auto options_param = torch::TensorOptions().dtype(param_type).device(device);
    // With narrower parameters, the fp32 values (before rounding) seed the master shard.
    const bool separate_master = param_type != at::kFloat;
    at::Tensor flat_fp32 =
        separate_master ? torch::zeros({unit->padded}, options_fp32) : at::Tensor();
    unit->flat_param = torch::zeros({unit->padded}, options_param);
    // Stages 2-3 release the flat gradient at once (its memory comes from the pool in backward).
    unit->flat_grad = stage >= 2 ? torch::empty({unit->padded}, options_param)
                                 : torch::zeros({unit->padded}, options_param);
    for (size_t i = 0; i < unit->params.size(); ++i) {
      at::Tensor& p = unit->params[i];
      if (separate_master) flat_fp32.narrow(0, unit->offsets[i], p.numel()).copy_(p.reshape({-1}));
      at::Tensor slot = unit->flat_param.narrow(0, unit->offsets[i], p.numel()).view(p.sizes());
      slot.copy_(p);
      p.set_data(slot);
      p.mutable_grad() = unit->flat_grad.narrow(0, unit->offsets[i], p.numel()).view(p.sizes());
    }
    at::Tensor own = unit->flat_param.narrow(0, rank * unit->shard, unit->shard);
    unit->param_shard = stage_ == 3 ? own.clone() : own;
    unit->master_shard = separate_master
                             ? flat_fp32.narrow(0, rank * unit->shard, unit->shard).clone()
                             : unit->param_shard;
    unit->grad_shard = torch::zeros({unit->shard}, options_fp32);
    // optim.offload cpu with parameters on a GPU: master weights and moments in pinned host
    // memory, the update by the CPU kernel, copies both ways asynchronous (step()).
    const bool offload = options_.offload == "cpu" && !device.is_cpu();
    const auto options_state =
        offload ? torch::TensorOptions().dtype(torch::kFloat32).pinned_memory(true) : options_fp32;
    if (offload) {
      at::Tensor host_master = torch::empty({unit->shard}, options_state);
      host_master.copy_(unit->master_shard);
      unit->master_shard = host_master;
      unit->grad_host = torch::empty({unit->shard}, options_state);
    }
    unit->exp_avg = torch::zeros({unit->shard}, options_state);
    unit->exp_avg_sq = torch::zeros({unit->shard}, options_state);
    unit->reduce_buffer = torch::zeros({unit->shard}, options_fp32.dtype(reduce_type_));
    unit->pending = static_cast<int>(unit->params.size());
    if (stage_ >= 2) release_storage(unit->flat_grad);
    if (stage_ == 3) release_storage(unit->flat_param);
    units_.push_back(std::move(unit));
  }
  next_to_reduce_ = static_cast<int>(units_.size()) - 1;
  // From here on the released flat tensors take their memory from the pool.
  if (stage_ >= 2) pool_ = std::make_unique<detail::BufferPool>(kPooledBuffersKept);

  hook_state_->engine = this;
  std::weak_ptr<HookState> weak = hook_state_;
  for (int u = 0; u < static_cast<int>(units_.size()); ++u) {
    for (const at::Tensor& p : units_[u]->params) {
      hook_state_->accumulators.push_back(detail::add_post_accumulate_hook(p, [weak, u] {
        if (auto state = weak.lock())
          if (state->engine) state->engine->on_gradient_ready(u);
      }));
    }
  }
}

ZeroEngine::~ZeroEngine() { hook_state_->engine = nullptr; }

void ZeroEngine::describe_layout(MemoryPlanInputs& inputs) const {
  for (int64_t padded : padded_unit_elements()) inputs.zero_unit_padded_elements.push_back(padded);
}

std::vector<int64_t> ZeroEngine::padded_unit_elements() const {
  std::vector<int64_t> result;
  for (const auto& unit : units_) result.push_back(unit->padded);
  return result;
}

void ZeroEngine::zero_grad() {
  for (auto& unit : units_) {
    DST_ASSERT(unit->reduce_work == nullptr && unit->replica_work == nullptr,
               "zero_grad() while a reduction is in flight");
    unit->grad_shard.zero_();
    if (stage_ == 1) unit->flat_grad.zero_();
    unit->pending = static_cast<int>(unit->params.size());
  }
  next_to_reduce_ = static_cast<int>(units_.size()) - 1;
}

void ZeroEngine::set_sync(bool last_micro_batch) { sync_ = last_micro_batch; }

void ZeroEngine::start_gather(int u) {
  Unit& unit = *units_[u];
  if (stage_ != 3 || unit.gather_work || is_materialized(unit.flat_param)) return;
  pool_->attach(unit.flat_param);
  unit.gather_work = group_->all_gather(unit.flat_param, unit.param_shard);
}

void ZeroEngine::ensure_gathered(int u) {
  if (stage_ != 3) return;
  start_gather(u);
  Unit& unit = *units_[u];
  if (unit.gather_work) {
    // Orders the compute after the gather: a stream wait under NCCL, a host wait under MPI.
    unit.gather_work->synchronize();
    unit.gather_work.reset();
  }
}

void ZeroEngine::release(int u) {
  if (stage_ != 3) return;
  Unit& unit = *units_[u];
  DST_ASSERT(unit.gather_work == nullptr, "releasing unit " << u << " while it is being gathered");
  pool_->detach(unit.flat_param);
}

void ZeroEngine::before_forward(int u) {
  if (stage_ != 3) return;
  if (tied_ && u == static_cast<int>(units_.size()) - 1) ensure_gathered(0);
  ensure_gathered(u);
  if (u + 1 < static_cast<int>(units_.size())) start_gather(u + 1);  // prefetch
}

at::Tensor ZeroEngine::after_forward(int u, const at::Tensor& output) {
  const int last = static_cast<int>(units_.size()) - 1;
  if (stage_ == 3 && !(tied_ && u == 0)) release(u);
  if (stage_ == 3 && tied_ && u == last) release(0);
  if (stage_ >= 2 && output.requires_grad()) {
    std::weak_ptr<HookState> weak = hook_state_;
    // The gradient of a unit's output is complete just before the unit's own backward starts.
    output.register_hook([weak, u](const at::Tensor& grad) {
      if (auto state = weak.lock())
        if (state->engine) state->engine->on_backward_begin(u);
      return grad;
    });
  }
  return output;
}

void ZeroEngine::prepare_gradient_buffer(int u) {
  Unit& unit = *units_[u];
  if (unit.reduce_work) {  // the previous micro-batch's reduction still reads flat_grad
    unit.reduce_work->synchronize();
    complete_reduction(u);
  }
  if (!is_materialized(unit.flat_grad)) {
    pool_->attach(unit.flat_grad);
    unit.flat_grad.zero_();
  }
}

void ZeroEngine::on_backward_begin(int u) {
  const bool uses_first_unit = tied_ && u == static_cast<int>(units_.size()) - 1;
  // At most two unit gradients in flight, the one computing and the one being reduce-scattered
  // (the memory plan's units_in_flight): older reductions complete first, in launch order.
  for (int v = static_cast<int>(units_.size()) - 1; v > u + 1; --v) {
    if (units_[v]->reduce_work) {
      units_[v]->reduce_work->synchronize();
      complete_reduction(v);
    }
  }
  prepare_gradient_buffer(u);
  if (uses_first_unit) prepare_gradient_buffer(0);
  if (stage_ == 3) {
    ensure_gathered(u);
    if (uses_first_unit) ensure_gathered(0);
    if (u > 0) start_gather(u - 1);  // prefetch the unit whose backward comes next
  }
  poll_reductions();
}

void ZeroEngine::on_gradient_ready(int u) {
  if (stage_ == 1 && !sync_) return;
  Unit& unit = *units_[u];
  DST_ASSERT(unit.pending > 0, "a gradient of unit " << u << " became ready twice in one backward");
  --unit.pending;
  launch_ready_reductions();
  poll_reductions();
}

void ZeroEngine::launch_ready_reductions() {
  while (next_to_reduce_ >= 0 && units_[next_to_reduce_]->pending == 0) {
    Unit& unit = *units_[next_to_reduce_];
    DST_ASSERT(unit.reduce_work == nullptr, "unit " << next_to_reduce_ << " reduced twice");
    if (unit.flat_grad.scalar_type() == reduce_type_) {
      unit.reduce_work =
          group_->reduce_scatter(unit.reduce_buffer, unit.flat_grad, comm::ReduceOp::kSum);
    } else {
      unit.reduce_input = unit.flat_grad.to(reduce_type_);
      unit.reduce_work =
          group_->reduce_scatter(unit.reduce_buffer, unit.reduce_input, comm::ReduceOp::kSum);
    }
    // HSDP on a stream-ordered backend (NCCL): the replicas' sum is chained on the reduce-scatter
    // now, so every rank issues its collectives in the same order (launching it when polling
    // finds the reduce-scatter done would order them by timing, which NCCL cannot match).
    if (replicate_group_ && group_->stream_ordered()) {
      unit.reduce_work->synchronize();
      unit.replica_work = replicate_group_->all_reduce(unit.reduce_buffer, comm::ReduceOp::kSum);
    }
    // Every gradient of the unit exists, so its backward is over: its gathered parameters can go
    // now rather than when the reduction completes (one unit less in flight).
    if (stage_ == 3) release(next_to_reduce_);
    --next_to_reduce_;
  }
}

void ZeroEngine::complete_reduction(int u) {
  Unit& unit = *units_[u];
  unit.reduce_work.reset();
  unit.reduce_input = at::Tensor();
  // HSDP: the shard's sum over this replica's ranks is summed over the replicas before it joins
  // the gradient shard (add_replica_sums). Launched, not waited for: the launch happens whenever
  // this rank finds the reduce-scatter done, and a rank blocking on it inside backward could wait
  // for a replica blocked in an exchange with this rank's peers (expert parallelism's
  // all_to_all).
  if (!replicate_group_)
    unit.grad_shard.add_(unit.reduce_buffer);
  else if (!unit.replica_work)  // host backends: launched here (stream-ordered: at the launch)
    unit.replica_work = replicate_group_->all_reduce(unit.reduce_buffer, comm::ReduceOp::kSum);
  unit.pending = static_cast<int>(unit.params.size());
  if (stage_ >= 2) pool_->detach(unit.flat_grad);
  if (stage_ == 3) release(u);
}

void ZeroEngine::poll_reductions() {
  for (int u = static_cast<int>(units_.size()) - 1; u > next_to_reduce_; --u) {
    Unit& unit = *units_[u];
    if (!unit.reduce_work) continue;
    if (unit.reduce_work->is_completed()) {
      complete_reduction(u);
    } else if (replicate_group_) {
      // HSDP: completing a unit starts a collective across the replicas, which every replica
      // must start in the same order: complete units strictly in launch order.
      break;
    }
  }
}

void ZeroEngine::add_replica_sums() {
  for (int u = static_cast<int>(units_.size()) - 1; u >= 0; --u) {
    Unit& unit = *units_[u];
    if (!unit.replica_work) continue;
    unit.replica_work->synchronize();  // the add is ordered after the sum
    unit.replica_work.reset();
    unit.grad_shard.add_(unit.reduce_buffer);
  }
}

void ZeroEngine::finish_backward() {
  if (stage_ == 1 && !sync_) return;
  torch::NoGradGuard no_grad;
  // Units not reduced yet (their gradients never arrived: unused parameters) reduce what they
  // have, still in order.
  for (int u = 0; u <= next_to_reduce_; ++u) {
    Unit* unit = units_[u].get();
    if (unit->pending > 0) {
      if (!is_materialized(unit->flat_grad)) {
        pool_->attach(unit->flat_grad);
        unit->flat_grad.zero_();
      }
      unit->pending = 0;
    }
  }
  launch_ready_reductions();
  for (int u = static_cast<int>(units_.size()) - 1; u >= 0; --u) {
    Unit& unit = *units_[u];
    if (unit.reduce_work) {
      unit.reduce_work->synchronize();
      complete_reduction(u);
    }
    if (unit.gather_work) {  // a prefetch nobody used
      unit.gather_work->synchronize();
      unit.gather_work.reset();
      release(u);
    }
  }
  add_replica_sums();
  next_to_reduce_ = static_cast<int>(units_.size()) - 1;
  // Nothing is gathered or reduced any more: the free buffers go back to the allocator, so
  // between steps the engine holds exactly what the memory plan says.
  if (pool_) pool_->trim();
}

double ZeroEngine::local_grad_squared_norm() {
  std::vector<at::Tensor> counted;
  const int rank = group_->rank();
  for (const auto& unit : units_) {
    bool all_counted = true;
    for (bool c : unit->counted) all_counted = all_counted && c;
    if (all_counted) {
      counted.push_back(unit->grad_shard);
      continue;
    }
    // Only the counted parameters' segments of the shard.
    for (const Unit::Segment& seg : unit->owned_segments(rank))
      if (unit->counted[seg.i])
        counted.push_back(unit->grad_shard.narrow(0, seg.local, seg.length));
  }
  return squared_norm(counted);
}

void ZeroEngine::step(double lr, double grad_multiplier) {
  torch::NoGradGuard no_grad;
  if (grad_multiplier != 1.0)
    for (auto& unit : units_) unit->grad_shard.mul_(grad_multiplier);
  ++step_count_;
  copy_gradients_to_host();
  const int rank = group_->rank();
  for (auto& unit_ptr : units_) {
    Unit& unit = *unit_ptr;
    const at::Tensor& grad = unit.grad_host.defined() ? unit.grad_host : unit.grad_shard;
    // AdamW per parameter segment inside the shard, so decay applies per parameter.
    for (const Unit::Segment& seg : unit.owned_segments(rank)) {
      auto part = [&](const at::Tensor& t) { return t.narrow(0, seg.local, seg.length); };
      adamw_update(part(unit.master_shard), part(grad), part(unit.exp_avg), part(unit.exp_avg_sq),
                   lr, step_count_, unit.decay[seg.i], options_);
    }
  }
  publish_parameters();
}

std::vector<ParameterStateSlice> ZeroEngine::state_slices() {
  std::vector<ParameterStateSlice> slices;
  const int64_t rank = group_->rank();
  for (auto& unit_ptr : units_) {
    Unit& unit = *unit_ptr;
    for (const Unit::Segment& seg : unit.owned_segments(rank)) {
      auto part = [&](const at::Tensor& t) { return t.narrow(0, seg.local, seg.length); };
      ParameterStateSlice slice;
      slice.name = unit.names[seg.i];
      slice.begin = seg.in_param;
      slice.end = seg.in_param + seg.length;
      slice.parameter = part(unit.param_shard);
      slice.master = part(unit.master_shard);
      slice.exp_avg = part(unit.exp_avg);
      slice.exp_avg_sq = part(unit.exp_avg_sq);
      slice.gradient = part(unit.grad_shard);
      slice.saved_here = !replicate_group_ || replicate_group_->rank() == 0;
      slices.push_back(std::move(slice));
    }
  }
  return slices;
}

void ZeroEngine::state_restored() { publish_parameters(); }

// Offloaded units: every unit's gradient shard starts its copy to pinned host memory, then one
// device synchronisation before the CPU reads them.
void ZeroEngine::copy_gradients_to_host() {
  bool any = false;
  for (auto& unit : units_) {
    if (!unit->grad_host.defined()) continue;
    unit->grad_host.copy_(unit->grad_shard, /*non_blocking=*/true);
    any = true;
  }
  if (any) torch::cuda::synchronize(units_.front()->grad_shard.device().index());
}

void ZeroEngine::publish_parameters() {
  torch::NoGradGuard no_grad;
  // From pinned host memory (offloaded master weights) the copy is asynchronous, ordered before
  // the gathers on the current stream.
  for (auto& unit : units_)
    if (!unit->master_shard.is_same(unit->param_shard))
      unit->param_shard.copy_(unit->master_shard, /*non_blocking=*/unit->grad_host.defined());
  if (stage_ == 3) return;
  std::vector<comm::WorkPtr> gathers;
  for (auto& unit : units_)
    gathers.push_back(group_->all_gather(unit->flat_param, unit->param_shard));
  comm::wait_all(gathers);
}

void ZeroEngine::gather_parameters() {
  if (stage_ != 3) return;
  for (int u = 0; u < static_cast<int>(units_.size()); ++u) start_gather(u);
  for (int u = 0; u < static_cast<int>(units_.size()); ++u) ensure_gathered(u);
}

void ZeroEngine::release_parameters() {
  if (stage_ != 3) return;
  for (int u = 0; u < static_cast<int>(units_.size()); ++u) release(u);
  pool_->trim();
}

}  // namespace dst
