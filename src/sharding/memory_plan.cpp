#include "deepseek_train/sharding/memory_plan.h"

#include <cstdio>

#include "deepseek_train/core/error.h"

namespace dst {

namespace {

// Ring accounting of an all-reduce of n elements over p ranks for `rank` (see communicator.h).
int64_t all_reduce_bytes(int64_t n, int p, int rank, int64_t element_bytes) {
  const int64_t own = n / p + (rank < n % p ? 1 : 0);
  return 2 * (n - own) * element_bytes;
}

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

}  // namespace

MemoryPlan plan_memory(const MemoryPlanInputs& in) {
  DST_CHECK(in.dp_size >= 1 && in.dp_rank >= 0 && in.dp_rank < in.dp_size, ConfigError,
            "memory plan: dp rank " << in.dp_rank << " of " << in.dp_size);
  DST_CHECK(in.zero_stage >= 0 && in.zero_stage <= 3, ConfigError,
            "parallel.zero_stage must be 0, 1, 2 or 3, got " << in.zero_stage);
  const ModelStateBytes per_element = model_state_bytes_per_element(in.precision);
  MemoryPlan plan;
  const int64_t psi = in.model.num_parameters();
  const int64_t shard = ceil_div(psi, in.dp_size);
  plan.parameter_elements = psi;
  plan.parameters = (in.zero_stage >= 3 ? shard : psi) * per_element.params;
  plan.gradients = (in.zero_stage >= 2 ? shard : psi) * per_element.grads;
  plan.master_weights = (in.zero_stage >= 1 ? shard : psi) * per_element.master;
  plan.optimizer_moments = (in.zero_stage >= 1 ? shard : psi) * per_element.moments;
  plan.activations =
      estimate_activation_bytes(in.model, in.micro_batch_size, in.seq_len, in.precision.compute);

  if (!in.zero_unit_padded_elements.empty()) {
    // Sharded states hold exactly the owned shard of every (padded) unit.
    int64_t shard_elements = 0;
    for (int64_t padded : in.zero_unit_padded_elements) shard_elements += padded / in.dp_size;
    if (in.zero_stage >= 3) plan.parameters = shard_elements * per_element.params;
    if (in.zero_stage >= 2) plan.gradients = shard_elements * per_element.grads;
    plan.master_weights = shard_elements * per_element.master;
    plan.optimizer_moments = shard_elements * per_element.moments;
  }
  if (in.dp_size > 1) {
    const int64_t reduce_bytes = bytes_of(in.precision.reduce);
    const int64_t param_bytes = bytes_of(in.precision.param);
    if (in.zero_stage == 0) {
      for (int64_t n : in.gradient_bucket_elements)
        plan.gradient_comm_bytes += all_reduce_bytes(n, in.dp_size, in.dp_rank, reduce_bytes);
      // Two fp64 scalars per step: the global target-token count and the loss sum.
      plan.control_comm_bytes = 2 * all_reduce_bytes(1, in.dp_size, in.dp_rank, 8);
    } else {
      const int64_t k = in.grad_accum;
      for (int64_t padded : in.zero_unit_padded_elements) {
        const int64_t others = padded - padded / in.dp_size;  // elements a ring moves per rank
        const int64_t reduce_scatters = in.zero_stage == 1 ? 1 : k;
        const int64_t gathers = in.zero_stage == 3 ? 2 * k : 1;
        plan.gradient_comm_bytes +=
            reduce_scatters * others * reduce_bytes + gathers * others * param_bytes;
      }
      // Token count, loss sum and the squared gradient norm of the shards.
      plan.control_comm_bytes = 3 * all_reduce_bytes(1, in.dp_size, in.dp_rank, 8);
    }
  }
  return plan;
}

int64_t estimate_activation_bytes(const ModelConfig& m, int64_t rows, int64_t seq_len,
                                  Precision compute) {
  const int64_t tokens = rows * seq_len;
  const int64_t per_layer_token =
      8 * m.hidden_size + 4 * m.intermediate_size + 2 * m.num_attention_heads * seq_len;
  const int64_t layers = m.num_hidden_layers * tokens * per_layer_token * bytes_of(compute);
  const int64_t logits = tokens * 2 * m.vocab_size * 4;
  return layers + logits;
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
  return "memory plan per rank: parameters " + format_bytes(parameters) + ", gradients " +
         format_bytes(gradients) + ", master weights " + format_bytes(master_weights) +
         ", optimizer moments " + format_bytes(optimizer_moments) + ", activations ~" +
         format_bytes(activations) + " per micro-batch; total ~" + format_bytes(total()) +
         "; communication per step " + format_bytes(comm_bytes_per_step());
}

}  // namespace dst
