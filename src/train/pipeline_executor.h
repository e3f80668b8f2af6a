// Runs one rank's pipeline-parallel action list (pipeline/schedule.h) for a training step, and
// forward-only passes for evaluation: activations and their gradients travel between stages by
// send/recv on the pp group; each local model chunk has its own data-parallel engine, told which
// backward is the step's last for that chunk. Private to the train module.
#pragma once

#include <ATen/core/Tensor.h>

#include <vector>

#include "deepseek_train/comm/communicator.h"
#include "deepseek_train/model/causal_lm.h"
#include "deepseek_train/pipeline/schedule.h"
#include "deepseek_train/sharding/data_parallel_engine.h"
#include "deepseek_train/train/trainer.h"

namespace dst {

class PipelineExecutor {
 public:
  PipelineExecutor(std::shared_ptr<CausalLM> model, std::vector<DataParallelEngine*> engines,
                   comm::CommunicatorPtr pp_group, ScheduleSpec spec,
                   at::ScalarType activation_dtype);

  // Forward and backward of every micro-batch in schedule order (micro_batches.size() must be
  // spec.micro_batches). The loss of each micro-batch is scaled by loss_scale / global_tokens
  // before backward. Returns the summed token loss of the micro-batches (non-zero on the rank
  // holding the last stage only).
  double train_step(const std::vector<MicroBatch>& micro_batches, double loss_scale,
                    double global_tokens);

  // Seconds the last train_step spent waiting for activations or gradients from other stages
  // (the pipeline bubble plus transfer time).
  double last_wait_seconds() const { return last_wait_seconds_; }

  // Forward only; returns the summed token loss (last stage only, 0 elsewhere).
  double evaluate(const std::vector<MicroBatch>& batches);

 private:
  int tag(int sending_stage, bool gradient, int micro_batch) const;

  std::shared_ptr<CausalLM> model_;
  std::vector<DataParallelEngine*> engines_;
  comm::CommunicatorPtr pp_;
  ScheduleSpec spec_;
  std::vector<Action> actions_;
  at::ScalarType activation_dtype_;
  double last_wait_seconds_ = 0.0;
};

}  // namespace dst
