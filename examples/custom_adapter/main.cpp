// A user-defined adapter type registered with the library: "norm_tuning" trains only the RMSNorm
// weights of a frozen model (BitFit-style). A recipe selects it by name like the built-in ones:
//   adapters: [{type: norm_tuning}]
// This program registers the type, builds a Trainer with it and trains a few steps on random
// tokens. Usage: custom_adapter [steps]
#include <deepseek_train/adapters/adapter.h>
#include <deepseek_train/comm/local_communicator.h>
#include <deepseek_train/core/error.h>
#include <deepseek_train/train/trainer.h>
#include <torch/torch.h>

#include <cstdio>
#include <cstdlib>

namespace {

class NormTuning final : public dst::Adapter {
 public:
  explicit NormTuning(const dst::AdapterConfig& config) { config.check_keys({}); }
  std::string type() const override { return "norm_tuning"; }
  // The trainer froze every parameter; unfreeze the norm weights.
  void apply(dst::CausalLM& model, uint64_t /*seed*/) override {
    for (auto& item : model.named_parameters())
      if (item.key().find("norm") != std::string::npos) item.value().set_requires_grad(true);
  }
};

}  // namespace

int main(int argc, char** argv) {
  try {
    const int64_t steps = argc > 1 ? std::atoll(argv[1]) : 10;
    dst::AdapterRegistry registry;  // built-in lora and prefix, plus ours
    registry.add("norm_tuning",
                 [](const dst::AdapterConfig& c) { return std::make_unique<NormTuning>(c); });

    dst::TrainConfig config;
    config.model.hidden_size = 64;
    config.model.intermediate_size = 128;
    config.model.num_hidden_layers = 2;
    config.model.num_attention_heads = 4;
    config.model.num_key_value_heads = 2;
    config.optim.lr = 1e-2;
    dst::AdapterConfig adapter;
    adapter.type = "norm_tuning";
    adapter.where = "custom_adapter: adapters[0]";
    config.adapters = {adapter};
    dst::Trainer trainer(
        config, dst::ProcessGroups::create(dst::comm::make_local_communicator(), config.parallel),
        dst::Logger(0, 1, dst::LogLevel::kWarn), &registry);
    std::printf("trainable parameters: %lld of %lld\n",
                static_cast<long long>(trainer.trainable_parameter_elements()),
                static_cast<long long>(trainer.trainable_parameter_elements() +
                                       trainer.frozen_parameter_elements()));
    const torch::Tensor tokens = torch::randint(0, 259, {4, 33}, torch::kInt64);
    const dst::MicroBatch batch{tokens.narrow(1, 0, 32).contiguous(),
                                tokens.narrow(1, 1, 32).contiguous()};
    double loss = 0;
    for (int64_t step = 0; step < steps; ++step) loss = trainer.train_step({batch}).loss;
    std::printf("final loss %.4f\n", loss);
    return 0;
  } catch (const dst::Error& e) {
    std::fprintf(stderr, "custom_adapter: error: %s\n", e.what());
    return 1;
  }
}
