#include "inference_model.h"

#include <filesystem>
#include <optional>

#include "deepseek_train/checkpoint/sharded_checkpoint.h"
#include "deepseek_train/core/device.h"
#include "deepseek_train/core/error.h"
#include "deepseek_train/recipe/recipe.h"

namespace dst::cli {

namespace fs = std::filesystem;

bool is_checkpoint_dir(const std::string& path) {
  return fs::exists(fs::path(path) / "manifest.json");
}

DecryptedSources::DecryptedSources(std::vector<std::string*> folders, const std::string& key_file,
                                   const std::string& key_env, const std::string& command) {
  std::optional<EncryptionKey> key;
  for (std::string* folder : folders) {
    if (folder->empty() || is_checkpoint_dir(*folder) || !folder_is_encrypted(*folder)) continue;
    if (!key) key = load_encryption_key({key_file, key_env});
    DST_CHECK(key.has_value(), ConfigError,
              command << ": " << *folder
                      << " is an encrypted export; give its key with --key-file or --key-env");
    opened_.push_back(std::make_unique<DecryptedFolder>(*folder, *key));
    *folder = opened_.back()->path();
  }
}

TrainConfig inference_config(const ModelSource& source) {
  TrainConfig config;
  if (is_checkpoint_dir(source.model)) {
    DST_CHECK(source.adapter.empty(), ConfigError,
              source.command << ": --adapter goes with a Hugging Face --model; " << source.model
                             << " is a checkpoint (its adapters are inside)");
    CheckpointReader reader(source.model, load_encryption_key({source.key_file, source.key_env}));
    if (!reader.info().recipe.empty())
      config = parse_recipe(reader.info().recipe, source.model + "/manifest.json");
    config.model = reader.info().model;
    config.train.init_from.clear();  // the checkpoint holds every tensor, a frozen base included
    config.train.init_adapter.clear();
  } else {
    DST_CHECK(fs::exists(fs::path(source.model) / "config.json"), ConfigError,
              source.command << ": " << source.model
                             << " is neither a checkpoint (manifest.json) nor a Hugging Face "
                                "model folder (config.json)");
    config.model = model_config_from_hf_json((fs::path(source.model) / "config.json").string());
    config.train.init_from = source.model;
    config.train.init_adapter = source.adapter;
  }
  return config;
}

comm::ProcessWorld open_inference_world(const ModelSource& source, const LaunchEnv& env) {
  const DeviceInventory devices = probe_devices(process_env());
  const c10::Device device = resolve_device(source.device, env, devices, "--device");
  return comm::open_process_world(CommOptions{}, env, device);
}

std::unique_ptr<Trainer> load_inference_model(const ModelSource& source, TrainConfig config,
                                              const comm::CommunicatorPtr& world,
                                              const LaunchEnv& env) {
  config.parallel = {world->size(), 1, 1};
  config.data_parallel.zero_stage = 0;
  config.precision = PrecisionOptions();
  config.data.prepared.clear();
  config.train.resume.clear();
  config.checkpoint.encryption = {source.key_file, source.key_env};
  config.train.device = source.device;
  configure_intra_op_threads(config.train, env);
  Logger logger(world->rank(), world->size(), LogLevel::kWarn);
  auto trainer =
      std::make_unique<Trainer>(config, ProcessGroups::create(world, config.parallel), logger);
  if (is_checkpoint_dir(source.model)) trainer->load_checkpoint(source.model);
  trainer->model().eval();  // inference: no dropout (LoRA's lora_dropout included)
  return trainer;
}

}  // namespace dst::cli
