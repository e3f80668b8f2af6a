// LoRA and prefix tuning on a single process: option parsing and target matching, the frozen base
// (bit-identical after training, no optimizer state), the share of trainable parameters, merge
// and unmerge against the adapter's forward, PEFT export names and config keys, prefix masking,
// the registry with a user type, and training lowering the loss.
#include <torch/torch.h>

#include <catch2/catch.hpp>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>

#include "deepseek_train/adapters/adapter.h"
#include "deepseek_train/adapters/lora.h"
#include "deepseek_train/adapters/prefix_tuning.h"
#include "deepseek_train/model/llama.h"
#include "deepseek_train/checkpoint/safetensors.h"
#include "deepseek_train/comm/local_communicator.h"
#include "deepseek_train/core/error.h"
#include "deepseek_train/train/trainer.h"
#include "support/train_fixtures.h"

using namespace dst;
using namespace dst::testing;

namespace {

AdapterConfig lora_config(std::vector<std::string> targets = {"q_proj", "v_proj"}, int r = 4) {
  AdapterConfig c;
  c.type = "lora";
  c.where = "test.yaml:3: adapters[0]";
  c.scalars = {{"r", std::to_string(r)}, {"alpha", "8"}};
  c.lists["target_modules"] = std::move(targets);
  return c;
}

AdapterConfig prefix_config(int tokens = 3) {
  AdapterConfig c;
  c.type = "prefix";
  c.where = "test.yaml:3: adapters[0]";
  c.scalars = {{"num_virtual_tokens", std::to_string(tokens)}};
  return c;
}

std::string message_of(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const std::exception& e) {
    return e.what();
  }
  return "";
}

Trainer make_trainer(TrainConfig config) {
  return Trainer(config, ProcessGroups::create(comm::make_local_communicator(), config.parallel),
                 Logger(0, 1, LogLevel::kWarn));
}

// Trains `steps` steps on fixed random batches; returns the losses.
std::vector<double> train(Trainer& trainer, int64_t steps) {
  std::vector<double> losses;
  const TrainConfig& c = trainer.config();
  for (int64_t s = 0; s < steps; ++s) {
    const MicroBatch batch = global_batch(s % 2, c.train.micro_batch_size, c.data.seq_len);
    losses.push_back(trainer.train_step({batch}).loss);
  }
  return losses;
}

}  // namespace

TEST_CASE("adapters: LoRA options and PEFT target matching", "[adapters]") {
  LoraOptions o = LoraOptions::from_config(lora_config({"q_proj", "mlp.down_proj"}, 8));
  CHECK(o.targets("model.layers.0.self_attn.q_proj"));
  CHECK(o.targets("model.layers.3.mlp.down_proj"));
  CHECK_FALSE(o.targets("model.layers.0.self_attn.k_proj"));
  CHECK_FALSE(o.targets("model.layers.0.self_attn.xq_proj"));  // suffix must follow a dot
  CHECK(o.scaling() == Approx(1.0));
  AdapterConfig regex = lora_config();
  regex.lists.clear();
  regex.scalars["target_modules"] = R"(.*\.layers\.1\..*_proj)";
  regex.scalars["use_rslora"] = "true";
  o = LoraOptions::from_config(regex);
  CHECK(o.targets("model.layers.1.mlp.up_proj"));
  CHECK_FALSE(o.targets("model.layers.0.mlp.up_proj"));
  CHECK(o.scaling() == Approx(8.0 / 2.0));  // alpha / sqrt(r), r = 4

  AdapterConfig bad = lora_config();
  bad.scalars["rank"] = "4";
  CHECK_THAT(message_of([&] { LoraOptions::from_config(bad); }),
             Catch::Contains("test.yaml:3: adapters[0]: unknown key 'rank'"));
  bad = lora_config();
  bad.scalars["r"] = "four";
  CHECK_THAT(message_of([&] { LoraOptions::from_config(bad); }),
             Catch::Contains("adapters[0].r: expected an integer"));
  bad = lora_config();
  bad.scalars["dropout"] = "1.5";
  CHECK_THAT(message_of([&] { LoraOptions::from_config(bad); }), Catch::Contains("dropout"));
  AdapterConfig unknown = lora_config();
  unknown.type = "ia3";
  CHECK_THAT(message_of([&] { AdapterRegistry().create(unknown); }),
             Catch::Contains("unknown adapter type 'ia3' (registered: lora, prefix)"));
  CHECK_THAT(message_of([&] { PrefixTuningOptions::from_config(lora_config()); }),
             Catch::Contains("unknown key"));
}

TEST_CASE("adapters: LoRA trains < 1% of the quickstart-size model, the base stays bit-identical",
          "[adapters]") {
  TrainConfig config = equivalence_config(1, 1);
  // The quickstart model's shape (configs/quickstart.yaml).
  config.model.hidden_size = 128;
  config.model.intermediate_size = 344;
  config.model.num_hidden_layers = 4;
  config.model.num_attention_heads = 4;
  config.model.num_key_value_heads = 4;
  config.model.max_position_embeddings = 256;
  config.optim.lr = 1e-2;
  config.optim.weight_decay = 0.0;
  config.optim.grad_clip = 0.0;
  config.adapters = {lora_config({"q_proj", "v_proj"}, 2)};
  Trainer trainer = make_trainer(config);
  const int64_t trainable = trainer.trainable_parameter_elements();
  const int64_t frozen = trainer.frozen_parameter_elements();
  INFO(trainable << " trainable of " << trainable + frozen);
  CHECK(trainable == 4 * 2 * (2 * 128 + 2 * 128));  // 4 layers x {q, v} x (A + B)
  CHECK(static_cast<double>(trainable) / static_cast<double>(trainable + frozen) < 0.01);
  // The plan has no gradient or optimizer state for the base.
  const MemoryPlan plan = trainer.memory_plan();
  CHECK(plan.parameter_elements == trainable);
  CHECK(plan.optimizer_moments == trainable * 8);
  CHECK(plan.frozen_parameters == frozen * 4);

  std::map<std::string, torch::Tensor> before;
  for (const auto& [name, tensor] : trainer.named_parameters())
    before[name] = tensor.detach().clone();
  const std::vector<double> losses = train(trainer, 30);
  CHECK(losses.back() < losses.front() - 0.1);
  int changed = 0;
  for (const auto& [name, tensor] : trainer.named_parameters()) {
    INFO(name);
    const bool lora = name.find(".lora_") != std::string::npos;
    CHECK(tensor.requires_grad() == lora);
    if (lora) {
      changed += torch::equal(tensor, before[name]) ? 0 : 1;
      CHECK(tensor.grad().defined());
    } else {
      CHECK(torch::equal(tensor, before[name]));  // bit-identical
      CHECK_FALSE(tensor.grad().defined());
    }
  }
  CHECK(changed == 16);
}

TEST_CASE("adapters: merged LoRA logits equal base + adapter; unmerge restores the base",
          "[adapters]") {
  TrainConfig config = equivalence_config(1, 1);
  LlamaModel model(config.model);
  model->initialize(7);
  const torch::Tensor ids = torch::randint(0, 259, {2, 12}, torch::kInt64);
  const torch::Tensor base_logits = model->forward(ids).detach();
  AdapterRegistry registry;
  auto adapters =
      apply_adapters(*model, {lora_config({"q_proj", "o_proj", "down_proj"})}, registry, 7);
  auto& lora = dynamic_cast<LoraAdapter&>(*adapters.front());
  REQUIRE(lora.modules().size() == 6);  // 2 layers x 3 targets
  // B starts at zero: the adapted model is the base model.
  CHECK(torch::equal(model->forward(ids).detach(), base_logits));
  {
    torch::NoGradGuard no_grad;
    for (auto& m : lora.modules()) m->lora_B->weight.normal_(0.0, 0.05);
  }
  const torch::Tensor adapted = model->forward(ids).detach();
  CHECK(relative_difference(adapted, base_logits) > 1e-3);
  std::map<std::string, torch::Tensor> weights;
  for (const auto& item : model->named_parameters())
    weights[item.key()] = item.value().detach().clone();
  lora.merge();
  const torch::Tensor merged = model->forward(ids).detach();
  CHECK((merged - adapted).abs().max().item<double>() <= 1e-5);
  // Merging a full state dict gives the same weights as merging in place.
  std::map<std::string, torch::Tensor> state = weights;
  REQUIRE(lora.merge_into(state));
  for (const auto& [name, tensor] : state) {
    INFO(name);
    CHECK(name.find("lora_") == std::string::npos);
    CHECK((tensor - model->named_parameters()[name]).abs().max().item<double>() <= 1e-6);
  }
  lora.unmerge();
  CHECK((model->forward(ids).detach() - adapted).abs().max().item<double>() <= 1e-5);
  CHECK((model->named_parameters()["model.layers.0.self_attn.q_proj.weight"] -
         weights["model.layers.0.self_attn.q_proj.weight"])
            .abs()
            .max()
            .item<double>() <= 1e-6);
}

TEST_CASE("adapters: LoRA export has exactly PEFT's key names and config keys", "[adapters]") {
  TrainConfig config = equivalence_config(1, 1);
  config.adapters = {lora_config({"q_proj", "v_proj"}, 4)};
  config.train.output_dir = (std::filesystem::temp_directory_path() / "dst_lora_export").string();
  std::filesystem::remove_all(config.train.output_dir);
  Trainer trainer = make_trainer(config);
  train(trainer, 2);
  const std::filesystem::path out(config.train.output_dir);
  trainer.export_adapters((out / "adapter").string(), (out / "merged").string());
  SafetensorsFile file((out / "adapter" / "adapter_model.safetensors").string());
  std::set<std::string> names;
  for (const auto& entry : file.entries()) names.insert(entry.name);
  std::set<std::string> expected;
  for (int layer = 0; layer < 2; ++layer)
    for (const char* module : {"q_proj", "v_proj"})
      for (const char* factor : {"lora_A", "lora_B"})
        expected.insert("base_model.model.model.layers." + std::to_string(layer) + ".self_attn." +
                        module + "." + factor + ".weight");
  CHECK(names == expected);
  CHECK(file.at("base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight").shape ==
        std::vector<int64_t>{4, 32});
  CHECK(file.at("base_model.model.model.layers.1.self_attn.v_proj.lora_B.weight").shape ==
        std::vector<int64_t>{16, 4});  // 2 kv heads x head_dim 8
  std::ifstream in(out / "adapter" / "adapter_config.json");
  const nlohmann::json peft = nlohmann::json::parse(in);
  for (const char* key :
       {"peft_type", "r", "lora_alpha", "lora_dropout", "target_modules", "bias", "task_type"})
    CHECK(peft.contains(key));
  CHECK(peft["peft_type"] == "LORA");
  CHECK(peft["task_type"] == "CAUSAL_LM");
  CHECK(peft["bias"] == "none");
  CHECK(peft["r"] == 4);
  CHECK(peft["target_modules"] == nlohmann::json::array({"q_proj", "v_proj"}));
  // The merged model is a Hugging Face folder without adapter tensors.
  SafetensorsFile merged((out / "merged" / "model.safetensors").string());
  for (const auto& entry : merged.entries()) CHECK(entry.name.find("lora") == std::string::npos);
  CHECK(std::filesystem::exists(out / "merged" / "config.json"));
}

TEST_CASE("adapters: prefix tuning — masked out it is the base model; it trains the loss down",
          "[adapters]") {
  TrainConfig config = equivalence_config(1, 1);
  for (int64_t projection : {0, 24}) {
    INFO("projection hidden " << projection);
    LlamaModel model(config.model);
    model->initialize(3);
    const torch::Tensor ids = torch::randint(0, 259, {2, 10}, torch::kInt64);
    const torch::Tensor base = model->forward(ids).detach();
    AdapterConfig c = prefix_config(4);
    if (projection > 0) c.scalars["projection.hidden"] = std::to_string(projection);
    auto adapters = apply_adapters(*model, {c}, AdapterRegistry(), 3);
    auto& prefix = dynamic_cast<PrefixTuningAdapter&>(*adapters.front());
    const torch::Tensor with_prefix = model->forward(ids).detach();
    CHECK(relative_difference(with_prefix, base) > 1e-3);
    prefix.set_visible(false);
    // Positions start after the prefix (RoPE is relative): only rounding differs.
    CHECK((model->forward(ids).detach() - base).abs().max().item<double>() <= 1e-5);
    prefix.set_visible(true);
  }
  TrainConfig training = config;
  training.optim.lr = 2e-2;
  training.optim.grad_clip = 0.0;
  training.optim.weight_decay = 0.0;
  training.adapters = {prefix_config(4)};
  Trainer trainer = make_trainer(training);
  CHECK(trainer.trainable_parameter_elements() == 2 * 2 * 4 * 2 * 8);  // layers x k/v x nvt x kv
  // One fixed batch of random tokens: the prefix learns to lower its loss.
  const MicroBatch fixed = global_batch(0, training.train.micro_batch_size, training.data.seq_len);
  std::vector<double> losses;
  for (int step = 0; step < 30; ++step) losses.push_back(trainer.train_step({fixed}).loss);
  INFO("loss " << losses.front() << " -> " << losses.back());
  CHECK(losses.back() < losses.front() - 0.005);
  std::map<std::string, torch::Tensor> full;
  for (auto& [name, tensor] : trainer.full_parameters()) full[name] = tensor;
  const PeftAdapterFiles files = trainer.adapters().front()->peft_files(full, training.model);
  REQUIRE(files.tensors.size() == 1);
  CHECK(files.tensors[0].first == "prompt_embeddings");
  CHECK(files.tensors[0].second.sizes() == torch::IntArrayRef({4, 2 * 2 * 16}));
  // Layer 1's value prefix sits at columns [(1 * 2 + 1) * kv_dim, +kv_dim).
  CHECK(torch::equal(files.tensors[0].second.narrow(1, 3 * 16, 16),
                     full["model.layers.1.self_attn.prefix.value"].reshape({4, 16})));
  const nlohmann::json peft = nlohmann::json::parse(files.config_json);
  CHECK(peft["peft_type"] == "PREFIX_TUNING");
  CHECK(peft["num_virtual_tokens"] == 4);
}

namespace {

// A user adapter type: trains the RMSNorm weights only (BitFit-like), registered by name.
class NormTuning final : public Adapter {
 public:
  std::string type() const override { return "norm_tuning"; }
  void apply(CausalLM& model, uint64_t) override {
    for (auto& item : model.named_parameters())
      if (item.key().find("norm") != std::string::npos) item.value().set_requires_grad(true);
  }
};

}  // namespace

TEST_CASE("adapters: a program registers its own adapter type", "[adapters]") {
  AdapterRegistry registry;
  registry.add("norm_tuning", [](const AdapterConfig&) { return std::make_unique<NormTuning>(); });
  CHECK_THAT(
      message_of([&] { registry.add("lora", [](const AdapterConfig&) { return nullptr; }); }),
      Catch::Contains("already registered"));
  TrainConfig config = equivalence_config(1, 1);
  AdapterConfig custom;
  custom.type = "norm_tuning";
  custom.where = "adapters[0]";
  config.adapters = {custom};
  Trainer trainer(config, ProcessGroups::create(comm::make_local_communicator(), config.parallel),
                  Logger(0, 1, LogLevel::kWarn), &registry);
  CHECK(trainer.trainable_parameter_elements() == (2 * 2 + 1) * 32);
  train(trainer, 2);
  // Nothing matched: a one-line error naming the recipe entry.
  config.adapters = {lora_config({"no_such_proj"})};
  CHECK_THAT(message_of([&] { make_trainer(config); }),
             Catch::Contains("test.yaml:3: adapters[0]: the adapters add no trainable parameter"));
}
