#include <catch2/catch.hpp>

#include "deepseek_train/core/error.h"
#include "deepseek_train/sharding/memory_plan.h"

using namespace dst;

namespace {
MemoryPlanInputs inputs(int stage, int dp, const std::string& dtype) {
  MemoryPlanInputs in;
  in.model.hidden_size = 64;
  in.model.intermediate_size = 128;
  in.model.num_hidden_layers = 2;
  in.model.num_attention_heads = 4;
  in.model.num_key_value_heads = 2;
  PrecisionOptions options;
  options.param_dtype = dtype;
  in.precision = PrecisionPolicy::from_options(options);
  in.zero_stage = stage;
  in.dp_size = dp;
  in.micro_batch_size = 2;
  in.seq_len = 16;
  return in;
}
}  // namespace

TEST_CASE("memory plan: model state per rank follows the ZeRO partitioning", "[sharding]") {
  const int64_t psi = inputs(0, 1, "fp32").model.num_parameters();
  // Stage 0 fp32: params 4 + grads 4 + moments 8 bytes per element, nothing sharded.
  MemoryPlan s0 = plan_memory(inputs(0, 4, "fp32"));
  CHECK(s0.parameter_elements == psi);
  CHECK(s0.model_state() == 16 * psi);
  CHECK(s0.master_weights == 0);
  // bf16 with fp32 master weights and Adam: 16 bytes per element at stage 0. ZeRO pads to a
  // multiple of the dp size, keeps fp32 gradient shards (stage 1 also the full bf16 gradient)
  // and one reduce-scatter output shard (fp32 reduce dtype).
  const int64_t shard = (psi + 3) / 4, padded = 4 * shard;
  CHECK(plan_memory(inputs(0, 4, "bf16")).model_state() == 16 * psi);
  CHECK(plan_memory(inputs(0, 4, "bf16")).reduce_buffers == 0);
  const MemoryPlan s3 = plan_memory(inputs(3, 4, "bf16"));
  CHECK(s3.model_state() == (2 + 4 + 4 + 8) * shard);
  CHECK(s3.reduce_buffers == 4 * shard);
  CHECK(s3.held_between_steps() == 22 * shard);
  MemoryPlan s1 = plan_memory(inputs(1, 4, "bf16"));
  CHECK(s1.parameters == 2 * padded);
  CHECK(s1.gradients == 2 * padded + 4 * shard);
  CHECK(s1.master_weights + s1.optimizer_moments == 12 * shard);
  MemoryPlan s2 = plan_memory(inputs(2, 4, "bf16"));
  CHECK(s2.parameters == 2 * padded);
  CHECK(s2.gradients == 4 * shard);
  CHECK(s2.activations == s1.activations);
  CHECK(s2.activations > 0);
}

TEST_CASE("memory plan: stage-0 communication is one all-reduce of every bucket", "[sharding]") {
  MemoryPlanInputs in = inputs(0, 2, "fp32");
  in.gradient_bucket_elements = {1000, 501};
  in.dp_rank = 0;
  MemoryPlan rank0 = plan_memory(in);
  // Rank 0 owns 500 of 1000 and 251 of 501: sends 2 * (500 + 250) fp32 elements; owns the
  // single element of each scalar all-reduce, so sends none of those.
  CHECK(rank0.gradient_comm_bytes == 2 * (500 + 250) * 4);
  CHECK(rank0.control_comm_bytes == 0);
  in.dp_rank = 1;
  MemoryPlan rank1 = plan_memory(in);
  CHECK(rank1.gradient_comm_bytes == 2 * (500 + 251) * 4);
  CHECK(rank1.control_comm_bytes == 2 * 2 * 8);
  CHECK(plan_memory(inputs(0, 1, "fp32")).comm_bytes_per_step() == 0);
  CHECK(rank1.describe().find("communication per step") != std::string::npos);
  CHECK(format_bytes(3 * 1024 * 1024 + 512 * 1024) == "3.5 MiB");
  CHECK_THROWS_AS(plan_memory(inputs(4, 2, "fp32")), ConfigError);
}

TEST_CASE("memory plan: units in flight and the peak", "[sharding]") {
  // ZeRO-3 fp32: two gathered units and two unit gradients, the two largest units each.
  MemoryPlanInputs in = inputs(3, 4, "fp32");
  in.zero_unit_padded_elements = {100, 300, 200};
  CHECK(plan_memory(in).units_in_flight == 2 * (300 + 200) * 4);
  // A tied head gathers the embedding's unit again: three of each.
  in.model.tie_word_embeddings = true;
  CHECK(plan_memory(in).units_in_flight == 2 * (300 + 200 + 100) * 4);
  in.model.tie_word_embeddings = false;
  // ZeRO-2 bf16: gradients only (bf16), plus their copies widened to the fp32 reduce dtype.
  MemoryPlanInputs z2 = inputs(2, 4, "bf16");
  z2.zero_unit_padded_elements = {100, 300, 200};
  CHECK(plan_memory(z2).units_in_flight == (300 + 200) * 2 + (300 + 200) * 4);
  // ZeRO-1 keeps its gradients whole: nothing in flight. Stage 0 only widens bf16 buckets.
  MemoryPlanInputs z1 = inputs(1, 4, "fp32");
  z1.zero_unit_padded_elements = {100, 300, 200};
  CHECK(plan_memory(z1).units_in_flight == 0);
  MemoryPlanInputs ddp = inputs(0, 4, "fp32");
  ddp.gradient_bucket_elements = {10, 30, 20};
  CHECK(plan_memory(ddp).units_in_flight == 0);
  MemoryPlanInputs ddp_bf16 = inputs(0, 4, "bf16");
  ddp_bf16.gradient_bucket_elements = {10, 30, 20};
  CHECK(plan_memory(ddp_bf16).units_in_flight == (30 + 20) * 4);
  // The peak adds the measured process baseline to what is held, activations and units in flight.
  in.process_baseline_bytes = 1 << 20;
  const MemoryPlan plan = plan_memory(in);
  CHECK(plan.process_baseline == 1 << 20);
  CHECK(plan.peak() ==
        (1 << 20) + plan.held_between_steps() + plan.activations + plan.units_in_flight);
  CHECK(plan.describe().find("peak RSS ~") != std::string::npos);
}
