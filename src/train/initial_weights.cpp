#include "deepseek_train/train/initial_weights.h"

#include <torch/torch.h>

#include "deepseek_train/checkpoint/hf_interop.h"
#include "deepseek_train/core/deferred_tensor.h"
#include "deepseek_train/core/error.h"

namespace dst {

InitialWeights::InitialWeights(CausalLM& model, uint64_t seed, const std::string& hf_model_dir)
    : model_(model), seed_(seed), hf_dir_(hf_model_dir) {
  if (hf_dir_.empty()) return;
  hf_ = std::make_unique<HfModelReader>(hf_dir_);
  check_same_model(hf_->config(), model_.config(), hf_dir_);
  for (const auto& item : model_.named_parameters(/*recurse=*/true)) {
    const std::string& name = item.key();
    const std::vector<int64_t> expected = model_.full_shape(name, item.value());
    DST_CHECK(hf_->shape(name) == expected, CheckpointError,
              hf_dir_ << ": tensor '" << name << "' has shape " << at::IntArrayRef(hf_->shape(name))
                      << ", the model expects " << at::IntArrayRef(expected));
  }
}

InitialWeights::~InitialWeights() = default;

int64_t InitialWeights::unused_layer_tensors() const {
  return hf_ ? hf_->tensors_beyond_last_layer() : 0;
}

void InitialWeights::fill_deferred(NamedParameters& parameters) {
  for (auto& [name, parameter] : parameters)
    if (is_deferred(parameter)) fill(name, parameter);
}

void InitialWeights::fill_allocated() {
  for (auto& item : model_.named_parameters(/*recurse=*/true))
    if (!is_deferred(item.value())) fill(item.key(), item.value());
}

void InitialWeights::fill(const std::string& name, at::Tensor& parameter) {
  if (!hf_) {
    model_.initialize_parameter(name, parameter, seed_);
    return;
  }
  // The import writes every element (padding rows included): no seeded draw to overwrite.
  allocate_deferred(parameter);
  import(name, parameter);
}

void InitialWeights::import(const std::string& name, at::Tensor& local) {
  copy_rank_slice(model_, name, local, *hf_, name);
}

void copy_rank_slice(const CausalLM& model, const std::string& name, at::Tensor& local,
                     const SafetensorsTensors& tensors, const std::string& source_name) {
  torch::NoGradGuard no_grad;
  const std::vector<int64_t> full = model.full_shape(name, local);
  const int tp_rank = model.tp_rank();
  switch (model.tp_split(name)) {
    case TpSplit::kReplicated:
      local.copy_(tensors.read_rows(source_name));
      break;
    case TpSplit::kDim0: {
      // Only this rank's rows; vocabulary padding rows past the end stay zero.
      const int64_t rows = local.size(0), begin = tp_rank * rows;
      const int64_t end = std::min(begin + rows, full[0]);
      local.zero_();
      if (end > begin)
        local.narrow(0, 0, end - begin).copy_(tensors.read_rows(source_name, begin, end));
      break;
    }
    case TpSplit::kDim1: {
      const int64_t columns = local.size(1);
      local.copy_(tensors.read_rows(source_name).narrow(1, tp_rank * columns, columns));
      break;
    }
  }
}

}  // namespace dst
