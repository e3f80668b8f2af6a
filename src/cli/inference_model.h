// The model `dstrain eval` and `dstrain generate` run: a checkpoint directory (built from the
// recipe it stores, adapters included) or a Hugging Face folder (with an optional PEFT LoRA
// adapter), in fp32, without model parallelism, data-parallel over `world`, on --device.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "deepseek_train/checkpoint/encrypted_folder.h"
#include "deepseek_train/comm/communicator.h"
#include "deepseek_train/comm/process_world.h"
#include "deepseek_train/core/launch_env.h"
#include "deepseek_train/train/trainer.h"

namespace dst::cli {

struct ModelSource {
  std::string model;    // checkpoint directory or Hugging Face folder
  std::string adapter;  // PEFT LoRA folder (Hugging Face models only)
  std::string key_file, key_env;
  std::string command;          // "eval", "generate": names the command in errors
  std::string device = "auto";  // --device: auto | cpu | cuda (train.device's values)
};

// The processes of an eval/generate run on `source.device` resolved for this rank (CUDA tensors
// between ranks by NCCL or staged MPI, as for training; comm/process_world.h).
comm::ProcessWorld open_inference_world(const ModelSource& source, const LaunchEnv& env);

// The recipe that builds the source's model. ConfigError naming the path when it is neither a
// checkpoint nor a Hugging Face folder, or when an adapter is given with a checkpoint.
TrainConfig inference_config(const ModelSource& source);

bool is_checkpoint_dir(const std::string& path);

// Encrypted exports (`ckpt convert --encrypt-key-file`, checkpoint/encrypted_folder.h) among the
// given model and adapter folders, opened with the key for this object's lifetime: each such
// path is replaced by the path of its decrypted view. ConfigError naming the folder when one is
// encrypted and no key is given.
class DecryptedSources {
 public:
  DecryptedSources(std::vector<std::string*> folders, const std::string& key_file,
                   const std::string& key_env, const std::string& command);

 private:
  std::vector<std::unique_ptr<DecryptedFolder>> opened_;
};

// Builds the model of `config` (from inference_config, with data.seq_len set) over `world` and
// loads its weights.
std::unique_ptr<Trainer> load_inference_model(const ModelSource& source, TrainConfig config,
                                              const comm::CommunicatorPtr& world,
                                              const LaunchEnv& env);

}  // namespace dst::cli
