// Per-rank memory and communication plan: what one rank holds (parameters, gradients, fp32 master
// weights, optimizer moments, an activation estimate) and what one optimizer step sends, from the
// model shape, the precision policy and the data-parallel layout. Printed at start-up and held to
// by tests against the bytes the communicators actually count. Torch-free.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "deepseek_train/kernels/attention_budget.h"
#include "deepseek_train/model/model_config.h"
#include "deepseek_train/precision/precision_policy.h"

namespace dst {

// What one decoder layer all-reduces across tensor parallelism per token: the widths of its
// [tokens, width] all-reduces in forward (row-parallel outputs) and backward (gradients of the
// column-parallel regions' inputs). The dense decoder: {hidden, hidden} each way.
struct TpLayerTraffic {
  std::vector<int64_t> forward, backward;
  bool recomputed = false;  // activation checkpointing: the forward all-reduces run twice
};

// Expert parallelism: the routed experts' parameters a rank holds are data-parallel over their
// own group (the ranks with the same experts), laid out by the engine as stage-0 buckets or ZeRO
// units of that group; the tokens they compute arrive by all_to_all over the ep group.
struct ExpertGroupLayout {
  int64_t parameter_elements = 0;  // trainable, of this rank's experts (not in the dense count)
  // The expert-data-parallel group (stage 0: every data-parallel rank with these experts; ZeRO:
  // those of the dp_shard group, with the HSDP replicas summing their shards).
  int dp_size = 1, dp_rank = 0;
  int dp_replicate_size = 1, dp_replicate_rank = 0;
  int ep_size = 1, ep_rank = 0;
  std::vector<int64_t> gradient_bucket_elements;   // stage 0
  std::vector<int64_t> zero_unit_padded_elements;  // stages 1-3 (multiples of dp_size)
  // Stage 0: all-reduces of the experts' gradient-norm share over the ep group per step.
  int norm_all_reduces = 0;
  // MoE layers of this rank, and those of them recomputed in backward (checkpointing): each
  // forward exchanges the routed tokens' counts and rows with the ep group, each backward rows.
  int64_t moe_layers = 0, recomputed_moe_layers = 0;
};

struct MemoryPlanInputs {
  ModelConfig model;
  PrecisionPolicy precision;
  int zero_stage = 0;
  int dp_size = 1;  // the ranks that shard (ZeRO) or all-reduce (stage 0) the gradients
  int dp_rank = 0;
  // HSDP (ZeRO stages 1-3): replicas of the shards, across which each reduced shard is summed.
  int dp_replicate_size = 1;
  int dp_replicate_rank = 0;
  int64_t micro_batch_size = 1;
  int64_t seq_len = 1;
  // Elements of each data-parallel gradient bucket (stage 0), in launch order; communication is
  // planned only when given.
  std::vector<int64_t> gradient_bucket_elements;
  // ZeRO stages 1-3: padded elements of each sharding unit (multiples of dp_size), and the
  // micro-batches per step; communication is planned from these.
  std::vector<int64_t> zero_unit_padded_elements;
  int64_t grad_accum = 1;

  // Model parallelism. The rank holds local_parameter_elements (0: the whole model) of
  // local_layers decoder layers (-1: all), split across tp_size ranks; it holds the embedding
  // and/or the head when the flags say so. pipeline_in_flight micro-batches keep activations at
  // once (1 without a pipeline). Every checkpoint_every-th layer keeps only its input and is
  // recomputed in backward (0: off).
  int64_t local_parameter_elements = 0;
  // Parameters the rank holds that do not train (a base model under adapters): kept whole in the
  // parameter dtype on every dp rank, with no gradient, master or optimizer state.
  int64_t frozen_parameter_elements = 0;
  int tp_size = 1;
  int tp_rank = 0;
  int64_t local_layers = -1;
  bool has_embedding = true;
  bool has_head = true;
  int64_t checkpointed_layers = 0;  // of the local layers
  bool fused_attention = false;     // kernels/fused_ops.h attention (no seq^2 activations)
  // The model's own activation estimate for one micro-batch given its checkpointed layers
  // (CausalLM::activation_bytes); empty: estimate_activation_bytes of the dense decoder.
  std::function<int64_t(int64_t checkpointed_layers)> activation_bytes;
  // Each local layer's tensor-parallel all-reduces (CausalLM::tp_layer_traffic); empty: the
  // dense decoder's, with checkpointed_layers recomputed.
  std::vector<TpLayerTraffic> tp_layer_traffic;
  // Mixture of experts: the model has MoE layers (each step takes the max of the expert-load
  // statistic over pp), and this rank's MoE layers times experts (loads summed over dp in fp64).
  bool has_moe = false;
  int64_t expert_load_elements = 0;
  // The step's count and loss-sum all-reduces carry two values each (moe.aux_loss_alpha > 0:
  // sequences and the balance loss; DP-SGD: examples and clipped examples), else one.
  bool paired_step_sums = false;
  ExpertGroupLayout expert_group;
  int64_t pipeline_in_flight = 1;
  // Pipeline sends per micro-batch: activations forward, gradients backward ([rows, seq, hidden]
  // each, in the activation dtype).
  int64_t pipeline_activation_sends = 0;
  int64_t pipeline_gradient_sends = 0;
  // Tied embeddings across stages: elements of the embedding gradient the first and the last
  // stage all-reduce per step, and their element size.
  int64_t tied_embedding_sync_elements = 0;
  int64_t tied_embedding_sync_element_bytes = 4;
  int tied_embedding_sync_rank = 0;  // 0: first stage, 1: last stage
  int pp_size = 1;
  int pp_rank = 0;
  // Resident memory of the process before the model was built (libraries, communicator buffers,
  // the loaded data), measured; 0: unknown.
  int64_t process_baseline_bytes = 0;
};

struct MemoryPlan {
  int64_t parameter_elements = 0;  // Psi: trainable parameters of the whole model
  // Bytes this rank holds.
  int64_t parameters = 0;
  int64_t frozen_parameters = 0;  // frozen (not trained) parameters
  int64_t gradients = 0;
  int64_t master_weights = 0;
  int64_t optimizer_moments = 0;
  int64_t reduce_buffers = 0;  // ZeRO: each unit's reduce-scatter output shard
  int64_t activations = 0;     // estimate for one micro-batch (stored for backward)
  // Bytes this rank sends per optimizer step (ring accounting, comm/communicator.h):
  int64_t gradient_comm_bytes = 0;  // gradient reduction (+ parameter all-gathers under ZeRO)
  int64_t control_comm_bytes = 0;   // step bookkeeping: token count, loss, gradient norm
  int64_t tensor_parallel_comm_bytes = 0;  // tp all-reduces of activations and their gradients
  int64_t pipeline_comm_bytes = 0;  // activations and gradients sent to other stages, and the
                                    // tied embedding's gradient all-reduce
  // Expert parallelism's all_to_all of routed tokens, which depends on the routing: estimated for
  // a uniform one (each token's experts on any ep rank alike) and left out of
  // comm_bytes_per_step (measured per step as comm_bytes_by_op["all_to_all"]).
  int64_t expert_all_to_all_estimate = 0;
  int64_t activations_without_checkpointing = 0;  // the same estimate with checkpointing off
  // ZeRO-2/3 buffers that exist only while a unit computes (sharding/zero.h): stage 3's gathered
  // parameters of the unit computing and the one prefetched (plus the tied embedding's unit,
  // gathered again for the head), and the unit gradients of the unit in backward and of the one
  // still being reduce-scattered (plus their copies widened to the reduce dtype when it differs);
  // at stage 0 the two gradient buckets widened to the reduce dtype while all-reduced (bf16).
  int64_t units_in_flight = 0;
  int64_t process_baseline = 0;  // MemoryPlanInputs::process_baseline_bytes

  int64_t model_state() const {
    return parameters + frozen_parameters + gradients + master_weights + optimizer_moments;
  }
  // What the data-parallel engine allocates and keeps between steps.
  int64_t held_between_steps() const { return model_state() + reduce_buffers; }
  int64_t total() const { return held_between_steps() + activations; }
  // The resident memory the process should peak at during a step: the baseline, what is held,
  // one micro-batch's activations and the units in flight.
  int64_t peak() const { return process_baseline + total() + units_in_flight; }
  // On a GPU the model state and activations live in device memory, the process baseline on the
  // host: the device should peak at what is held plus the units in flight.
  int64_t device_peak() const { return total() + units_in_flight; }
  int64_t comm_bytes_per_step() const {
    return gradient_comm_bytes + control_comm_bytes + tensor_parallel_comm_bytes +
           pipeline_comm_bytes;
  }
  // One line for the start-up log.
  std::string describe() const;
};

// The ZeRO paper's model-state partitioning: stage 0 holds everything; stage 1 shards the
// optimizer state (master + moments), stage 2 also the gradients, stage 3 also the parameters.
// The byte counts are those of the engines' buffers (tests measure the tensors a rank holds
// against them): under ZeRO, flat buffers padded to a multiple of the dp size, fp32 gradient
// shards (stage 1 also keeps the full gradient in the parameter dtype) and one reduce-scatter
// output shard per unit.
MemoryPlan plan_memory(const MemoryPlanInputs& inputs);

// Bytes of activations autograd keeps for backward for `rows` sequences of `seq_len` tokens:
// per layer and token about 8h + 4i elements (norm inputs, q/k/v/o and MLP inputs and outputs)
// plus 2 * heads * seq_len (attention scores and probabilities; `fused_attention`: one
// log-sum-exp per head, and heads * seq_len probabilities only while they fit the fused kernel's
// budget), plus 2 * vocab per token for the
// logits and their softmax; in the compute dtype (softmax and loss in fp32). Under tp the
// projections' outputs, the attention and the logits are split tp ways (the 4h of norm inputs
// and residuals are not). A checkpointed layer keeps only its input (h per token); one layer's
// full activations exist during its recompute.
int64_t estimate_activation_bytes(const ModelConfig& model, int64_t rows, int64_t seq_len,
                                  Precision compute, int tp_size = 1, int64_t layers = -1,
                                  bool with_logits = true, int64_t checkpointed_layers = 0,
                                  bool fused_attention = false,
                                  int64_t kept_probability_bytes = kDefaultMaxKeptProbabilityBytes);

// "1.50 GiB", "3.2 MiB", "512 B".
std::string format_bytes(int64_t bytes);

}  // namespace dst
