// The Trainer composes model, data-parallel gradient reduction, optimizer, schedule, data and
// metrics into a training run. run() does a whole run from a TrainConfig (data from files, eval,
// progress, metrics.jsonl, final weights); train_step() and evaluate() are the building blocks a
// custom C++ loop can call with its own batches.
#pragma once

#include <torch/types.h>

#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "deepseek_train/adapters/adapter.h"
#include "deepseek_train/checkpoint/sharded_checkpoint.h"
#include "deepseek_train/core/fault_injection.h"
#include "deepseek_train/core/launch_env.h"
#include "deepseek_train/core/log.h"
#include "deepseek_train/mesh/process_groups.h"
#include "deepseek_train/model/model_family.h"
#include "deepseek_train/precision/loss_scaler.h"
#include "deepseek_train/sharding/data_parallel_engine.h"
#include "deepseek_train/sharding/memory_plan.h"
#include "deepseek_train/train/expert_load_balancer.h"
#include "deepseek_train/train/parallelize.h"
#include "deepseek_train/train/provenance.h"
#include "deepseek_train/train/step_types.h"
#include "deepseek_train/train/train_config.h"

namespace dst {

struct TrainingData;
class BatchSampler;
class DpSgd;
enum class CheckpointSave;

class Trainer {
 public:
  // Builds the model of config.model.model_type's family (from `families`, the built-in registry
  // when null) and initialises it deterministically from train.seed, applies the recipe's
  // adapters (types from `adapters`, the built-in registry when null; the base is then frozen)
  // and builds the optimizer over the trainable parameters, everything on train.device (this
  // rank's GPU under cuda; batches given on the CPU are copied there). Installs
  // train.cpu_allocator as the process's CPU allocator (core/cpu_allocator.h).
  Trainer(const TrainConfig& config, ProcessGroups groups, Logger logger,
          const AdapterRegistry* adapters = nullptr, const ModelFamilyRegistry* families = nullptr);
  ~Trainer();

  // A full run: reads data.train_path (and validation data), trains train.steps steps with
  // progress lines every train.log_every, evaluates every train.eval_every, writes
  // <output_dir>/metrics.jsonl, and saves <output_dir>/model.h5 + config.json at the end.
  TrainSummary run();

  // One optimizer step over this rank's micro-batches; the loss is normalised by the total number
  // of target tokens of the step across all data-parallel ranks. When any gradient element on
  // any rank is inf/NaN, every rank skips the update (StepResult::skipped) and the fp16 loss
  // scale backs off.
  StepResult train_step(const std::vector<MicroBatch>& micro_batches);

  // Mean token loss over every rank's batches (no gradient).
  double evaluate(const std::vector<MicroBatch>& batches);
  // Loss summed over target tokens and the token count, over every rank's batches (no
  // gradient): evaluate() is their ratio.
  std::pair<double, double> evaluate_sums(const std::vector<MicroBatch>& batches);

  // The adapters applied to the model (empty: full fine-tuning).
  const std::vector<std::unique_ptr<Adapter>>& adapters() const { return adapters_; }
  // Parameter elements of this rank that train / stay frozen.
  int64_t trainable_parameter_elements() const;
  int64_t frozen_parameter_elements() const;
  // Writes each adapter in PEFT's format under <directory>/<type> (or <directory> for one
  // adapter) and, when every adapter can be merged, the merged Hugging Face model under
  // <merged_directory> (empty: skipped). Collective; world rank 0 writes.
  void export_adapters(const std::string& directory, const std::string& merged_directory);

  CausalLM& model() { return *model_; }
  // Where the model and its training state live (train.device resolved for this rank).
  const c10::Device& device() const { return device_; }
  const TrainConfig& config() const { return config_; }
  const ProcessGroups& groups() const { return groups_; }
  int64_t step() const { return step_; }
  // fp16 dynamic loss scaling (disabled, scale 1, for fp32/bf16); counts skipped steps always.
  const DynamicLossScaler& loss_scaler() const { return scaler_; }

  // What this rank holds and sends per step (printed at the start of run()).
  MemoryPlan memory_plan() const;

  // ZeRO: padded element count of each sharding unit of this rank (empty at stage 0).
  std::vector<int64_t> sharding_unit_sizes() const;

  // Bytes of each data-parallel gradient bucket, in launch order.
  std::vector<int64_t> gradient_bucket_bytes() const;

  // This rank's model parameters by Hugging Face name, as it holds them (tensor-parallel
  // shards; under ZeRO-3 their memory exists only while gathered: use full_parameters()).
  std::vector<std::pair<std::string, torch::Tensor>> named_parameters() const;
  // Copies of the full parameters of this rank's pipeline chunks, any ZeRO stage, gathered
  // across tp with vocabulary padding removed (collective over the dp and tp groups).
  std::vector<std::pair<std::string, torch::Tensor>> full_parameters();
  // The whole model's full parameters on world rank 0 (every pipeline stage's, collected);
  // empty on the other ranks. Collective.
  std::vector<std::pair<std::string, torch::Tensor>> full_model_on_rank0();
  // Writes model.h5 and config.json of the whole model into `directory` (world rank 0 writes,
  // after collecting the other pipeline stages' parameters; every rank calls).
  std::string save_weights(const std::string& directory);

  // Checkpoints (checkpoint/sharded_checkpoint.h), all collective. <output_dir>/checkpoints.
  std::string checkpoint_root() const;
  // Saves this step's full training state (async per checkpoint.async); returns its directory.
  std::string save_checkpoint(const std::string& sampler_state);
  // Waits until a background save is committed.
  void wait_for_checkpoint();
  // Restores parameters, optimizer state, step, loss scaler (and RNG on the same world size)
  // from a checkpoint saved under any layout; returns the data sampler's state.
  std::string load_checkpoint(const std::string& directory);
  // The recipe as resolved (recipe_to_yaml), recorded in every checkpoint's manifest.
  void set_recipe_text(std::string text) { recipe_text_ = std::move(text); }
  // DP-SGD (config.privacy): the chance q of each example to join a step and the expected
  // sequences per step over all ranks (run() passes its sampler's); solves the noise multiplier
  // for privacy.target_epsilon over the steps train.steps leaves (after a load_checkpoint, on top
  // of the budget its steps spent). Needed before the first train_step.
  void plan_privacy(double sample_rate, double expected_global_batch);
  // The budget spent so far under DP-SGD (none without it or before plan_privacy).
  std::optional<PrivacyProvenance> privacy_provenance() const;
  // Test-only faults (core/fault_injection.h) injected at the plan's step and point.
  void set_fault_plan(FaultPlan plan);
  // The first parameter (in model order, over every rank) whose gradient holds a NaN or Inf;
  // empty when none does. Collective over the world.
  std::string first_nonfinite_gradient();
  // What this rank saves: per parameter piece it owns, the fp32 master, Adam moments and (for
  // bf16/fp16 parameters) the parameter itself, with its place in the global tensor.
  std::vector<StatePiece> state_pieces();
  // This rank's training state as its data-parallel engines hold it, every local model chunk:
  // views of the engines' buffers (their storages show what is allocated).
  std::vector<ParameterStateSlice> engine_state_slices();

 private:
  TrainConfig config_;
  ProcessGroups groups_;
  Logger logger_;
  std::shared_ptr<CausalLM> model_;
  std::vector<std::unique_ptr<Adapter>> adapters_;
  // Engines (gradient sync + optimizer, one per local chunk), unit hooks, pipeline executor and
  // tied-embedding group (train/parallelize.h).
  ParallelizedModel parallel_;
  DynamicLossScaler scaler_;
  ExpertLoadBalancer load_balancer_;
  // The dtype activations are computed in: the parameters' (fp16 ones compute in fp32 on the CPU).
  at::ScalarType activation_dtype_ = at::kFloat;
  // Where the model, its engines' buffers and the batches live (train.device, core/device.h).
  c10::Device device_{c10::kCPU};
  // The random generators a checkpoint saves (CPU, and the GPU's on cuda), by tensor name.
  std::vector<std::pair<std::string, at::Generator>> random_generators() const;
  // The batches on device_ (the same tensors on the CPU).
  std::vector<MicroBatch> on_device(const std::vector<MicroBatch>& batches) const;

  // The embedding's (or its copy's) gradient slices on this rank.
  std::vector<ParameterStateSlice> embedding_gradients() const;
  // Sums the two copies' gradients so both stages apply the same update.
  void sync_tied_embedding_gradients();
  void run_unsharded_zero_as_stage_0();
  // Byte counters of every group this trainer communicates on.
  comm::CommStats comm_stats() const;
  // Where a slice of `name` (elements [begin, end) of this rank's tp block) sits globally.
  PieceLocation location_of(const std::string& name, const torch::Tensor& local, int64_t begin,
                            int64_t end) const;
  // From checkpoint.encryption, read once at construction (a bad key fails before training).
  std::optional<EncryptionKey> load_encryption_key() const;
  std::optional<EncryptionKey> encryption_key_;
  // Writes export files through `write(folder)` (world rank 0): into `directory`, or under
  // checkpoint.encrypt_exports into a private staging folder whose files are then sealed into
  // `directory` (checkpoint/encrypted_folder.h), so no plaintext reaches it.
  void write_export(const std::string& directory,
                    const std::function<void(const std::filesystem::path&)>& write);
  // Writes <directory>/provenance.json (world rank 0), as beside `ckpt convert` exports; returns
  // its path.
  std::string write_provenance(const std::string& directory);
  std::unique_ptr<CheckpointWriter> checkpoint_writer_;
  int64_t process_baseline_bytes_ = 0;  // resident memory before the model was built
  std::string recipe_text_;
  // train/provenance.h of this run, hashed once on the first save by world rank 0 (which writes
  // the manifest); empty elsewhere.
  std::string provenance_json();
  std::optional<Provenance> provenance_;
  FaultPlan fault_plan_;
  std::shared_ptr<bool> poison_gradient_ = std::make_shared<bool>(false);  // nan fault armed
  int64_t consecutive_nonfinite_steps_ = 0;
  // Refuses (CheckpointError on every rank) to save state holding a NaN or Inf. Collective.
  void check_finite_state(const std::vector<StatePiece>& pieces);

  // run()'s start-up lines: model, data, batch, adapters, the memory plan, the MFU denominator.
  void log_run_plan(const TrainingData& data, const BatchSampler& sampler, double peak_flops,
                    const std::string& peak_source);
  double rank_peak_flops(std::string* source) const;
  void save_due_checkpoint(CheckpointSave save, const BatchSampler& sampler);
  // DP-SGD (train/dp_sgd.h), null without privacy.max_grad_norm.
  std::unique_ptr<DpSgd> dp_sgd_;
  // The step's micro-batches under DP-SGD: both passes of each; returns the summed token loss and
  // adds the clipped examples to `clipped`.
  double private_backward(const std::vector<MicroBatch>& micro_batches, double* clipped);
  // run()'s sampler: Poisson under DP-SGD's privacy.sampling poisson, else fixed batches.
  std::unique_ptr<BatchSampler> make_sampler(const TrainingData& data);
  // load_checkpoint under DP-SGD: the accountant rebuilt from the steps the checkpoint recorded;
  // ConfigError when it was trained without DP-SGD.
  void restore_privacy_history(const CheckpointInfo& info, const std::string& directory);
  double global_grad_norm(double loss_scale);
  // Sums over the dp group, then (when there is a pipeline) over the pp group.
  std::vector<double> sum_over_data_and_pipeline(std::vector<double> values);
  // Trainable (or frozen) parameter elements of the whole model, each counted once (collective
  // over tp and pp).
  double whole_model_elements(bool trainable);
  int64_t step_ = 0;
};

// The libtorch dtype of a precision setting.
at::ScalarType scalar_type_of(Precision precision);

// Sets libtorch's intra-op threads to train.threads, or cores / local ranks; returns the number.
int configure_intra_op_threads(const TrainOptions& options, const LaunchEnv& env);

}  // namespace dst
