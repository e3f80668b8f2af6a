#include "deepseek_train/sharding/memory_plan.h"

#include <algorithm>
#include <cstdio>
#include <functional>

#include "deepseek_train/core/error.h"

namespace dst {

namespace {

// The sum of the `count` largest of `sizes` (all of them when there are fewer).
int64_t sum_of_largest(std::vector<int64_t> sizes, size_t count) {
  std::sort(sizes.begin(), sizes.end(), std::greater<int64_t>());
  int64_t sum = 0;
  for (size_t i = 0; i < std::min(count, sizes.size()); ++i) sum += sizes[i];
  return sum;
}

// Ring accounting of an all-reduce of n elements over p ranks for `rank` (see communicator.h).
int64_t all_reduce_bytes(int64_t n, int p, int rank, int64_t element_bytes) {
  const int64_t own = n / p + (rank < n % p ? 1 : 0);
  return 2 * (n - own) * element_bytes;
}

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Bytes per element of a sum on the wire: the MPI backend sums 16-bit floats in fp32
// (comm/mpi_communicator.h).
int64_t summed_bytes(int64_t element_bytes) { return element_bytes == 2 ? 4 : element_bytes; }

// The trainable parameters one data-parallel group reduces: the dense ones over dp (and the HSDP
// replicas), a rank's routed experts over their expert-data-parallel group; laid out as the
// engine's stage-0 buckets or ZeRO units.
struct ReducedParameters {
  int64_t elements = 0;
  int dp_size = 1, dp_rank = 0, replicate_size = 1, replicate_rank = 0;
  const std::vector<int64_t>& buckets;
  const std::vector<int64_t>& units;
  bool head_reuses_first_unit = false;  // tied embeddings: unit 0 is gathered again for the head
};

// MemoryPlan::units_in_flight of one group: the largest units' flat buffers, as many of each kind
// as can be materialised at once.
int64_t units_in_flight_bytes(const MemoryPlanInputs& in, const ReducedParameters& group) {
  const int64_t reduce_bytes = bytes_of(in.precision.reduce);
  const bool widened = in.precision.reduce != in.precision.param;
  if (in.zero_stage == 0)  // gradient buckets widened to the reduce dtype: two at a time
    return widened ? sum_of_largest(group.buckets, 2) * reduce_bytes : 0;
  if (in.zero_stage < 2) return 0;
  const auto largest = [&group](size_t count) { return sum_of_largest(group.units, count); };
  const int64_t param_bytes = bytes_of(in.precision.param);
  // Two of each: the unit computing and the next (prefetched parameters; gradients still being
  // reduce-scattered), plus the tied embedding's unit, which the head uses again.
  const int64_t units = largest(group.head_reuses_first_unit ? 3 : 2);
  int64_t bytes = units * param_bytes;  // gradients
  if (widened) bytes += largest(2) * reduce_bytes;
  if (in.zero_stage == 3) bytes += units * param_bytes;  // gathered parameters
  return bytes;
}

// What one group's engine keeps (parameters, gradients, masters, moments, reduce buffers) and
// sends to reduce gradients and gather parameters per step, added to `plan`.
void add_reduced_parameters(const MemoryPlanInputs& in, const ReducedParameters& group,
                            MemoryPlan& plan) {
  const ModelStateBytes per_element = model_state_bytes_per_element(in.precision);
  const int64_t reduce_bytes = summed_bytes(bytes_of(in.precision.reduce));
  const bool communicates = group.dp_size > 1 || group.replicate_size > 1;
  if (in.zero_stage == 0) {
    plan.parameters += group.elements * per_element.params;
    plan.gradients += group.elements * per_element.grads;
    plan.master_weights += group.elements * per_element.master;
    plan.optimizer_moments += group.elements * per_element.moments;
    if (communicates)
      for (int64_t n : group.buckets)
        plan.gradient_comm_bytes += all_reduce_bytes(n, group.dp_size, group.dp_rank, reduce_bytes);
    return;
  }
  // ZeRO (sharding/zero.h) keeps flat buffers padded to a multiple of the dp size: the owned
  // shard of every unit for the sharded states, the whole padded unit for what is not sharded.
  const int64_t shard = ceil_div(group.elements, group.dp_size);
  int64_t padded_elements = shard * group.dp_size, shard_elements = shard;
  if (!group.units.empty()) {
    padded_elements = shard_elements = 0;
    for (int64_t padded : group.units) {
      padded_elements += padded;
      shard_elements += padded / group.dp_size;
    }
  }
  plan.parameters += (in.zero_stage >= 3 ? shard_elements : padded_elements) * per_element.params;
  // The optimizer reads fp32 gradient shards; stage 1 also keeps the full gradient buffer (in the
  // parameter dtype) that micro-batches accumulate into.
  plan.gradients +=
      shard_elements * 4 + (in.zero_stage == 1 ? padded_elements * per_element.grads : 0);
  plan.master_weights += shard_elements * per_element.master;
  plan.optimizer_moments += shard_elements * per_element.moments;
  // Each unit's reduce-scatter output, in the reduce dtype.
  plan.reduce_buffers += shard_elements * bytes_of(in.precision.reduce);
  if (!communicates) return;
  const int64_t param_bytes = bytes_of(in.precision.param);
  const int64_t k = in.grad_accum;
  for (int64_t padded : group.units) {
    const int64_t others = padded - padded / group.dp_size;  // elements a ring moves per rank
    const int64_t reduce_scatters = in.zero_stage == 1 ? 1 : k;
    const int64_t gathers = in.zero_stage == 3 ? 2 * k : 1;
    plan.gradient_comm_bytes +=
        reduce_scatters * others * reduce_bytes + gathers * others * param_bytes;
    // HSDP: each reduced shard is all-reduced across the replicas.
    plan.gradient_comm_bytes +=
        reduce_scatters * all_reduce_bytes(padded / group.dp_size, group.replicate_size,
                                           group.replicate_rank, reduce_bytes);
  }
}

}  // namespace

MemoryPlan plan_memory(const MemoryPlanInputs& in) {
  DST_CHECK(in.dp_size >= 1 && in.dp_rank >= 0 && in.dp_rank < in.dp_size, ConfigError,
            "memory plan: dp rank " << in.dp_rank << " of " << in.dp_size);
  DST_CHECK(in.zero_stage >= 0 && in.zero_stage <= 3, ConfigError,
            "parallel.zero_stage must be 0, 1, 2 or 3, got " << in.zero_stage);
  MemoryPlan plan;
  const int64_t psi =
      in.local_parameter_elements > 0 ? in.local_parameter_elements : in.model.num_parameters();
  plan.parameter_elements = psi + in.expert_group.parameter_elements;
  plan.frozen_parameters =
      in.frozen_parameter_elements * model_state_bytes_per_element(in.precision).params;
  const ReducedParameters dense{psi,
                                in.dp_size,
                                in.dp_rank,
                                in.dp_replicate_size,
                                in.dp_replicate_rank,
                                in.gradient_bucket_elements,
                                in.zero_unit_padded_elements,
                                in.model.tie_word_embeddings && in.has_head};
  const ExpertGroupLayout& ex = in.expert_group;
  const ReducedParameters experts{
      ex.parameter_elements,       ex.dp_size,           ex.dp_rank,
      ex.dp_replicate_size,        ex.dp_replicate_rank, ex.gradient_bucket_elements,
      ex.zero_unit_padded_elements};
  add_reduced_parameters(in, dense, plan);
  plan.units_in_flight = units_in_flight_bytes(in, dense);
  if (ex.parameter_elements > 0) {
    add_reduced_parameters(in, experts, plan);
    plan.units_in_flight += units_in_flight_bytes(in, experts);
  }
  const int64_t layers = in.local_layers >= 0 ? in.local_layers : in.model.num_hidden_layers;
  const auto activations = [&](int64_t checkpointed_layers) {
    if (in.activation_bytes) return in.activation_bytes(checkpointed_layers);
    return estimate_activation_bytes(in.model, in.micro_batch_size, in.seq_len,
                                     in.precision.compute, in.tp_size, layers, in.has_head,
                                     checkpointed_layers, in.fused_attention);
  };
  plan.activations = in.pipeline_in_flight * activations(in.checkpointed_layers);
  plan.activations_without_checkpointing = in.pipeline_in_flight * activations(0);
  // Tensor parallel, per micro-batch: all-reduces of [tokens, width] activations — the
  // embedding's output, each layer's (tp_layer_traffic: by default two [tokens, hidden] forward,
  // attention and MLP outputs, and two backward, their inputs' gradients; a recomputed layer's
  // forward ones twice), the head input's gradient — and the vocab-parallel cross-entropy's fp32
  // [tokens] max and [2, tokens] sums.
  const int64_t tokens = in.micro_batch_size * in.seq_len;
  const int64_t activation_bytes = bytes_of(in.precision.compute);
  // Summed per step over data (and pipeline) ranks: the target-token count and the loss sum, with
  // the balance loss the sequence count and the balance loss sum beside them, under DP-SGD the
  // example count and the clipped examples.
  const int64_t step_sums = in.paired_step_sums ? 2 : 1;
  if (in.tp_size > 1) {
    const int64_t summed_activation_bytes = summed_bytes(activation_bytes);
    const auto all_reduce_of_width = [&](int64_t width) {
      return all_reduce_bytes(tokens * width, in.tp_size, in.tp_rank, summed_activation_bytes);
    };
    const int64_t hidden = in.model.hidden_size;
    int64_t per_micro_batch =
        ((in.has_embedding ? 1 : 0) + (in.has_head ? 1 : 0)) * all_reduce_of_width(hidden);
    if (in.tp_layer_traffic.empty()) {
      per_micro_batch += (4 * layers + 2 * in.checkpointed_layers) * all_reduce_of_width(hidden);
    } else {
      for (const TpLayerTraffic& layer : in.tp_layer_traffic) {
        for (int64_t width : layer.forward)
          per_micro_batch += (layer.recomputed ? 2 : 1) * all_reduce_of_width(width);
        for (int64_t width : layer.backward) per_micro_batch += all_reduce_of_width(width);
      }
    }
    if (in.has_head)
      per_micro_batch += all_reduce_bytes(tokens, in.tp_size, in.tp_rank, 4) +
                         all_reduce_bytes(2 * tokens, in.tp_size, in.tp_rank, 4);
    plan.tensor_parallel_comm_bytes = in.grad_accum * per_micro_batch;
    // The squared gradient norm is summed over tp.
    plan.control_comm_bytes += all_reduce_bytes(1, in.tp_size, in.tp_rank, 8);
  }
  if (in.pp_size > 1) {
    plan.pipeline_comm_bytes = in.grad_accum *
                               (in.pipeline_activation_sends + in.pipeline_gradient_sends) *
                               tokens * in.model.hidden_size * activation_bytes;
    plan.pipeline_comm_bytes +=
        all_reduce_bytes(in.tied_embedding_sync_elements, 2, in.tied_embedding_sync_rank,
                         summed_bytes(in.tied_embedding_sync_element_bytes));
    // The loss and the squared gradient norm are summed over pp.
    plan.control_comm_bytes += all_reduce_bytes(step_sums, in.pp_size, in.pp_rank, 8) +
                               all_reduce_bytes(1, in.pp_size, in.pp_rank, 8);
  }

  plan.process_baseline = in.process_baseline_bytes;
  if (in.dp_size > 1 || in.dp_replicate_size > 1) {
    if (in.zero_stage == 0) {
      // Two fp64 scalars per step: the global target-token count and the loss sum.
      plan.control_comm_bytes += 2 * all_reduce_bytes(step_sums, in.dp_size, in.dp_rank, 8);
    } else {
      // Token count and loss sum over every data-parallel rank, the squared gradient norm of the
      // shards over the shard group.
      const int data_parallel_size = in.dp_size * in.dp_replicate_size;
      const int data_parallel_rank = in.dp_replicate_rank * in.dp_size + in.dp_rank;
      plan.control_comm_bytes +=
          2 * all_reduce_bytes(step_sums, data_parallel_size, data_parallel_rank, 8) +
          all_reduce_bytes(1, in.dp_size, in.dp_rank, 8);
    }
  }
  // Stage 0 under expert parallelism: the experts' gradient-norm share summed over ep.
  plan.control_comm_bytes += ex.norm_all_reduces * all_reduce_bytes(1, ex.ep_size, ex.ep_rank, 8);
  if (ex.ep_size > 1) {
    // Per MoE layer and micro-batch: forward sends the counts (int64 per local expert and peer),
    // then dispatch and combine each move the pairs routed to other ranks; backward moves them
    // twice again.
    const int64_t pairs_out = tokens * in.model.num_experts_per_tok * (ex.ep_size - 1) / ex.ep_size;
    const int64_t rows = 2 * pairs_out * in.model.hidden_size * activation_bytes;
    const int64_t counts = (ex.ep_size - 1) * (in.model.n_routed_experts / ex.ep_size) * 8;
    plan.expert_all_to_all_estimate = in.grad_accum * (ex.moe_layers * (2 * rows + counts) +
                                                       ex.recomputed_moe_layers * (rows + counts));
  }
  // Expert loads summed over every data-parallel rank; their statistic's max over pp.
  const int data_parallel_size = in.dp_size * in.dp_replicate_size;
  if (in.expert_load_elements > 0 && data_parallel_size > 1)
    plan.control_comm_bytes += all_reduce_bytes(in.expert_load_elements, data_parallel_size,
                                                in.dp_replicate_rank * in.dp_size + in.dp_rank, 8);
  if (in.has_moe && in.pp_size > 1)
    plan.control_comm_bytes += all_reduce_bytes(1, in.pp_size, in.pp_rank, 8);
  return plan;
}

int64_t estimate_activation_bytes(const ModelConfig& m, int64_t rows, int64_t seq_len,
                                  Precision compute, int tp_size, int64_t layers, bool with_logits,
                                  int64_t checkpointed_layers, bool fused_attention,
                                  int64_t kept_probability_bytes) {
  if (layers < 0) layers = m.num_hidden_layers;
  const int64_t tokens = rows * seq_len;
  // Per token: scores and probabilities (ATen); the fused attention keeps one log-sum-exp per
  // row and the probabilities only while they fit its budget (kernels/fused_ops.h).
  const int64_t local_heads = m.num_attention_heads / tp_size;
  const bool keeps_probabilities =
      attention_keeps_probabilities(rows, local_heads, seq_len, kept_probability_bytes);
  const int64_t attention = !fused_attention
                                ? 2 * m.num_attention_heads * seq_len
                                : m.num_attention_heads * (1 + (keeps_probabilities ? seq_len : 0));
  const int64_t per_layer_token =
      4 * m.hidden_size + (4 * m.hidden_size + 4 * m.intermediate_size + attention) / tp_size;
  const int64_t full_layer = tokens * per_layer_token * bytes_of(compute);
  const int64_t kept_input = tokens * m.hidden_size * bytes_of(compute);
  int64_t bytes = (layers - checkpointed_layers) * full_layer + checkpointed_layers * kept_input;
  if (checkpointed_layers > 0) bytes += full_layer;  // the layer being recomputed
  if (with_logits) bytes += tokens * 2 * (m.vocab_size / tp_size) * 4;
  return bytes;
}

std::string format_bytes(int64_t bytes) {
  char buffer[32];
  const double b = static_cast<double>(bytes);
  if (b >= 1024.0 * 1024 * 1024) {
    std::snprintf(buffer, sizeof(buffer), "%.2f GiB", b / (1024.0 * 1024 * 1024));
  } else if (b >= 1024.0 * 1024) {
    std::snprintf(buffer, sizeof(buffer), "%.1f MiB", b / (1024.0 * 1024));
  } else if (b >= 1024.0) {
    std::snprintf(buffer, sizeof(buffer), "%.1f KiB", b / 1024.0);
  } else {
    std::snprintf(buffer, sizeof(buffer), "%lld B", static_cast<long long>(bytes));
  }
  return buffer;
}

std::string MemoryPlan::describe() const {
  return "memory plan per rank: parameters " + format_bytes(parameters) +
         (frozen_parameters > 0 ? " (+ frozen " + format_bytes(frozen_parameters) + ")"
                                : std::string()) +
         ", gradients " + format_bytes(gradients) + ", master weights " +
         format_bytes(master_weights) + ", optimizer moments " + format_bytes(optimizer_moments) +
         (reduce_buffers > 0 ? ", reduce buffers " + format_bytes(reduce_buffers) : std::string()) +
         ", activations ~" + format_bytes(activations) +
         (activations != activations_without_checkpointing
              ? " (checkpointing; " + format_bytes(activations_without_checkpointing) + " without)"
              : std::string()) +
         "; total ~" + format_bytes(total()) +
         (units_in_flight > 0 ? " + units in flight " + format_bytes(units_in_flight)
                              : std::string()) +
         (process_baseline > 0 ? "; peak RSS ~" + format_bytes(peak()) + " (process baseline " +
                                     format_bytes(process_baseline) + ")"
                               : std::string()) +
         "; communication per step " + format_bytes(comm_bytes_per_step()) +
         (tensor_parallel_comm_bytes > 0 ? " (tp " + format_bytes(tensor_parallel_comm_bytes) + ")"
                                         : std::string()) +
         (pipeline_comm_bytes > 0 ? " (pp " + format_bytes(pipeline_comm_bytes) + ")"
                                  : std::string()) +
         (expert_all_to_all_estimate > 0
              ? " + ep all_to_all ~" + format_bytes(expert_all_to_all_estimate) +
                    " (uniform routing)"
              : std::string());
}

}  // namespace dst
