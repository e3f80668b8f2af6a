// LoRA (Hu et al. 2021) with PEFT's semantics: for each targeted projection W (out x in),
// y = W x + scaling * B A dropout(x), A (r x in) Kaiming-uniform, B (out x r) zero, scaling =
// alpha / r (alpha / sqrt(r) with use_rslora). A target matches a module when the module's name
// equals it or ends with "." + target; a target given as one string is a regular expression the
// whole name must match. Under tensor parallelism the adapter is split like its base: for a
// column-parallel base B is split on the output dim (A replicated), for a row-parallel base A is
// split on the input dim (B replicated); the replicated factor's gradient is summed across tp.
// Parameters are named <module>.lora_A.weight / <module>.lora_B.weight, exported with PEFT's
// "base_model.model." prefix.
#pragma once

#include <torch/nn/modules/linear.h>

#include <string>
#include <vector>

#include "deepseek_train/adapters/adapter.h"

namespace dst {

struct LoraOptions {
  int64_t r = 8;
  double alpha = 8.0;
  double dropout = 0.0;
  std::vector<std::string> target_modules{"q_proj", "v_proj"};
  std::string target_regex;  // set when target_modules was one string (full match)
  bool use_rslora = false;

  static LoraOptions from_config(const AdapterConfig& config);
  double scaling() const;
  bool targets(const std::string& module_name) const;
};

class LoraLinearImpl final : public LinearAdapter {
 public:
  // Creates lora_A / lora_B for `site` and registers them in the site's module (so their names
  // are <site>.lora_A.weight, ...). `tp_rank` selects the slice of a split factor.
  LoraLinearImpl(const ProjectionSite& site, const LoraOptions& options,
                 comm::CommunicatorPtr tp_group, uint64_t seed);
  torch::Tensor forward(const torch::Tensor& input, const torch::Tensor& base_output) override;

  // W += scaling * B A (merge) / W -= scaling * B A (unmerge), on this rank's slices; while
  // merged, forward adds nothing. Parameters must be present (gathered under ZeRO-3).
  void merge();
  void unmerge();
  bool merged() const { return merged_; }

  torch::nn::Linear lora_A{nullptr}, lora_B{nullptr};

 private:
  torch::Tensor delta_weight() const;  // scaling * B A, in fp32, this rank's slice of W
  ProjectionSite site_;
  comm::CommunicatorPtr tp_;
  double scaling_;
  double dropout_;
  bool merged_ = false;
};
TORCH_MODULE(LoraLinear);

class LoraAdapter final : public Adapter {
 public:
  explicit LoraAdapter(const AdapterConfig& config);
  std::string type() const override { return "lora"; }
  void apply(CausalLM& model, uint64_t seed) override;
  PeftAdapterFiles peft_files(const std::map<std::string, at::Tensor>& full,
                              const ModelConfig& config) const override;
  bool merge_into(std::map<std::string, at::Tensor>& full) const override;

  const LoraOptions& options() const { return options_; }
  // The projections this adapter was applied to (after apply()).
  const std::vector<LoraLinear>& modules() const { return modules_; }
  void merge();
  void unmerge();

 private:
  LoraOptions options_;
  std::string where_;
  std::vector<std::string> module_names_;
  std::vector<LoraLinear> modules_;
};

}  // namespace dst
