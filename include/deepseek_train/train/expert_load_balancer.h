// Mixture-of-experts load balancing after each training step (DeepSeek-V3's auxiliary-loss-free
// strategy): the tokens each routed expert of each local MoE layer received in the step are
// summed over every data-parallel rank (tp ranks route the same tokens and are not summed); then,
// with a positive rate, each layer's routing correction bias moves by
//   rate * sign(mean load - expert load), mean-centred,
// so overloaded experts are chosen less and idle ones more. The bias changes the choice only,
// never the weights (model/moe_router.h). Every data-parallel rank computes the same update.
#pragma once

#include <cstdint>

#include "deepseek_train/comm/communicator.h"
#include "deepseek_train/model/causal_lm.h"

namespace dst {

struct ExpertLoadStatistics {
  // Over the model's MoE layers (every pipeline stage): the largest max/mean ratio of expert
  // loads (1 = perfectly balanced); 0 when the model has no MoE layer.
  double max_over_mean = 0.0;
  int64_t dropped_tokens = 0;  // always 0: no capacity factor, every token reaches its experts
};

class ExpertLoadBalancer {
 public:
  // bias_update_rate 0: statistics only.
  explicit ExpertLoadBalancer(double bias_update_rate) : rate_(bias_update_rate) {}
  // Collective over the data-parallel group and, when given, the pipeline group (max of the
  // statistic). Call after the optimizer step on every rank; `update_bias` false (a skipped
  // step) leaves the bias alone.
  ExpertLoadStatistics after_step(CausalLM& model, comm::Communicator& data_parallel,
                                  comm::Communicator* pipeline, bool update_bias = true) const;

 private:
  double rate_;
};

}  // namespace dst
