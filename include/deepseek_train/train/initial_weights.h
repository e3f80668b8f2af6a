// Where each parameter's first value comes from, given one parameter at a time so that no rank
// needs the whole model in memory: the seeded draw of CausalLM::initialize_parameter, then, when
// the recipe names one (train.init_from), this rank's slice of the Hugging Face model's tensor
// (read by rows from the safetensors files). The trainer gives the parameters the family
// allocated at build time their values at once, the frozen base after the adapters, and the
// deferred trainable ones (core/deferred_tensor.h) unit by unit as each data-parallel engine
// takes them (DataParallelEngineSpec::materialize): under ZeRO-3 a rank holds at most its shards
// plus one unit.
#pragma once

#include <memory>
#include <string>

#include "deepseek_train/model/causal_lm.h"

namespace dst {

class HfModelReader;
class SafetensorsTensors;

// Copies this rank's slice of the full tensor `source_name` of `tensors` into `local`, the
// model's parameter `name`, split across tp as model.tp_split(name) says (vocabulary padding rows
// zero). Reads only this rank's rows of a tensor split along its first dimension.
void copy_rank_slice(const CausalLM& model, const std::string& name, at::Tensor& local,
                     const SafetensorsTensors& tensors, const std::string& source_name);

class InitialWeights {
 public:
  // `hf_model_dir` empty: seeded values only. Otherwise opens the folder (headers only) and
  // checks now, before anything is allocated, that it is this model and holds every parameter
  // with its full shape (CheckpointError naming the folder and tensor).
  InitialWeights(CausalLM& model, uint64_t seed, const std::string& hf_model_dir);
  ~InitialWeights();
  InitialWeights(const InitialWeights&) = delete;
  InitialWeights& operator=(const InitialWeights&) = delete;

  // Allocates and fills the deferred parameters among `parameters`; the others are left as they
  // are (already given their value, or an adapter's).
  void fill_deferred(NamedParameters& parameters);
  // Fills every model parameter that already has memory (families built from modules that
  // allocate their weights); call before adapters add their own parameters.
  void fill_allocated();
  // Tensors of the Hugging Face folder the model has no place for: those of layers past
  // num_hidden_layers (DeepSeek-V3's multi-token prediction); 0 without a folder.
  int64_t unused_layer_tensors() const;

 private:
  void fill(const std::string& name, at::Tensor& parameter);
  void import(const std::string& name, at::Tensor& parameter);
  CausalLM& model_;
  uint64_t seed_;
  std::string hf_dir_;
  std::unique_ptr<HfModelReader> hf_;
};

}  // namespace dst
