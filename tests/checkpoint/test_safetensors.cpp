#include <algorithm>
#include <catch2/catch.hpp>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <numeric>
#include <string>
#include <vector>

#include "deepseek_train/checkpoint/safetensors.h"
#include "deepseek_train/core/error.h"
#include "support/shared_data.h"

using namespace dst;
namespace fs = std::filesystem;

namespace {

fs::path test_dir() {
  const fs::path dir = fs::temp_directory_path() / "dst_safetensors_test";
  fs::create_directories(dir);
  return dir;
}

std::string read_all(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

uint64_t le_u64(const std::string& bytes) {
  uint64_t value = 0;
  for (int i = 7; i >= 0; --i) value = (value << 8) | static_cast<unsigned char>(bytes[i]);
  return value;
}

// Writes an 8-byte little-endian length (the header's size unless given), the header and `data`.
std::string write_raw(const std::string& name, const std::string& header, std::size_t data_bytes,
                      int64_t length = -1) {
  const std::string path = (test_dir() / name).string();
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  const uint64_t n = length < 0 ? header.size() : static_cast<uint64_t>(length);
  for (int i = 0; i < 8; ++i) out.put(static_cast<char>((n >> (8 * i)) & 0xff));
  out << header << std::string(data_bytes, '\x5a');
  out.close();
  REQUIRE(out.good());
  return path;
}

// Opening `path` fails with a one-line CheckpointError naming the file and `detail`.
void expect_open_error(const std::string& path, const std::string& detail,
                       uint64_t max_header_bytes = 100ull << 20) {
  try {
    SafetensorsFile file(path, max_header_bytes);
    FAIL("expected CheckpointError for " << path);
  } catch (const CheckpointError& e) {
    const std::string message = e.what();
    INFO(message);
    CHECK(message.find(fs::path(path).filename().string()) != std::string::npos);
    CHECK(message.find(detail) != std::string::npos);
    CHECK(message.find('\n') == std::string::npos);
  }
}

std::string f32_entry(const std::string& name, int64_t numel, uint64_t begin, uint64_t end) {
  return "\"" + name + "\":{\"dtype\":\"F32\",\"shape\":[" + std::to_string(numel) +
         "],\"data_offsets\":[" + std::to_string(begin) + "," + std::to_string(end) + "]}";
}

}  // namespace

TEST_CASE("safetensors: dtype names and sizes", "[checkpoint]") {
  CHECK(element_size(SafetensorsDtype::F64) == 8);
  CHECK(element_size(SafetensorsDtype::BF16) == 2);
  CHECK(element_size(SafetensorsDtype::BOOL) == 1);
  CHECK(element_size(SafetensorsDtype::F8_E5M2) == 1);
  for (const auto dtype :
       {SafetensorsDtype::F64, SafetensorsDtype::F32, SafetensorsDtype::F16, SafetensorsDtype::BF16,
        SafetensorsDtype::I64, SafetensorsDtype::I32, SafetensorsDtype::I16, SafetensorsDtype::I8,
        SafetensorsDtype::U8, SafetensorsDtype::BOOL, SafetensorsDtype::F8_E4M3,
        SafetensorsDtype::F8_E5M2}) {
    CHECK(safetensors_dtype_from_string(to_string(dtype), "f", "t") == dtype);
  }
  CHECK(std::string(to_string(SafetensorsDtype::F8_E4M3)) == "F8_E4M3");
  CHECK_THROWS_WITH(safetensors_dtype_from_string("f32", "some.safetensors", "w"),
                    Catch::Contains("some.safetensors") && Catch::Contains("'w'"));
}

TEST_CASE("safetensors: round trip of several dtypes, shapes and metadata", "[checkpoint]") {
  const std::string path = (test_dir() / "round_trip" / "model.safetensors").string();
  fs::remove_all(test_dir() / "round_trip");
  std::vector<float> f32(6);
  std::iota(f32.begin(), f32.end(), 0.5f);
  const std::vector<uint16_t> f16 = {0x3c00, 0x4000, 0xc000, 0x7bff};
  const std::vector<uint16_t> bf16 = {0x3f80};
  const std::vector<int64_t> i64 = {-1, 2, -3, 1ll << 40};
  const std::vector<int32_t> i32 = {7, -7, 9};
  const std::vector<int16_t> i16 = {-300, 300};
  const std::vector<int8_t> i8 = {-128, 127, 0};
  const std::vector<uint8_t> boolean = {1, 0, 1};
  const std::vector<uint8_t> fp8 = {0x38, 0x40, 0xb8, 0x00};
  const std::vector<double> f64 = {3.25};
  const std::vector<SafetensorsTensorView> tensors = {
      {"model.weight", SafetensorsDtype::F32, {2, 3}, f32.data()},
      {"half", SafetensorsDtype::F16, {4}, f16.data()},
      {"scalar_bf16", SafetensorsDtype::BF16, {}, bf16.data()},
      {"empty", SafetensorsDtype::U8, {0}, nullptr},
      {"empty_2d", SafetensorsDtype::F32, {3, 0}, nullptr},
      {"ints", SafetensorsDtype::I64, {2, 2}, i64.data()},
      {"i32", SafetensorsDtype::I32, {3}, i32.data()},
      {"i16", SafetensorsDtype::I16, {1, 2}, i16.data()},
      {"i8", SafetensorsDtype::I8, {3}, i8.data()},
      {"mask", SafetensorsDtype::BOOL, {3}, boolean.data()},
      {"fp8", SafetensorsDtype::F8_E4M3, {2, 2}, fp8.data()},
      {"fp8b", SafetensorsDtype::F8_E5M2, {1}, fp8.data()},
      {"double", SafetensorsDtype::F64, {1, 1, 1}, f64.data()},
  };
  const std::map<std::string, std::string> metadata = {{"format", "pt"}, {"note", "héllo \"x\""}};
  write_safetensors(path, tensors, metadata);
  for (const auto& entry : fs::directory_iterator(fs::path(path).parent_path()))
    CHECK(entry.path().filename() == "model.safetensors");  // no temporary left behind

  const SafetensorsFile file(path);
  CHECK(file.path() == path);
  CHECK(file.metadata() == metadata);
  CHECK(file.data_start() % 8 == 0);
  REQUIRE(file.entries().size() == tensors.size());
  uint64_t offset = 0;
  for (std::size_t i = 0; i < tensors.size(); ++i) {
    // Laid out in the given order, so the begin-sorted entries follow it too.
    const SafetensorsEntry& entry = file.entries()[i];
    INFO(tensors[i].name);
    CHECK(entry.name == tensors[i].name);
    CHECK(entry.dtype == tensors[i].dtype);
    CHECK(entry.shape == tensors[i].shape);
    CHECK(entry.begin == offset);
    CHECK(entry.nbytes() == entry.numel() * element_size(entry.dtype));
    CHECK(file.find(tensors[i].name) == &entry);
    CHECK(&file.at(tensors[i].name) == &entry);
    std::vector<char> bytes(entry.nbytes());
    file.read(entry.name, bytes.data());
    if (entry.nbytes() > 0) CHECK(std::memcmp(bytes.data(), tensors[i].data, entry.nbytes()) == 0);
    offset = entry.end;
  }
  CHECK(file.at("empty").numel() == 0);
  CHECK(file.at("empty_2d").nbytes() == 0);
  CHECK(file.at("scalar_bf16").numel() == 1);
  CHECK(fs::file_size(path) == file.data_start() + offset);
  CHECK(file.find("missing") == nullptr);
  CHECK_THROWS_WITH(file.at("missing"),
                    Catch::Contains("model.safetensors") && Catch::Contains("'missing'"));
  CHECK_THROWS_AS(file.read("missing", f32.data()), CheckpointError);

  // Overwriting replaces the file atomically; an empty file (no tensors, no metadata) is valid.
  write_safetensors(path, {});
  const SafetensorsFile empty(path);
  CHECK(empty.entries().empty());
  CHECK(empty.metadata().empty());
  CHECK(fs::file_size(path) == empty.data_start());
}

TEST_CASE("safetensors: header is padded with spaces to a multiple of 8", "[checkpoint]") {
  const float value = 1.0f;
  bool saw_padding = false;
  for (int length = 1; length <= 8; ++length) {
    const std::string path = (test_dir() / "padding.safetensors").string();
    write_safetensors(path, {{std::string(length, 'w'), SafetensorsDtype::F32, {1}, &value}});
    const std::string bytes = read_all(path);
    REQUIRE(bytes.size() >= 8);
    const uint64_t n = le_u64(bytes);
    CHECK((8 + n) % 8 == 0);
    REQUIRE(bytes.size() == 8 + n + 4);
    const std::string header = bytes.substr(8, n);
    const std::size_t close = header.rfind('}');
    REQUIRE(close != std::string::npos);
    CHECK(header.front() == '{');
    CHECK(header.find_first_not_of(' ', close + 1) == std::string::npos);
    saw_padding = saw_padding || close + 1 < header.size();
    float back = 0;
    std::memcpy(&back, bytes.data() + 8 + n, 4);
    CHECK(back == value);
    CHECK(SafetensorsFile(path).data_start() == 8 + n);
  }
  CHECK(saw_padding);
}

TEST_CASE("safetensors: partial read of a span", "[checkpoint]") {
  const std::string path = (test_dir() / "partial.safetensors").string();
  std::vector<int32_t> first(5, -1);
  std::vector<int32_t> values(100);
  std::iota(values.begin(), values.end(), 1000);
  write_safetensors(path, {{"first", SafetensorsDtype::I32, {5}, first.data()},
                           {"values", SafetensorsDtype::I32, {10, 10}, values.data()}});
  const SafetensorsFile file(path);
  std::vector<int32_t> row(10, 0);
  file.read("values", row.data(), 30 * sizeof(int32_t), 40 * sizeof(int32_t));
  for (int i = 0; i < 10; ++i) CHECK(row[i] == 1030 + i);
  int32_t last = 0;
  file.read("values", &last, 99 * 4, 100 * 4);
  CHECK(last == 1099);
  file.read("values", nullptr, 8, 8);  // empty span reads nothing
  CHECK_THROWS_WITH(file.read("values", row.data(), 396, 404),
                    Catch::Contains("partial.safetensors") && Catch::Contains("'values'"));
  CHECK_THROWS_WITH(file.read("values", row.data(), 8, 4), Catch::Contains("'values'"));

  // A file truncated after it was opened reports a short read naming the tensor.
  fs::resize_file(path, file.data_start() + 20 + 50);
  CHECK_THROWS_WITH(file.read("values", row.data(), 36, 76),
                    Catch::Contains("partial.safetensors") && Catch::Contains("'values'") &&
                        Catch::Contains("short read"));
}

TEST_CASE("safetensors: writer rejects bad tensors", "[checkpoint]") {
  const std::string path = (test_dir() / "bad_write.safetensors").string();
  fs::remove(path);
  const float values[2] = {1, 2};
  CHECK_THROWS_WITH(write_safetensors(path, {{"a", SafetensorsDtype::F32, {1}, values},
                                             {"a", SafetensorsDtype::F32, {1}, values + 1}}),
                    Catch::Contains("bad_write.safetensors") && Catch::Contains("'a'"));
  CHECK_THROWS_AS(write_safetensors(path, {{"__metadata__", SafetensorsDtype::F32, {1}, values}}),
                  CheckpointError);
  CHECK_THROWS_WITH(write_safetensors(path, {{"neg", SafetensorsDtype::F32, {-1}, values}}),
                    Catch::Contains("'neg'"));
  CHECK_THROWS_WITH(write_safetensors(path, {{"null", SafetensorsDtype::F32, {2}, nullptr}}),
                    Catch::Contains("'null'"));
  CHECK_FALSE(fs::exists(path));
  CHECK_THROWS_AS(write_safetensors("/proc/no_such_dir/x.safetensors",
                                    {{"a", SafetensorsDtype::F32, {1}, values}}),
                  IoError);
}

TEST_CASE("safetensors: index round trip and model folder resolution", "[checkpoint]") {
  const fs::path dir = test_dir() / "sharded";
  fs::remove_all(dir);
  const float a = 1, b = 2, c = 3;
  write_safetensors((dir / "model-00002-of-00002.safetensors").string(),
                    {{"c", SafetensorsDtype::F32, {1}, &c}});
  write_safetensors((dir / "model-00001-of-00002.safetensors").string(),
                    {{"a", SafetensorsDtype::F32, {1}, &a}, {"b", SafetensorsDtype::F32, {1}, &b}});
  const std::map<std::string, std::string> weight_map = {{"a", "model-00001-of-00002.safetensors"},
                                                         {"b", "model-00001-of-00002.safetensors"},
                                                         {"c", "model-00002-of-00002.safetensors"}};
  const std::string index_path = (dir / "model.safetensors.index.json").string();
  write_safetensors_index(index_path, weight_map, 12);
  CHECK(read_safetensors_index(index_path) == weight_map);
  CHECK(read_all(index_path).find("\"total_size\": 12") != std::string::npos);

  const std::vector<std::string> files = safetensors_files_in(dir.string());
  REQUIRE(files.size() == 2);
  CHECK(files[0] == (dir / "model-00001-of-00002.safetensors").string());
  CHECK(files[1] == (dir / "model-00002-of-00002.safetensors").string());
  float back = 0;
  SafetensorsFile(files[1]).read("c", &back);
  CHECK(back == 3);

  // A single model.safetensors wins over the index.
  write_safetensors((dir / "model.safetensors").string(), {{"a", SafetensorsDtype::F32, {1}, &a}});
  CHECK(safetensors_files_in(dir.string()) ==
        std::vector<std::string>{(dir / "model.safetensors").string()});

  const fs::path empty = test_dir() / "empty_model";
  fs::create_directories(empty);
  CHECK_THROWS_WITH(safetensors_files_in(empty.string()), Catch::Contains("empty_model"));

  auto write_index = [&](const std::string& text) {
    std::ofstream(index_path, std::ios::trunc) << text;
    return index_path;
  };
  const auto index_name = Catch::Contains("model.safetensors.index.json");
  CHECK_THROWS_WITH(read_safetensors_index(write_index("{\"metadata\": {}}")),
                    index_name && Catch::Contains("weight_map"));
  CHECK_THROWS_WITH(read_safetensors_index(write_index("{\"weight_map\": {\"w\": 3}}")),
                    index_name && Catch::Contains("'w'"));
  CHECK_THROWS_WITH(read_safetensors_index(write_index("{\"weight_map\": {\"w\": \"../x\"}}")),
                    index_name && Catch::Contains("'w'"));
  CHECK_THROWS_WITH(
      read_safetensors_index(write_index("{\"weight_map\": {\"w\": \"a\", \"w\": \"b\"}}")),
      index_name && Catch::Contains("'w'"));
  CHECK_THROWS_WITH(read_safetensors_index(write_index("{\"weight_map\": ")),
                    index_name && Catch::Contains("offset"));
  CHECK_THROWS_WITH(read_safetensors_index((dir / "missing.index.json").string()),
                    Catch::Contains("missing.index.json"));
}

TEST_CASE("safetensors: reads the shared tiny-llama-2 checkpoint", "[checkpoint]") {
  const fs::path folder = dst::testing::shared_data("models/tiny-llama-2");
  const fs::path path = dst::testing::shared_data("models/tiny-llama-2/model.safetensors");
  const SafetensorsFile file(path.string());
  const SafetensorsEntry* embed = file.find("model.embed_tokens.weight");
  REQUIRE(embed != nullptr);
  CHECK(embed->dtype == SafetensorsDtype::F16);
  REQUIRE(embed->shape.size() == 2);
  CHECK(embed->shape[0] > 0);
  CHECK(embed->shape[1] > 0);
  CHECK(embed->nbytes() == embed->numel() * 2);
  // A partial read (row 1 at its byte offset) equals the same row of the whole tensor.
  const std::size_t columns = static_cast<std::size_t>(embed->shape[1]);
  std::vector<uint16_t> row(columns);
  file.read(embed->name, row.data(), columns * 2, columns * 4);
  std::vector<uint16_t> whole(static_cast<std::size_t>(embed->numel()));
  file.read(embed->name, whole.data());
  CHECK(std::equal(row.begin(), row.end(), whole.begin() + static_cast<std::ptrdiff_t>(columns)));
  // Every tensor is F16 with finite values, and none is all zeros (random weights, unit norms).
  uint64_t total = 0;
  for (const auto& entry : file.entries()) {
    INFO(entry.name);
    REQUIRE(entry.dtype == SafetensorsDtype::F16);
    std::vector<uint16_t> values(static_cast<std::size_t>(entry.numel()));
    file.read(entry.name, values.data());
    auto finite = [](uint16_t h) { return (h & 0x7C00) != 0x7C00; };
    auto nonzero = [](uint16_t h) { return (h & 0x7FFF) != 0; };
    CHECK(std::all_of(values.begin(), values.end(), finite));
    CHECK(std::any_of(values.begin(), values.end(), nonzero));
    total += entry.nbytes();
  }
  CHECK(file.entries().size() == 12);  // embedding, 9 in the one layer, norm, head
  CHECK(file.data_start() + total == fs::file_size(path));
  CHECK(safetensors_files_in(folder.string()) == std::vector<std::string>{path.string()});
}

TEST_CASE("safetensors malformed: file shorter than 8 bytes", "[checkpoint]") {
  const std::string path = (test_dir() / "short.safetensors").string();
  std::ofstream(path, std::ios::binary | std::ios::trunc) << "abcde";
  expect_open_error(path, "offset");
}

TEST_CASE("safetensors malformed: header length larger than the file", "[checkpoint]") {
  expect_open_error(write_raw("long_header.safetensors", "{}", 0, 1000), "offset");
}

TEST_CASE("safetensors malformed: header length over max_header_bytes", "[checkpoint]") {
  const std::string path =
      write_raw("max_header.safetensors", "{" + f32_entry("w", 1, 0, 4) + "}", 4);
  CHECK(SafetensorsFile(path).entries().size() == 1);
  expect_open_error(path, "offset", 16);
}

TEST_CASE("safetensors malformed: header is not JSON", "[checkpoint]") {
  expect_open_error(write_raw("not_json.safetensors", "{\"w\": nope}\n", 0), "offset");
  expect_open_error(write_raw("array_json.safetensors", "[1, 2]", 0), "offset");
}

TEST_CASE("safetensors malformed: unknown dtype", "[checkpoint]") {
  expect_open_error(
      write_raw("dtype.safetensors",
                R"({"weird": {"dtype": "F24", "shape": [1], "data_offsets": [0, 3]}})", 3),
      "'weird'");
}

TEST_CASE("safetensors malformed: shape times element size differs from the span", "[checkpoint]") {
  expect_open_error(
      write_raw("span.safetensors",
                R"({"w": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 12]}})", 12),
      "'w'");
}

TEST_CASE("safetensors malformed: overlapping offsets", "[checkpoint]") {
  expect_open_error(
      write_raw("overlap.safetensors",
                "{" + f32_entry("a", 2, 0, 8) + "," + f32_entry("b", 2, 4, 12) + "}", 12),
      "'b'");
}

TEST_CASE("safetensors malformed: gap between tensors", "[checkpoint]") {
  expect_open_error(
      write_raw("gap.safetensors",
                "{" + f32_entry("a", 2, 0, 8) + "," + f32_entry("b", 2, 12, 20) + "}", 20),
      "'b'");
  expect_open_error(write_raw("leading_gap.safetensors", "{" + f32_entry("a", 2, 4, 12) + "}", 12),
                    "'a'");
}

TEST_CASE("safetensors malformed: data section longer than the last offset", "[checkpoint]") {
  expect_open_error(write_raw("trailing.safetensors", "{" + f32_entry("a", 2, 0, 8) + "}", 12),
                    "offset");
}

TEST_CASE("safetensors malformed: data section shorter than the last offset (truncated)",
          "[checkpoint]") {
  expect_open_error(
      write_raw("truncated.safetensors",
                "{" + f32_entry("a", 2, 0, 8) + "," + f32_entry("b", 2, 8, 16) + "}", 12),
      "'b'");
}

TEST_CASE("safetensors malformed: duplicate tensor names", "[checkpoint]") {
  expect_open_error(
      write_raw("duplicate.safetensors",
                "{" + f32_entry("a", 2, 0, 8) + "," + f32_entry("a", 2, 8, 16) + "}", 16),
      "'a'");
  expect_open_error(
      write_raw("duplicate_key.safetensors",
                R"({"w": {"dtype": "F32", "dtype": "F32", "shape": [1], "data_offsets": [0, 4]}})",
                4),
      "'w'");
}

TEST_CASE("safetensors malformed: offsets past the end of the file", "[checkpoint]") {
  expect_open_error(
      write_raw("past_end.safetensors",
                "{" + f32_entry("a", 2, 0, 8) + "," + f32_entry("b", 249998, 8, 1000000) + "}", 16),
      "'b'");
  expect_open_error(
      write_raw("huge_offsets.safetensors",
                R"({"w": {"dtype": "U8", "shape": [7], "data_offsets": [18446744073709551608, )"
                R"(18446744073709551615]}})",
                0),
      "'w'");
}

TEST_CASE("safetensors malformed: entries of the wrong JSON types", "[checkpoint]") {
  const std::string name = "types.safetensors";
  expect_open_error(write_raw(name, R"({"w": [1, 2]})", 0), "'w'");
  expect_open_error(write_raw(name, R"({"w": {"dtype": "F32", "shape": [1]}})", 4), "'w'");
  expect_open_error(
      write_raw(name, R"({"w": {"dtype": 3, "shape": [1], "data_offsets": [0, 4]}})", 4), "'w'");
  expect_open_error(
      write_raw(name, R"({"w": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 4]}})", 4),
      "'w'");
  expect_open_error(
      write_raw(name, R"({"w": {"dtype": "F32", "shape": [1.0], "data_offsets": [0, 4]}})", 4),
      "'w'");
  expect_open_error(
      write_raw(name, R"({"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4, 8]}})", 4),
      "'w'");
  expect_open_error(
      write_raw(name, R"({"w": {"dtype": "U8", "shape": [0], "data_offsets": [4, 0]}})", 4), "'w'");
  expect_open_error(
      write_raw(name,
                R"({"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4], "extra": 1}})", 4),
      "'w'");
  expect_open_error(write_raw(name, R"({"__metadata__": {"format": 1}})", 0), "'__metadata__'");
  expect_open_error(write_raw(name, R"({"w\n": {"dtype": "F32"}})", 0), "'w\\x0a'");
}
