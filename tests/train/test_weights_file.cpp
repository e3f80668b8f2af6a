#include <torch/torch.h>

#include <catch2/catch.hpp>
#include <filesystem>
#include <fstream>

#include "deepseek_train/checkpoint/weights_file.h"
#include "deepseek_train/core/error.h"
#include "deepseek_train/model/llama.h"

using namespace dst;

TEST_CASE("weights file: round trip into a fresh model, atomic, clear errors", "[checkpoint]") {
  const auto dir = std::filesystem::temp_directory_path() / "dst_weights_test";
  std::filesystem::remove_all(dir);
  ModelConfig c;
  c.hidden_size = 16;
  c.intermediate_size = 24;
  c.num_attention_heads = 2;
  c.num_key_value_heads = 1;
  LlamaModel a(c), b(c);
  a->initialize(1);
  b->initialize(2);
  NamedTensors pa, pb;
  for (const auto& item : a->named_parameters()) pa.emplace_back(item.key(), item.value());
  for (const auto& item : b->named_parameters()) pb.emplace_back(item.key(), item.value());
  const std::string path = (dir / "out" / "model.h5").string();
  save_weights_file(path, pa);
  for (const auto& entry : std::filesystem::directory_iterator(dir / "out"))
    CHECK(entry.path().filename() == "model.h5");  // no temporary left behind
  auto loaded = load_weights_file(path);
  CHECK(loaded.size() == pa.size());
  assign_weights(pb, loaded, path);
  for (size_t i = 0; i < pa.size(); ++i) CHECK(torch::equal(pa[i].second, pb[i].second));

  CHECK_THROWS_WITH(load_weights_file((dir / "missing.h5").string()),
                    Catch::Contains("missing.h5"));
  {
    std::ofstream junk(dir / "junk.h5");
    junk << "not hdf5";
  }
  CHECK_THROWS_AS(load_weights_file((dir / "junk.h5").string()), CheckpointError);
  loaded.erase("model.norm.weight");
  CHECK_THROWS_WITH(assign_weights(pb, loaded, path), Catch::Contains("model.norm.weight"));

  save_hf_config_json((dir / "out" / "config.json").string(), c);
  CHECK(model_config_from_hf_json((dir / "out" / "config.json").string()).hidden_size == 16);
  std::filesystem::remove_all(dir);
}
