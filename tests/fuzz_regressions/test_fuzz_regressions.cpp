// Regressions found by fuzzing the input parsers (fuzz/, scripts/fuzz.sh): each input made a
// parser crash, overflow the stack, allocate gigabytes, hit undefined behaviour or throw
// something other than a one-line dst::Error. Also checks that the in-memory parsers agree with
// the file readers built on them. Torch-free.
#include <catch2/catch.hpp>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <map>
#include <string>
#include <vector>

#include "deepseek_train/checkpoint/checkpoint_manifest.h"
#include "deepseek_train/checkpoint/safetensors.h"
#include "deepseek_train/core/error.h"
#include "deepseek_train/data/bpe_tokenizer.h"
#include "deepseek_train/model/model_config.h"
#include "deepseek_train/recipe/recipe.h"

using namespace dst;
namespace fs = std::filesystem;

namespace {

// The message of the ErrorType that fn() throws, checked to be one line.
template <typename ErrorType>
std::string error_of(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const ErrorType& e) {
    const std::string message = e.what();
    CHECK(message.find('\n') == std::string::npos);
    return message;
  }
  FAIL("expected an exception");
  return "";
}

bool contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

std::string nested_arrays(int depth) { return std::string(depth, '[') + std::string(depth, ']'); }

// 8-byte little-endian length + header + `data`.
std::string safetensors_bytes(const std::string& header, const std::string& data = "") {
  std::string bytes;
  for (int i = 0; i < 8; ++i) bytes.push_back(static_cast<char>((header.size() >> (8 * i)) & 0xff));
  return bytes + header + data;
}

std::string read_all(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

// A small valid manifest; `tensors` and `extra` are spliced in as JSON text.
std::string manifest(const std::string& tensors, const std::string& extra = "") {
  return R"({"format": "deepseek_train-checkpoint-v1", "step": 6, "optimizer_steps": 5,
    "sampler": "s", "loss_scaler": {"scale": 2.0, "clean_steps": 1, "skipped_steps": 0},
    "layout": {"world_size": 2, "dp": 1, "tp": 2, "pp": 1, "zero_stage": 0, "virtual_stages": 1},
    "model": {"vocab_size": 300, "hidden_size": 16, "intermediate_size": 32,
              "num_hidden_layers": 1, "num_attention_heads": 2},
    "param_dtype": "float32", "recipe": "r",
    "files": {"rank-00000.h5": {"sha256": "ab", "bytes": 10},
              "rank-00001.h5": {"sha256": "cd", "bytes": 20}},
    "tensors": {)" +
         tensors + "}" + extra + "}";
}

const char* kTwoPieces = R"("w": {"shape": [4, 3], "states": {"master": {"dtype": "bfloat16",
    "pieces": [{"file": "rank-00000.h5", "dataset": "master:w", "split_dim": 0,
                "block_start": 0, "block_length": 2, "begin": 0, "end": 6},
               {"file": "rank-00001.h5", "dataset": "master:w", "split_dim": 0,
                "block_start": 2, "block_length": 2, "begin": 0, "end": 6}]}}})";

std::string piece_with(const std::string& key, const std::string& value) {
  std::map<std::string, std::string> fields = {{"file", "\"rank-00000.h5\""},
                                               {"dataset", "\"d\""},
                                               {"split_dim", "-1"},
                                               {"block_start", "0"},
                                               {"block_length", "0"},
                                               {"begin", "0"},
                                               {"end", "3"}};
  fields[key] = value;
  std::string piece;
  for (const auto& [k, v] : fields) piece += (piece.empty() ? "" : ", ") + ("\"" + k + "\": " + v);
  return R"("w": {"shape": [3], "states": {"param": {"dtype": "float32", "pieces": [{)" + piece +
         "}]}}}";
}

}  // namespace

TEST_CASE("fuzz regressions: safetensors header parser", "[fuzz_regressions]") {
  SECTION("a number too large for a double is a CheckpointError, not json::out_of_range") {
    const std::string message = error_of<CheckpointError>(
        [] { parse_safetensors_header(safetensors_bytes("{\"a\": 1e999}"), "x.safetensors"); });
    CHECK(contains(message, "x.safetensors: header is not valid JSON"));
    CHECK(contains(message, "(offset 8)"));
  }
  SECTION("deep nesting is rejected before it can overflow the stack") {
    const std::string header =
        "{\"a\":{\"dtype\":\"F32\",\"shape\":" + nested_arrays(30000) + ",\"data_offsets\":[0,0]}}";
    CHECK(contains(error_of<CheckpointError>(
                       [&] { parse_safetensors_header(safetensors_bytes(header), "x"); }),
                   "JSON nested deeper than 64 levels"));
  }
  SECTION("the file reader and the in-memory parser agree") {
    const fs::path path = fs::temp_directory_path() / "dst_fuzz_regressions.safetensors";
    const float values[3] = {1, 2, 3};
    const int8_t bytes[2] = {4, 5};
    write_safetensors(
        path.string(),
        {{"b", SafetensorsDtype::I8, {2}, bytes}, {"a", SafetensorsDtype::F32, {3}, values}},
        {{"format", "pt"}});
    const SafetensorsFile file(path.string());
    const std::string contents = read_all(path.string());
    const SafetensorsHeader header = parse_safetensors_header(contents, path.string());
    // Only the first 8 + N bytes, as the file reader reads them.
    const SafetensorsHeader prefix = parse_safetensors_header(contents.substr(0, file.data_start()),
                                                              contents.size(), path.string());
    for (const SafetensorsHeader* h : {&header, &prefix}) {
      CHECK(h->file_size == file.file_size());
      CHECK(h->data_start == file.data_start());
      CHECK(h->metadata == file.metadata());
      REQUIRE(h->entries.size() == file.entries().size());
      for (std::size_t i = 0; i < h->entries.size(); ++i) {
        CHECK(h->entries[i].name == file.entries()[i].name);
        CHECK(h->entries[i].begin == file.entries()[i].begin);
        CHECK(h->entries[i].end == file.entries()[i].end);
        CHECK(h->entries[i].shape == file.entries()[i].shape);
      }
    }
    // A prefix shorter than the header is a short read, as for a file that shrank.
    CHECK(contains(error_of<CheckpointError>([&] {
                     parse_safetensors_header(contents.substr(0, 20), contents.size(), "p");
                   }),
                   "p: short read of the header (offset 8)"));
    fs::remove(path);
  }
}

TEST_CASE("fuzz regressions: checkpoint manifest parser", "[fuzz_regressions]") {
  SECTION("a valid manifest") {
    const CheckpointManifest m = parse_checkpoint_manifest(manifest(kTwoPieces), "m.json");
    CHECK(m.info.step == 6);
    CHECK(m.info.optimizer_steps == 5);
    CHECK(m.info.loss_scale == 2.0);
    CHECK(m.info.layout.tp == 2);
    CHECK(m.info.model.vocab_size == 300);
    CHECK(m.info.recipe == "r");
    CHECK(m.info.library_version.empty());
    CHECK_FALSE(m.encryption.has_value());
    CHECK(m.files.at("rank-00001.h5").bytes == 20);
    const ManifestState& state = m.tensors.at("w").states.at("master");
    CHECK(state.dtype == "bfloat16");
    REQUIRE(state.pieces.size() == 2);
    CHECK(state.pieces[1].location.block_start == 2);
    CHECK(state.pieces[1].dataset == "master:w");
  }
  SECTION("encryption") {
    const CheckpointManifest m = parse_checkpoint_manifest(
        manifest(kTwoPieces,
                 R"(, "encryption": {"cipher": "AES-256-GCM", "key_fingerprint": "f"})"),
        "m.json");
    REQUIRE(m.encryption.has_value());
    CHECK(m.encryption->key_fingerprint == "f");
    CHECK_FALSE(parse_checkpoint_manifest(manifest(kTwoPieces, R"(, "encryption": null)"), "m")
                    .encryption.has_value());
    CHECK(contains(error_of<CheckpointError>([] {
                     parse_checkpoint_manifest(manifest(kTwoPieces, R"(, "encryption": {})"), "m");
                   }),
                   "m encryption: missing key 'key_fingerprint'"));
  }
  SECTION("errors name the source and the key") {
    const auto error = [](const std::string& text) {
      return error_of<CheckpointError>([&] { parse_checkpoint_manifest(text, "m.json"); });
    };
    CHECK(contains(error(manifest(piece_with("file", "\"rank-00007.h5\""))),
                   "m.json tensor 'w' state 'param' piece 0: piece in file 'rank-00007.h5', which "
                   "the manifest does not list"));
    CHECK(contains(error(manifest(piece_with("split_dim", "1"))), "key 'split_dim' 1"));
    CHECK(contains(error(manifest(piece_with("split_dim", "-2"))), "key 'split_dim' -2"));
    CHECK(contains(error(manifest(piece_with("begin", "4"))), "keys 'begin' 4 and 'end' 3"));
    CHECK(contains(error(manifest(piece_with("block_length", "-1"))), "'block_length' -1"));
    CHECK(contains(error(manifest(piece_with("end", "1e300"))), "key 'end' is out of range"));
    CHECK(contains(error(manifest(piece_with("end", "2.5"))), "key 'end' has the wrong type"));
    CHECK(
        contains(error(manifest(piece_with("dataset", "7"))), "key 'dataset' has the wrong type"));
    CHECK(contains(error(manifest(R"("w": {"shape": [-1], "states": {}})")), "key 'shape'"));
    CHECK(contains(error(manifest(R"("w": {"shape": [4294967296, 4294967296], "states": {}})")),
                   "product fits in int64"));
    CHECK(contains(
        error(manifest(R"("w": {"shape": [], "states": {"m": {"dtype": "f8", "pieces": []}}})")),
        "m.json tensor 'w' state 'm': unknown dtype 'f8'"));
    CHECK(
        contains(error(manifest(kTwoPieces, R"(, "files": {"../x": {"sha256": "a", "bytes": 1}})")),
                 "m.json file ../x: a data file must be a relative path"));
    CHECK(contains(error(R"({"format": 1})"), "not a deepseek_train checkpoint manifest"));
    CHECK(contains(error(manifest(kTwoPieces, R"(, "recipe": null)")),
                   "key 'recipe' has the wrong type"));
    CHECK(contains(error("{\"format\": 1e999}"), "m.json: invalid JSON"));
    CHECK(contains(error("{\"x\": " + nested_arrays(50000) + "}"), "nested deeper than 64 levels"));
    CHECK(contains(error("{\"format\": "), "m.json: invalid JSON at byte"));
  }
  SECTION("an integer model field given as a huge float is a ConfigError, not UB") {
    CHECK(contains(error_of<ConfigError>([] {
                     parse_checkpoint_manifest(
                         manifest(kTwoPieces, R"(, "model": {"vocab_size": 1e300})"), "m.json");
                   }),
                   "m.json: field 'vocab_size' is out of range"));
    CHECK(contains(error_of<ConfigError>([] {
                     model_config_from_hf_json_text("{\"hidden_size\": 1e999}", "c.json");
                   }),
                   "c.json: invalid JSON"));
  }
}

TEST_CASE("fuzz regressions: tokenizer.json loader", "[fuzz_regressions]") {
  const auto error = [](const std::string& json) {
    return error_of<DataError>([&] { BpeTokenizer::from_json_text(json, "t.json"); });
  };
  CHECK(contains(error(R"({"model": {"type": "BPE", "vocab": {"a": 1e400}, "merges": []}})"),
                 "t.json: malformed JSON"));
  // Ids size dense tables: an id of 2^31 - 2 used to allocate 64 GB.
  CHECK(contains(error(R"({"model": {"type": "BPE", "vocab": {"a": 2147483646}, "merges": []}})"),
                 "t.json: model.vocab['a'] must be a non-negative integer id below 4194304"));
  CHECK(contains(error(R"({"model": {"type": "BPE", "vocab": {}, "merges": []},
                           "added_tokens": [{"id": 4194304, "content": "x"}]})"),
                 "added_tokens[0].id must be a non-negative integer id below 4194304"));
  std::string sequence = "{\"type\": \"Digits\"}";
  for (int i = 0; i < 2000; ++i)
    sequence = "{\"type\": \"Sequence\", \"pretokenizers\": [" + sequence + "]}";
  CHECK(
      contains(error(R"({"model": {"type": "BPE", "vocab": {}, "merges": []}, "pre_tokenizer": )" +
                     sequence + "}"),
               "t.json: JSON nested deeper than 128 levels"));
}

TEST_CASE("fuzz regressions: recipes", "[fuzz_regressions]") {
  // An override with a newline: the message quotes it on one line.
  CHECK(contains(error_of<ConfigError>([] { parse_recipe("", "r.yaml", {"a\nb: 2"}); }),
                 "override 'a b: 2': expected key.path=value"));
  // A value with a newline quoted by TrainConfig::validate().
  CHECK(contains(
      error_of<ConfigError>([] { parse_recipe("comm:\n  backend: \"mpi\\nx\"\n", "r.yaml"); }),
      "r.yaml: comm.backend 'mpi x' is not one of auto, mpi, nccl, local"));
  // A null or sequence key in an adapter's nested mapping threw YAML::TypedBadConversion.
  for (const char* group : {"{a: 1, ? : two}", "{[a, b]: 1}"}) {
    CHECK(contains(error_of<ConfigError>([&] {
                     parse_recipe(
                         std::string("adapters:\n  - type: lora\n    extra: ") + group + "\n",
                         "r.yaml");
                   }),
                   "r.yaml:3: adapters[0].extra: keys must be plain names"));
  }
  // pp x virtual_stages chunks are allocated: 2e9 of them ran out of memory.
  CHECK(contains(error_of<ConfigError>([] {
                   parse_recipe(
                       "model: {num_hidden_layers: 2000000000}\n"
                       "parallel: {pp: 2, virtual_stages: 1000000000, schedule: interleaved_1f1b, "
                       "micro_batches: 2}\n",
                       "r.yaml");
                 }),
                 "2000000000 pipeline stages exceeds the limit of 65536"));
  // The sum of layers_per_stage overflowed int64 (undefined behaviour).
  CHECK(contains(error_of<ConfigError>([] {
                   parse_recipe(
                       "model: {num_hidden_layers: 4}\n"
                       "parallel: {pp: 2, layers_per_stage: [9223372036854775807, 1]}\n",
                       "r.yaml");
                 }),
                 "parallel.layers_per_stage sums past"));
  // yaml-cpp wrote a carriage return into a plain scalar as it is, and read it back as a line
  // break: "a\r" came back as "a" (recipe_to_yaml was not a fixed point), "\r" as null.
  const std::string with_returns =
      "data: {train_path: \"a\\r\", tokenizer: \"\\r\"}\n"
      "prepare:\n  inputs: [\"b\\r\", \"\\r\\n\"]\n"
      "  pii: {custom: [{name: \"n\\r\", regex: \"x\\r\"}]}\n"
      "adapters:\n  - {type: \"lora\\r\", \"k\\r\": \"v\\r\", \"g\\r\": {\"i\\r\": \"w\\r\"}, "
      "\"l\\r\": [\"\\r\"]}\n";
  const TrainConfig first = parse_recipe(with_returns, "r.yaml");
  CHECK(first.data.train_path == "a\r");
  const TrainConfig again = parse_recipe(recipe_to_yaml(first), "again.yaml");
  CHECK(again.data.train_path == "a\r");
  CHECK(again.data.tokenizer == "\r");
  CHECK(again.prepare.inputs == std::vector<std::string>{"b\r", "\r\n"});
  REQUIRE(again.prepare.pii.custom.size() == 1);
  CHECK(again.prepare.pii.custom[0].name == "n\r");
  CHECK(again.prepare.pii.custom[0].regex == "x\r");
  REQUIRE(again.adapters.size() == 1);
  CHECK(again.adapters[0].type == "lora\r");
  CHECK(again.adapters[0].scalars == first.adapters[0].scalars);
  CHECK(again.adapters[0].scalars.at("g\r.i\r") == "w\r");
  CHECK(again.adapters[0].lists == first.adapters[0].lists);
  CHECK(recipe_to_yaml(again) == recipe_to_yaml(first));
}
