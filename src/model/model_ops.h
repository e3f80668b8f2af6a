// Building blocks the model families share (private to src/model): tensor-parallel region
// boundaries, the fused-kernel test, bias-free projections with optional adapters, and the
// tensor-parallel Linear layers held as plain torch::nn::Linear modules.
#pragma once

#include <torch/nn/modules/linear.h>
#include <torch/types.h>

#include <cstdint>
#include <map>
#include <memory>
#include <string>

#include "deepseek_train/comm/communicator.h"
#include "deepseek_train/model/causal_lm.h"

namespace dst::model_ops {

// Identity when there is no tp group (or it has one rank): otherwise the input of a
// column-parallel region (gradient summed over tp) and the output of a row-parallel one (summed).
torch::Tensor enter_tp(const torch::Tensor& x, const comm::CommunicatorPtr& group);
torch::Tensor leave_tp(const torch::Tensor& x, const comm::CommunicatorPtr& group);

// The fused CPU ops (kernels/fused_ops.h) take fp32 or bf16 CPU tensors.
bool fusable(const torch::Tensor& t);

// A bias-free projection by `weight` computed in the activation's dtype (a no-op cast when the
// weight has it): the fused CPU linear when allowed and both are fp32 on the CPU.
torch::Tensor project(const torch::Tensor& weight, const torch::Tensor& x, bool fused);
// The same plus the adapter attached to it under `name`, if any.
torch::Tensor project(const torch::nn::Linear& linear, const torch::Tensor& x,
                      const std::map<std::string, std::shared_ptr<LinearAdapter>>& adapters,
                      const char* name, bool fused);

// Tensor-parallel projections (tensor_parallel/parallel_layers.h) held as plain Linear modules
// (their weights feed the fused kernels directly; the model places the region boundaries).
// `what` names the split size in the divisibility error.
torch::nn::Linear column_parallel(int64_t in, int64_t out, const comm::CommunicatorPtr& tp,
                                  const char* what);
torch::nn::Linear row_parallel(int64_t in, int64_t out, const comm::CommunicatorPtr& tp,
                               const char* what);
// A projection every tp rank holds whole (deferred weight, like the tensor-parallel layers).
torch::nn::Linear replicated(int64_t in, int64_t out);

// The adapter slot of a projection for CausalLM::projection_sites: its HF module name, split
// and full shape from the model.
ProjectionSite projection_site(const CausalLM& model, const std::string& module_name,
                               torch::nn::Linear& linear,
                               std::map<std::string, std::shared_ptr<LinearAdapter>>& slots,
                               const std::string& slot);

}  // namespace dst::model_ops
