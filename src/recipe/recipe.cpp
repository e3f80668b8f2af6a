// YAML recipe <-> TrainConfig. Every section is a table of {key, setter, emitter}; parsing walks
// the document, rejects unknown/duplicate keys and wrong types with "<source>:<line>: ..."
// one-liners, then fills the config in table order (so model.hf_config is applied before the other
// model keys).
#include "deepseek_train/recipe/recipe.h"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>
#include <map>
#include <sstream>
#include <type_traits>
#include <utility>

#include "deepseek_train/core/error.h"
#include "yaml_values.h"

namespace dst {
namespace {

namespace fs = std::filesystem;

using namespace recipe_yaml;

struct Field {
  std::string key;
  std::function<void(TrainConfig&, const Value&)> set;
  std::function<void(const TrainConfig&, YAML::Emitter&)> emit;  // empty: not emitted
  std::vector<std::string> conflicts = {};  // keys of this section that may not appear with it
  std::function<bool(const TrainConfig&)> emitted_if = nullptr;  // empty: always emitted
};

struct Section {
  std::string name;
  std::vector<Field> fields;
};

// A plain field bound to config.*section.*member.
template <typename S, typename T>
Field field(const char* key, S TrainConfig::*section, T S::*member) {
  return {
      key,
      [section, member](TrainConfig& c, const Value& v) { (c.*section).*member = read_as<T>(v); },
      [section, member](const TrainConfig& c, YAML::Emitter& out) {
        emit_as(out, (c.*section).*member);
      }};
}

// Another name of the field `original` of the same section: read, never emitted, and not
// allowed in one recipe together with `original`.
Field alias_of(Field field, const char* original) {
  field.emit = nullptr;
  field.conflicts = {original};
  return field;
}

// A field one mapping deeper: key "group.name" bound to config.*section.*group.*member.
template <typename S, typename G, typename T>
Field nested(const char* key, S TrainConfig::*section, G S::*group, T G::*member) {
  return {key,
          [section, group, member](TrainConfig& c, const Value& v) {
            ((c.*section).*group).*member = read_as<T>(v);
          },
          [section, group, member](const TrainConfig& c, YAML::Emitter& out) {
            emit_as(out, ((c.*section).*group).*member);
          }};
}

// A model field only DeepSeek-V2/V3 use: emitted for those model types only.
Field deepseek_only(Field field) {
  field.emitted_if = [](const TrainConfig& c) { return c.model.is_deepseek(); };
  return field;
}

void set_hf_config(TrainConfig& config, const Value& v) {
  const fs::path path(read_string(v));
  // Paths written in the recipe are relative to the recipe's directory; paths given by an
  // override (command line) are relative to the working directory.
  const bool from_override = v.ctx.override_for(v.dotted) != nullptr;
  const fs::path resolved = path.is_absolute() || from_override ? path : v.ctx.base_dir / path;
  try {
    config.model = model_config_from_hf_json(resolved.string());
  } catch (const ConfigError& e) {
    v.fail("key '" + v.dotted + "': " + strip_location(e.what()));
  }
}

void set_betas(TrainConfig& config, const Value& v) {
  if (!v.node.IsSequence() || v.node.size() != 2) v.wrong_type("a sequence of 2 numbers");
  for (size_t i = 0; i < 2; ++i) {
    const YAML::Node element = v.node[i];
    const Value ev{element, v.dotted + "[" + std::to_string(i) + "]", v.mark, v.ctx};
    (i == 0 ? config.optim.beta1 : config.optim.beta2) = read_double(ev);
  }
}

void set_layers_per_stage(TrainConfig& config, const Value& v) {
  if (!v.node.IsSequence()) v.wrong_type("a sequence of layer counts");
  config.model_parallel.layers_per_stage.clear();
  for (size_t i = 0; i < v.node.size(); ++i) {
    const YAML::Node element = v.node[i];
    const Value ev{element, v.dotted + "[" + std::to_string(i) + "]", v.mark, v.ctx};
    config.model_parallel.layers_per_stage.push_back(read_integer<int64_t>(ev));
  }
}

void set_prepare_inputs(TrainConfig& config, const Value& v) {
  std::vector<std::string> inputs;
  if (v.node.IsScalar()) {
    inputs.push_back(read_string(v));
  } else {
    if (!v.node.IsSequence()) v.wrong_type("a file or folder, or a list of them");
    for (size_t i = 0; i < v.node.size(); ++i) {
      const Value ev{v.node[i], v.dotted + "[" + std::to_string(i) + "]", v.mark, v.ctx};
      inputs.push_back(read_string(ev));
    }
  }
  config.prepare.inputs = inputs;
}

// pii.custom: [{name: employee_id, regex: "EMP-[0-9]{6}"}, ...]
void set_pii_custom(TrainConfig& config, const Value& v) {
  if (!v.node.IsSequence()) v.wrong_type("a list of {name, regex} mappings");
  config.prepare.pii.custom.clear();
  for (size_t i = 0; i < v.node.size(); ++i) {
    const YAML::Node item = v.node[i];
    const std::string dotted = v.dotted + "[" + std::to_string(i) + "]";
    if (!item.IsMap() || !item["name"] || !item["regex"] || item.size() != 2)
      v.ctx.fail(dotted, item.Mark(),
                 dotted + " must be a mapping with exactly 'name' and 'regex'");
    const Value name{item["name"], dotted + ".name", item.Mark(), v.ctx};
    const Value regex{item["regex"], dotted + ".regex", item.Mark(), v.ctx};
    config.prepare.pii.custom.push_back({read_string(name), read_string(regex)});
  }
}

// true = every block, false = off, k = every k-th block.
void set_activation_checkpointing(TrainConfig& config, const Value& v) {
  if (v.node.IsScalar() && (v.node.Scalar() == "true" || v.node.Scalar() == "false")) {
    config.model_parallel.activation_checkpointing = read_bool(v) ? 1 : 0;
  } else {
    config.model_parallel.activation_checkpointing = read_integer<int>(v);
  }
}

void set_optimizer_name(TrainConfig&, const Value& v) {
  const std::string name = read_string(v);
  if (name != "adamw")
    v.fail("key '" + v.dotted + "': unknown optimizer '" + name + "' (expected adamw)");
}

void set_schedule_type(TrainConfig& config, const Value& v) {
  const std::string name = read_string(v);
  try {
    config.schedule.type = parse_lr_schedule_type(name);
  } catch (const ConfigError& e) {
    v.fail("key '" + v.dotted + "': " + strip_location(e.what()));
  }
}

const std::vector<Section>& sections() {
  using TC = TrainConfig;
  static const std::vector<Section> table = {
      {"model",
       {
           // First: loads the whole model, the keys below override single fields.
           {"hf_config", set_hf_config, nullptr},
           field("model_type", &TC::model, &ModelConfig::model_type),
           field("vocab_size", &TC::model, &ModelConfig::vocab_size),
           field("hidden_size", &TC::model, &ModelConfig::hidden_size),
           field("intermediate_size", &TC::model, &ModelConfig::intermediate_size),
           field("num_hidden_layers", &TC::model, &ModelConfig::num_hidden_layers),
           field("num_attention_heads", &TC::model, &ModelConfig::num_attention_heads),
           field("num_key_value_heads", &TC::model, &ModelConfig::num_key_value_heads),
           field("rms_norm_eps", &TC::model, &ModelConfig::rms_norm_eps),
           field("rope_theta", &TC::model, &ModelConfig::rope_theta),
           field("max_position_embeddings", &TC::model, &ModelConfig::max_position_embeddings),
           field("tie_word_embeddings", &TC::model, &ModelConfig::tie_word_embeddings),
           field("initializer_range", &TC::model, &ModelConfig::initializer_range),
           deepseek_only(field("q_lora_rank", &TC::model, &ModelConfig::q_lora_rank)),
           deepseek_only(field("kv_lora_rank", &TC::model, &ModelConfig::kv_lora_rank)),
           deepseek_only(field("qk_nope_head_dim", &TC::model, &ModelConfig::qk_nope_head_dim)),
           deepseek_only(field("qk_rope_head_dim", &TC::model, &ModelConfig::qk_rope_head_dim)),
           deepseek_only(field("v_head_dim", &TC::model, &ModelConfig::v_head_dim)),
           deepseek_only(field("rope_interleave", &TC::model, &ModelConfig::rope_interleave)),
           deepseek_only(
               field("moe_intermediate_size", &TC::model, &ModelConfig::moe_intermediate_size)),
           deepseek_only(field("n_routed_experts", &TC::model, &ModelConfig::n_routed_experts)),
           deepseek_only(field("n_shared_experts", &TC::model, &ModelConfig::n_shared_experts)),
           deepseek_only(
               field("num_experts_per_tok", &TC::model, &ModelConfig::num_experts_per_tok)),
           deepseek_only(
               field("first_k_dense_replace", &TC::model, &ModelConfig::first_k_dense_replace)),
           deepseek_only(field("n_group", &TC::model, &ModelConfig::n_group)),
           deepseek_only(field("topk_group", &TC::model, &ModelConfig::topk_group)),
           deepseek_only(field("topk_method", &TC::model, &ModelConfig::topk_method)),
           deepseek_only(field("scoring_func", &TC::model, &ModelConfig::scoring_func)),
           deepseek_only(field("norm_topk_prob", &TC::model, &ModelConfig::norm_topk_prob)),
           deepseek_only(
               field("routed_scaling_factor", &TC::model, &ModelConfig::routed_scaling_factor)),
           deepseek_only(nested("rope_scaling.rope_type", &TC::model, &ModelConfig::rope_scaling,
                                &RopeScaling::rope_type)),
           deepseek_only(nested("rope_scaling.factor", &TC::model, &ModelConfig::rope_scaling,
                                &RopeScaling::factor)),
           deepseek_only(nested("rope_scaling.original_max_position_embeddings", &TC::model,
                                &ModelConfig::rope_scaling,
                                &RopeScaling::original_max_position_embeddings)),
           deepseek_only(nested("rope_scaling.beta_fast", &TC::model, &ModelConfig::rope_scaling,
                                &RopeScaling::beta_fast)),
           deepseek_only(nested("rope_scaling.beta_slow", &TC::model, &ModelConfig::rope_scaling,
                                &RopeScaling::beta_slow)),
           deepseek_only(nested("rope_scaling.mscale", &TC::model, &ModelConfig::rope_scaling,
                                &RopeScaling::mscale)),
           deepseek_only(nested("rope_scaling.mscale_all_dim", &TC::model,
                                &ModelConfig::rope_scaling, &RopeScaling::mscale_all_dim)),
           deepseek_only(nested("rope_scaling.attention_factor", &TC::model,
                                &ModelConfig::rope_scaling, &RopeScaling::attention_factor)),
           deepseek_only(nested("rope_scaling.truncate", &TC::model, &ModelConfig::rope_scaling,
                                &RopeScaling::truncate)),
       }},
      {"parallel",
       {
           field("dp", &TC::parallel, &ParallelDims::dp),
           alias_of(field("dp_shard", &TC::parallel, &ParallelDims::dp), "dp"),
           field("dp_replicate", &TC::parallel, &ParallelDims::dp_replicate),
           field("cp", &TC::parallel, &ParallelDims::cp),
           field("tp", &TC::parallel, &ParallelDims::tp),
           field("pp", &TC::parallel, &ParallelDims::pp),
           field("ep", &TC::parallel, &ParallelDims::ep),
           field("bucket_mb", &TC::data_parallel, &DataParallelOptions::bucket_mb),
           field("zero_stage", &TC::data_parallel, &DataParallelOptions::zero_stage),
           field("micro_batches", &TC::train, &TrainOptions::grad_accum),
           field("schedule", &TC::model_parallel, &ModelParallelOptions::schedule),
           field("virtual_stages", &TC::model_parallel, &ModelParallelOptions::virtual_stages),
           {"layers_per_stage", set_layers_per_stage,
            [](const TC& c, YAML::Emitter& out) {
              out << YAML::Flow << c.model_parallel.layers_per_stage;
            }},
           {"activation_checkpointing", set_activation_checkpointing,
            [](const TC& c, YAML::Emitter& out) {
              out << c.model_parallel.activation_checkpointing;
            }},
           field("sequence_parallel", &TC::model_parallel,
                 &ModelParallelOptions::sequence_parallel),
       }},
      {"optim",
       {
           {"name", set_optimizer_name, [](const TC&, YAML::Emitter& out) { out << "adamw"; }},
           field("lr", &TC::optim, &AdamWOptions::lr),
           {"betas", set_betas, nullptr, {"beta1", "beta2"}},
           field("beta1", &TC::optim, &AdamWOptions::beta1),
           field("beta2", &TC::optim, &AdamWOptions::beta2),
           field("eps", &TC::optim, &AdamWOptions::eps),
           field("weight_decay", &TC::optim, &AdamWOptions::weight_decay),
           field("grad_clip", &TC::optim, &AdamWOptions::grad_clip),
           field("offload", &TC::optim, &AdamWOptions::offload),
           field("fused", &TC::optim, &AdamWOptions::fused),
       }},
      {"schedule",
       {
           {"type", set_schedule_type,
            [](const TC& c, YAML::Emitter& out) { out << to_string(c.schedule.type); }},
           field("warmup_steps", &TC::schedule, &ScheduleOptions::warmup_steps),
           field("min_lr", &TC::schedule, &ScheduleOptions::min_lr),
       }},
      {"data",
       {
           field("train_path", &TC::data, &DataOptions::train_path),
           field("val_path", &TC::data, &DataOptions::val_path),
           field("val_fraction", &TC::data, &DataOptions::val_fraction),
           field("seq_len", &TC::data, &DataOptions::seq_len),
           field("tokenizer", &TC::data, &DataOptions::tokenizer),
           field("eos_token", &TC::data, &DataOptions::eos_token),
           field("prepared", &TC::data, &DataOptions::prepared),
           nested("encryption.key_file", &TC::data, &DataOptions::encryption,
                  &EncryptionKeySource::key_file),
           nested("encryption.key_env", &TC::data, &DataOptions::encryption,
                  &EncryptionKeySource::key_env),
       }},
      {"train",
       {
           field("steps", &TC::train, &TrainOptions::steps),
           field("micro_batch_size", &TC::train, &TrainOptions::micro_batch_size),
           field("grad_accum", &TC::train, &TrainOptions::grad_accum),
           field("seed", &TC::train, &TrainOptions::seed),
           field("log_every", &TC::train, &TrainOptions::log_every),
           field("eval_every", &TC::train, &TrainOptions::eval_every),
           field("eval_batches", &TC::train, &TrainOptions::eval_batches),
           field("output_dir", &TC::train, &TrainOptions::output_dir),
           field("threads", &TC::train, &TrainOptions::threads),
           field("log_level", &TC::train, &TrainOptions::log_level),
           field("resume", &TC::train, &TrainOptions::resume),
           field("init_from", &TC::train, &TrainOptions::init_from),
           field("init_adapter", &TC::train, &TrainOptions::init_adapter),
           field("early_stopping.patience", &TC::train, &TrainOptions::early_stopping_patience),
           field("early_stopping.min_delta", &TC::train,
                 &TrainOptions::early_stopping_min_delta),
           field("nonfinite.policy", &TC::train, &TrainOptions::nonfinite_policy),
           field("nonfinite.max_consecutive", &TC::train, &TrainOptions::nonfinite_max_consecutive),
           field("prometheus_every", &TC::train, &TrainOptions::prometheus_every),
           field("progress", &TC::train, &TrainOptions::progress),
           field("peak_flops_per_rank", &TC::train, &TrainOptions::peak_flops_per_rank),
           field("kernels", &TC::train, &TrainOptions::kernels),
           field("device", &TC::train, &TrainOptions::device),
           field("cpu_allocator", &TC::train, &TrainOptions::cpu_allocator),
           field("cpu_allocator_cache_mb", &TC::train, &TrainOptions::cpu_allocator_cache_mb),
       }},
      {"checkpoint",
       {
           field("every_steps", &TC::checkpoint, &CheckpointOptions::every_steps),
           field("keep_last", &TC::checkpoint, &CheckpointOptions::keep_last),
           field("async", &TC::checkpoint, &CheckpointOptions::async),
           field("at_end", &TC::checkpoint, &CheckpointOptions::at_end),
           field("keep_best", &TC::checkpoint, &CheckpointOptions::keep_best),
           nested("encryption.key_file", &TC::checkpoint, &CheckpointOptions::encryption,
                  &CheckpointEncryptionOptions::key_file),
           nested("encryption.key_env", &TC::checkpoint, &CheckpointOptions::encryption,
                  &CheckpointEncryptionOptions::key_env),
           field("encrypt_exports", &TC::checkpoint, &CheckpointOptions::encrypt_exports),
       }},
      {"precision",
       {
           field("param_dtype", &TC::precision, &PrecisionOptions::param_dtype),
           field("reduce_dtype", &TC::precision, &PrecisionOptions::reduce_dtype),
           field("master_weights", &TC::precision, &PrecisionOptions::master_weights),
           nested("loss_scaler.initial_scale", &TC::precision, &PrecisionOptions::loss_scaler,
                  &LossScalerOptions::initial_scale),
           nested("loss_scaler.growth_factor", &TC::precision, &PrecisionOptions::loss_scaler,
                  &LossScalerOptions::growth_factor),
           nested("loss_scaler.backoff_factor", &TC::precision, &PrecisionOptions::loss_scaler,
                  &LossScalerOptions::backoff_factor),
           nested("loss_scaler.growth_interval", &TC::precision, &PrecisionOptions::loss_scaler,
                  &LossScalerOptions::growth_interval),
           nested("loss_scaler.min_scale", &TC::precision, &PrecisionOptions::loss_scaler,
                  &LossScalerOptions::min_scale),
           nested("loss_scaler.max_scale", &TC::precision, &PrecisionOptions::loss_scaler,
                  &LossScalerOptions::max_scale),
       }},
      {"prepare",
       {
           {"inputs", set_prepare_inputs,
            [](const TC& c, YAML::Emitter& out) { emit_texts(out, c.prepare.inputs); }},
           field("output_dir", &TC::prepare, &PrepareOptions::output_dir),
           field("tokenizer", &TC::prepare, &PrepareOptions::tokenizer),
           field("eos_token", &TC::prepare, &PrepareOptions::eos_token),
           field("seq_len", &TC::prepare, &PrepareOptions::seq_len),
           field("text_split", &TC::prepare, &PrepareOptions::text_split),
           field("text_field", &TC::prepare, &PrepareOptions::text_field),
           field("prompt_field", &TC::prepare, &PrepareOptions::prompt_field),
           field("messages_field", &TC::prepare, &PrepareOptions::messages_field),
           field("chat_template", &TC::prepare, &PrepareOptions::chat_template),
           field("response_field", &TC::prepare, &PrepareOptions::response_field),
           field("min_chars", &TC::prepare, &PrepareOptions::min_chars),
           field("exact_dedup", &TC::prepare, &PrepareOptions::exact_dedup),
           field("near_dedup", &TC::prepare, &PrepareOptions::near_dedup),
           nested("near.shingle_words", &TC::prepare, &PrepareOptions::near,
                  &NearDedupOptions::shingle_words),
           nested("near.num_permutations", &TC::prepare, &PrepareOptions::near,
                  &NearDedupOptions::num_permutations),
           nested("near.threshold", &TC::prepare, &PrepareOptions::near,
                  &NearDedupOptions::threshold),
           field("scrub_pii", &TC::prepare, &PrepareOptions::scrub_pii),
           nested("pii.emails", &TC::prepare, &PrepareOptions::pii, &PiiOptions::emails),
           nested("pii.phones", &TC::prepare, &PrepareOptions::pii, &PiiOptions::phones),
           nested("pii.ip_addresses", &TC::prepare, &PrepareOptions::pii,
                  &PiiOptions::ip_addresses),
           nested("pii.card_numbers", &TC::prepare, &PrepareOptions::pii,
                  &PiiOptions::card_numbers),
           {"pii.custom", set_pii_custom,
            [](const TC& c, YAML::Emitter& out) {
              out << YAML::BeginSeq;
              for (const CustomPiiPattern& p : c.prepare.pii.custom) {
                out << YAML::Flow << YAML::BeginMap << YAML::Key << "name" << YAML::Value;
                emit_text(out, p.name);
                out << YAML::Key << "regex" << YAML::Value;
                emit_text(out, p.regex);
                out << YAML::EndMap;
              }
              out << YAML::EndSeq;
            }},
           field("val_fraction", &TC::prepare, &PrepareOptions::val_fraction),
           field("seed", &TC::prepare, &PrepareOptions::seed),
           field("documents_per_shard", &TC::prepare, &PrepareOptions::documents_per_shard),
           field("threads", &TC::prepare, &PrepareOptions::threads),
           nested("encryption.key_file", &TC::prepare, &PrepareOptions::encryption,
                  &EncryptionKeySource::key_file),
           nested("encryption.key_env", &TC::prepare, &PrepareOptions::encryption,
                  &EncryptionKeySource::key_env),
       }},
      {"comm",
       {
           field("backend", &TC::comm, &CommOptions::backend),
           field("timeout_s", &TC::comm, &CommOptions::timeout_s),
       }},
      {"moe",
       {
           field("bias_update_rate", &TC::moe, &MoeOptions::bias_update_rate),
           field("aux_loss_alpha", &TC::moe, &MoeOptions::aux_loss_alpha),
       }},
      {"privacy",
       {
           field("max_grad_norm", &TC::privacy, &PrivacyOptions::max_grad_norm),
           field("noise_multiplier", &TC::privacy, &PrivacyOptions::noise_multiplier),
           field("target_epsilon", &TC::privacy, &PrivacyOptions::target_epsilon),
           field("delta", &TC::privacy, &PrivacyOptions::delta),
           field("accountant", &TC::privacy, &PrivacyOptions::accountant),
           field("sampling", &TC::privacy, &PrivacyOptions::sampling),
           field("noise_seed", &TC::privacy, &PrivacyOptions::noise_seed),
       }},
  };
  return table;
}

struct Entry {
  YAML::Node key;
  YAML::Node value;
};

// Checks that `node` is a mapping with scalar, unique keys from `known`; returns key -> entry.
// `prefix` is "" for the root and "section." for a section.
std::map<std::string, Entry> collect_entries(const YAML::Node& node, const std::string& prefix,
                                             const std::vector<std::string>& known,
                                             const char* what, const Context& ctx) {
  std::map<std::string, Entry> entries;
  for (auto it = node.begin(); it != node.end(); ++it) {
    const YAML::Node key = it->first;
    const std::string scope =
        prefix.empty() ? "the recipe" : "'" + prefix.substr(0, prefix.size() - 1) + "'";
    if (!key.IsScalar()) {
      ctx.fail(prefix.substr(0, prefix.empty() ? 0 : prefix.size() - 1), key.Mark(),
               "keys in " + scope + " must be plain names");
    }
    const std::string name = key.Scalar();
    const std::string dotted = prefix + name;
    bool is_known = false;
    for (const std::string& k : known) is_known = is_known || k == name;
    if (!is_known) {
      std::string list;
      for (const std::string& k : known) list += (list.empty() ? "" : ", ") + k;
      ctx.fail(dotted, key.Mark(), "unknown key '" + dotted + "' (" + what + ": " + list + ")");
    }
    if (!entries.emplace(name, Entry{key, it->second}).second) {
      ctx.fail(dotted, key.Mark(), "duplicate key '" + dotted + "'");
    }
  }
  return entries;
}

void parse_section(const Section& section, const Entry& entry, TrainConfig& config,
                   const Context& ctx) {
  const YAML::Node& node = entry.value;
  if (node.IsNull()) return;  // "model:" with every key commented out
  if (!node.IsMap()) {
    ctx.fail(section.name, entry.key.Mark(), "section '" + section.name + "' must be a mapping");
  }
  // Keys "group.name" are read from a nested mapping `group:` (one level deep).
  std::vector<std::string> known;
  std::map<std::string, std::vector<std::string>> groups;
  for (const Field& f : section.fields) {
    const auto dot = f.key.find('.');
    const std::string top = f.key.substr(0, dot);
    if (std::find(known.begin(), known.end(), top) == known.end()) known.push_back(top);
    if (dot != std::string::npos) groups[top].push_back(f.key.substr(dot + 1));
  }
  auto entries = collect_entries(node, section.name + ".", known, "known", ctx);
  for (const auto& [group, members] : groups) {
    const auto it = entries.find(group);
    if (it == entries.end()) continue;
    const Entry group_entry = it->second;
    entries.erase(it);
    if (group_entry.value.IsNull()) continue;
    const std::string dotted = section.name + "." + group;
    if (!group_entry.value.IsMap())
      ctx.fail(dotted, group_entry.key.Mark(), "'" + dotted + "' must be a mapping");
    for (auto& [name, inner] :
         collect_entries(group_entry.value, dotted + ".", members, "known", ctx))
      entries.emplace(group + "." + name, inner);
  }
  // Applied in table order, not document order (hf_config first).
  for (const Field& f : section.fields) {
    const auto it = entries.find(f.key);
    if (it == entries.end()) continue;
    const Value value{it->second.value, section.name + "." + f.key, it->second.key.Mark(), ctx};
    for (const std::string& other : f.conflicts) {
      if (entries.count(other)) {
        value.fail("key '" + value.dotted + "' cannot be combined with '" + section.name + "." +
                   other + "'");
      }
    }
    f.set(config, value);
  }
}

// `adapters:` — a list of mappings, each with a `type` and that type's keys: scalars, lists of
// scalars, and one level of nested mapping (read as "group.key"). The adapter type checks its
// keys and values itself when it is created (adapters/adapter_config.h).
std::vector<AdapterConfig> parse_adapters(const Entry& entry, const Context& ctx) {
  const YAML::Node& node = entry.value;
  std::vector<AdapterConfig> adapters;
  if (node.IsNull()) return adapters;
  if (!node.IsSequence())
    ctx.fail("adapters", entry.key.Mark(), "'adapters' must be a list of mappings with a 'type'");
  for (size_t i = 0; i < node.size(); ++i) {
    const YAML::Node item = node[i];
    const std::string dotted = "adapters[" + std::to_string(i) + "]";
    if (!item.IsMap()) ctx.fail(dotted, item.Mark(), dotted + " must be a mapping with a 'type'");
    AdapterConfig config;
    config.where = ctx.where("adapters", item.Mark()) + ": " + dotted;
    auto scalar_of = [&](const YAML::Node& value, const std::string& key) {
      if (!value.IsScalar())
        ctx.fail(dotted, value.Mark(), dotted + "." + key + " must be a single value");
      return value.Scalar();
    };
    for (auto it = item.begin(); it != item.end(); ++it) {
      if (!it->first.IsScalar()) ctx.fail(dotted, it->first.Mark(), "keys must be plain names");
      const std::string key = it->first.Scalar();
      const YAML::Node value = it->second;
      if (value.IsSequence()) {
        std::vector<std::string> list;
        for (const YAML::Node& element : value) list.push_back(scalar_of(element, key));
        config.lists[key] = list;
      } else if (value.IsMap()) {
        for (auto inner = value.begin(); inner != value.end(); ++inner) {
          // A null or collection key ("? : v", "[a]: v") would make as<std::string>() throw
          // YAML::TypedBadConversion.
          if (!inner->first.IsScalar())
            ctx.fail(dotted, inner->first.Mark(),
                     dotted + "." + key + ": keys must be plain names");
          const std::string name = key + "." + inner->first.Scalar();
          config.scalars[name] = scalar_of(inner->second, name);
        }
      } else {
        config.scalars[key] = scalar_of(value, key);
      }
    }
    auto type = config.scalars.find("type");
    if (type == config.scalars.end() || type->second.empty())
      ctx.fail(dotted, item.Mark(), dotted + ": missing 'type' (e.g. lora, prefix)");
    config.type = type->second;
    config.scalars.erase(type);
    adapters.push_back(std::move(config));
  }
  return adapters;
}

void emit_adapters(const std::vector<AdapterConfig>& adapters, YAML::Emitter& out) {
  out << YAML::Key << "adapters" << YAML::Value << YAML::BeginSeq;
  for (const AdapterConfig& config : adapters) {
    out << YAML::BeginMap << YAML::Key << "type" << YAML::Value;
    emit_text(out, config.type);
    std::string open_group;
    for (const auto& [key, value] : config.scalars) {
      const auto dot = key.find('.');
      const std::string group = dot == std::string::npos ? "" : key.substr(0, dot);
      if (group != open_group) {
        if (!open_group.empty()) out << YAML::EndMap;
        if (!group.empty()) {
          out << YAML::Key;
          emit_text(out, group);
          out << YAML::Value << YAML::BeginMap;
        }
        open_group = group;
      }
      out << YAML::Key;
      emit_text(out, group.empty() ? key : key.substr(dot + 1));
      out << YAML::Value;
      emit_text(out, value);
    }
    if (!open_group.empty()) out << YAML::EndMap;
    for (const auto& [key, list] : config.lists) {
      out << YAML::Key;
      emit_text(out, key);
      out << YAML::Value;
      emit_texts(out, list);
    }
    out << YAML::EndMap;
  }
  out << YAML::EndSeq;
}

std::vector<std::string> split_dots(const std::string& key) {
  std::vector<std::string> parts;
  size_t start = 0;
  while (true) {
    const size_t dot = key.find('.', start);
    parts.push_back(key.substr(start, dot == std::string::npos ? std::string::npos : dot - start));
    if (dot == std::string::npos) break;
    start = dot + 1;
  }
  return parts;
}

std::string trim(const std::string& text) {
  const auto begin = text.find_first_not_of(" \t");
  if (begin == std::string::npos) return "";
  const auto end = text.find_last_not_of(" \t");
  return text.substr(begin, end - begin + 1);
}

// Sets "a.b.c=value" into the document, creating missing mappings.
void apply_override(YAML::Node& root, const std::string& text, Context& ctx) {
  const auto eq = text.find('=');
  const std::string key = eq == std::string::npos ? "" : trim(text.substr(0, eq));
  const std::vector<std::string> parts = split_dots(key);
  bool well_formed = !key.empty();
  for (const std::string& part : parts) well_formed = well_formed && !part.empty();
  // Messages quote the override on one line (it may contain newlines).
  const std::string shown = one_line(text);
  if (!well_formed) DST_THROW(ConfigError, "override '" << shown << "': expected key.path=value");

  YAML::Node value;
  try {
    value = YAML::Load(text.substr(eq + 1));
  } catch (const YAML::Exception& e) {
    DST_THROW(ConfigError, "override '" << shown << "': malformed value: " << one_line(e.msg));
  }

  YAML::Node current(root);
  std::string path;
  for (size_t i = 0; i + 1 < parts.size(); ++i) {
    path += (i == 0 ? "" : ".") + parts[i];
    YAML::Node child = current[parts[i]];
    if (!child.IsDefined() || child.IsNull()) {
      child = YAML::Node(YAML::NodeType::Map);
    } else if (!child.IsMap()) {
      DST_THROW(ConfigError, "override '" << shown << "': cannot set '" << one_line(key)
                                          << "' because '" << one_line(path)
                                          << "' is not a mapping");
    }
    current.reset(child);
  }
  current[parts.back()] = value;
  ctx.overrides[key] = text;
}

TrainConfig parse_document(const std::string& yaml_text, const std::string& source_name,
                           const fs::path& base_dir, const std::vector<std::string>& overrides) {
  Context ctx{source_name, base_dir, {}};
  YAML::Node root;
  try {
    root = YAML::Load(yaml_text);
  } catch (const YAML::Exception& e) {
    const std::string where =
        e.mark.is_null() ? source_name : source_name + ":" + std::to_string(e.mark.line + 1);
    DST_THROW(ConfigError, where << ": malformed YAML: " << one_line(e.msg));
  }
  if (!root.IsDefined() || root.IsNull()) {
    root.reset(YAML::Node(YAML::NodeType::Map));
  } else if (!root.IsMap()) {
    ctx.fail("", root.Mark(), "a recipe must be a mapping of sections (model, parallel, ...)");
  }
  for (const std::string& text : overrides) apply_override(root, text, ctx);

  std::vector<std::string> known;
  for (const Section& s : sections()) known.push_back(s.name);
  known.push_back("adapters");
  const auto entries = collect_entries(root, "", known, "known sections", ctx);

  TrainConfig config;
  if (auto it = entries.find("adapters"); it != entries.end())
    config.adapters = parse_adapters(it->second, ctx);
  for (const Section& s : sections()) {
    const auto it = entries.find(s.name);
    if (it != entries.end()) parse_section(s, it->second, config, ctx);
  }
  try {
    config.validate();
  } catch (const ConfigError& e) {
    // Values quoted in the message may hold newlines (a YAML string can).
    DST_THROW(ConfigError, source_name << ": " << one_line(strip_location(e.what())));
  }
  return config;
}

}  // namespace

TrainConfig load_recipe(const std::string& path, const std::vector<std::string>& overrides) {
  std::error_code ec;
  std::ifstream in(path, std::ios::binary);
  if (!in.good() || fs::is_directory(path, ec)) {
    DST_THROW(ConfigError, path << ": cannot open recipe");
  }
  std::ostringstream text;
  text << in.rdbuf();
  if (in.bad()) DST_THROW(ConfigError, path << ": cannot open recipe");
  return parse_document(text.str(), path, fs::path(path).parent_path(), overrides);
}

TrainConfig parse_recipe(const std::string& yaml_text, const std::string& source_name,
                         const std::vector<std::string>& overrides) {
  // A relative model.hf_config resolves against source_name's directory when it names a file
  // (as load_recipe does), else against the working directory.
  return parse_document(yaml_text, source_name, fs::path(source_name).parent_path(), overrides);
}

std::string recipe_to_yaml(const TrainConfig& config) {
  YAML::Emitter out;
  out << YAML::BeginMap;
  for (const Section& section : sections()) {
    out << YAML::Key << section.name << YAML::Value << YAML::BeginMap;
    std::string open_group;  // nested mapping being written ("" = none)
    for (const Field& f : section.fields) {
      if (!f.emit || (f.emitted_if && !f.emitted_if(config))) continue;
      const auto dot = f.key.find('.');
      const std::string group = dot == std::string::npos ? "" : f.key.substr(0, dot);
      if (group != open_group) {
        if (!open_group.empty()) out << YAML::EndMap;
        if (!group.empty()) out << YAML::Key << group << YAML::Value << YAML::BeginMap;
        open_group = group;
      }
      out << YAML::Key << (group.empty() ? f.key : f.key.substr(dot + 1)) << YAML::Value;
      f.emit(config, out);
    }
    if (!open_group.empty()) out << YAML::EndMap;
    out << YAML::EndMap;
  }
  if (!config.adapters.empty()) emit_adapters(config.adapters, out);
  out << YAML::EndMap;
  DST_ASSERT(out.good(), "YAML emitter failed: " << out.GetLastError());
  return std::string(out.c_str()) + "\n";
}

}  // namespace dst
