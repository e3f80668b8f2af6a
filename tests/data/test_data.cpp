// Tests of the torch-free data pipeline: tokenizer, synthetic corpus, packing and sampler.
#include <unistd.h>

#include <algorithm>
#include <catch2/catch.hpp>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <set>

#include "deepseek_train/core/error.h"
#include "deepseek_train/data/byte_tokenizer.h"
#include "deepseek_train/data/distributed_sampler.h"
#include "deepseek_train/data/synthetic_corpus.h"
#include "deepseek_train/data/token_dataset.h"

namespace fs = std::filesystem;
using dst::DataError;

namespace {

// A fresh directory under the system temp dir, removed at scope exit.
struct TempDir {
  fs::path path;
  explicit TempDir(const std::string& tag) {
    path = fs::temp_directory_path() / ("dst_test_data_" + tag + "_" + std::to_string(::getpid()));
    fs::remove_all(path);
    fs::create_directories(path);
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
};

std::string message_of(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const DataError& e) {
    return e.what();
  }
  return "<no DataError thrown>";
}

}  // namespace

TEST_CASE("byte tokenizer round-trips text including UTF-8 and all bytes", "[data]") {
  dst::ByteTokenizer tok;
  CHECK(tok.vocab_size() == 259);
  CHECK(tok.eos_id() == 257);
  CHECK(tok.bos_id() == 256);
  CHECK(tok.pad_id() == 258);

  const std::string ascii = "hello, world";
  const auto ids = tok.encode(ascii);
  REQUIRE(ids.size() == ascii.size());
  CHECK(ids[0] == 'h');
  CHECK(tok.decode(ids) == ascii);

  const std::string utf8 =
      "na\xc3\xafve \xe6\x97\xa5\xe6\x9c\xac \xf0\x9f\x98\x80";  // naïve 日本 😀
  const auto utf8_ids = tok.encode(utf8);
  CHECK(utf8_ids.size() == utf8.size());
  CHECK(utf8_ids[2] == 0xc3);
  for (int32_t id : utf8_ids) CHECK((id >= 0 && id < 256));
  CHECK(tok.decode(utf8_ids) == utf8);

  std::string all;
  for (int b = 0; b < 256; ++b) all.push_back(static_cast<char>(b));
  const auto all_ids = tok.encode(all);
  REQUIRE(all_ids.size() == 256);
  for (int b = 0; b < 256; ++b) CHECK(all_ids[static_cast<size_t>(b)] == b);
  CHECK(tok.decode(all_ids) == all);

  CHECK(tok.encode("").empty());
  // Special tokens are dropped on decode when asked, written as <|name|> otherwise.
  const std::vector<int32_t> with_specials = {
      'a', dst::ByteTokenizer::kBos, 'b', dst::ByteTokenizer::kEos, dst::ByteTokenizer::kPad, 'c'};
  CHECK(tok.decode(with_specials, /*skip_special=*/true) == "abc");
  CHECK(tok.decode(with_specials) == "a<|bos|>b<|eos|><|pad|>c");
  CHECK(tok.token_to_id("<|eos|>") == dst::ByteTokenizer::kEos);
  CHECK(tok.token_to_id("x") == 'x');
  CHECK_FALSE(tok.token_to_id("xy").has_value());
}

TEST_CASE("byte tokenizer decode rejects ids outside the vocabulary", "[data]") {
  dst::ByteTokenizer tok;
  CHECK_THROWS_AS(tok.decode({'a', 259}), DataError);
  CHECK_THROWS_AS(tok.decode({-1}), DataError);
  CHECK_THROWS_AS(tok.decode({100000}), DataError);
  CHECK_THAT(message_of([&] { tok.decode({'x', 300}); }), Catch::Contains("300"));
}

TEST_CASE("synthetic corpus is deterministic, seed-dependent and line-shaped", "[data]") {
  const auto a = dst::generate_synthetic_corpus(200, 42);
  const auto b = dst::generate_synthetic_corpus(200, 42);
  const auto c = dst::generate_synthetic_corpus(200, 43);
  REQUIRE(a.size() == 200);
  CHECK(a == b);
  CHECK(a != c);
  CHECK(dst::generate_synthetic_corpus(0, 1).empty());
  // A prefix of a longer corpus with the same seed is the shorter corpus.
  const auto longer = dst::generate_synthetic_corpus(300, 42);
  CHECK(std::equal(a.begin(), a.end(), longer.begin()));

  std::set<std::string> distinct;
  size_t total = 0;
  bool has_sum = false, has_story = false;
  for (const auto& doc : a) {
    CHECK(doc.find('\n') == std::string::npos);
    CHECK(doc.find('\r') == std::string::npos);
    CHECK(doc.size() >= 60);
    CHECK(doc.size() <= 300);
    CHECK(doc.back() == '.');
    total += doc.size();
    distinct.insert(doc);
    if (doc.find(" = ") != std::string::npos) has_sum = true;
    if (doc.find("so together they have") != std::string::npos) has_story = true;
  }
  CHECK(distinct.size() == a.size());
  CHECK(has_sum);
  CHECK(has_story);
  const double mean = static_cast<double>(total) / static_cast<double>(a.size());
  CHECK(mean >= 100.0);
  CHECK(mean <= 300.0);
}

TEST_CASE("synthetic arithmetic facts are correct", "[data]") {
  // Every "x + y = z." and "x - y = z." in the corpus is true.
  int checked = 0;
  for (const auto& doc : dst::generate_synthetic_corpus(50, 7)) {
    size_t pos = 0;
    while ((pos = doc.find(" = ", pos)) != std::string::npos) {
      const size_t start = doc.rfind(". ", pos);
      const std::string lhs = doc.substr(start == std::string::npos ? 0 : start + 2,
                                         pos - (start == std::string::npos ? 0 : start + 2));
      const size_t end = doc.find('.', pos);
      const long z = std::stol(doc.substr(pos + 3, end - pos - 3));
      long x = 0, y = 0;
      char op = 0;
      REQUIRE(std::sscanf(lhs.c_str(), "%ld %c %ld", &x, &op, &y) == 3);
      CHECK(z == (op == '+' ? x + y : x - y));
      ++checked;
      pos = end;
    }
  }
  CHECK(checked > 10);
}

TEST_CASE("text corpus write/read round trip", "[data]") {
  TempDir dir("roundtrip");
  const std::string path = (dir.path / "nested" / "deeper" / "corpus.txt").string();
  const auto docs = dst::generate_synthetic_corpus(25, 3);
  dst::write_text_corpus(path, docs);
  CHECK(dst::read_text_corpus(path) == docs);
  // No temporary file is left behind.
  int files = 0;
  for (const auto& entry : fs::directory_iterator(fs::path(path).parent_path())) {
    (void)entry;
    ++files;
  }
  CHECK(files == 1);
  // Overwriting replaces the content.
  dst::write_text_corpus(path, {"one", "two"});
  CHECK(dst::read_text_corpus(path) == std::vector<std::string>{"one", "two"});
  // Documents with newlines cannot be written.
  CHECK_THROWS_AS(dst::write_text_corpus(path, {"a\nb"}), DataError);
}

TEST_CASE("read_text_corpus strips CR, skips empty lines and reports bad files", "[data]") {
  TempDir dir("read");
  const std::string path = (dir.path / "crlf.txt").string();
  {
    std::ofstream out(path, std::ios::binary);
    out << "first doc\r\n\r\n\nsecond doc\n\nthird";
  }
  CHECK(dst::read_text_corpus(path) ==
        std::vector<std::string>{"first doc", "second doc", "third"});

  const std::string missing = (dir.path / "does_not_exist.txt").string();
  CHECK_THROWS_AS(dst::read_text_corpus(missing), DataError);
  CHECK_THAT(message_of([&] { dst::read_text_corpus(missing); }), Catch::Contains(missing));

  const std::string empty = (dir.path / "empty.txt").string();
  {
    std::ofstream out(empty, std::ios::binary);
    out << "\n\r\n\n";
  }
  CHECK_THAT(message_of([&] { dst::read_text_corpus(empty); }), Catch::Contains(empty));

  CHECK_THAT(message_of([&] { dst::read_text_corpus(dir.path.string()); }),
             Catch::Contains(dir.path.string()));
}

TEST_CASE("token dataset packs documents with EOS into shifted sequences", "[data]") {
  dst::ByteTokenizer tok;
  const int64_t E = dst::ByteTokenizer::kEos;
  // Stream: a b c E d e E f g h i E  (12 tokens).
  // seq_len 4 => chunks of 5: [a b c E d] [e E f g h], tail "i E" dropped.
  // seq_len 3 => chunks of 4: [a b c E] [d e E f] [g h i E], no tail.
  const std::vector<std::string> docs = {"abc", "de", "fghi"};
  dst::TokenDataset ds(docs, tok, 4, "hand.txt");
  CHECK(ds.size() == 2);
  CHECK(ds.seq_len() == 4);
  CHECK(ds.num_tokens() == 8);

  const dst::TokenBatch b = ds.batch({0, 1});
  CHECK(b.rows == 2);
  CHECK(b.seq_len == 4);
  CHECK(b.input_ids == std::vector<int64_t>{'a', 'b', 'c', E, 'e', E, 'f', 'g'});
  CHECK(b.labels == std::vector<int64_t>{'b', 'c', E, 'd', E, 'f', 'g', 'h'});

  // Repeated and reordered indices.
  const dst::TokenBatch r = ds.batch({1, 1, 0});
  CHECK(r.rows == 3);
  CHECK(r.input_ids == std::vector<int64_t>{'e', E, 'f', 'g', 'e', E, 'f', 'g', 'a', 'b', 'c', E});
  CHECK(r.labels == std::vector<int64_t>{E, 'f', 'g', 'h', E, 'f', 'g', 'h', 'b', 'c', E, 'd'});
  CHECK(ds.batch({}).input_ids.empty());

  dst::TokenDataset exact(docs, tok, 3, "exact.txt");
  CHECK(exact.size() == 3);
  CHECK(exact.batch({2}).input_ids == std::vector<int64_t>{'g', 'h', 'i'});
  CHECK(exact.batch({2}).labels == std::vector<int64_t>{'h', 'i', E});

  CHECK_THROWS_AS(ds.batch({2}), DataError);
  CHECK_THROWS_AS(ds.batch({-1}), DataError);
}

TEST_CASE("token dataset rejects corpora too short for one sequence", "[data]") {
  dst::ByteTokenizer tok;
  // "abc" + EOS = 4 tokens < seq_len + 1 = 5.
  const std::string msg =
      message_of([&] { dst::TokenDataset ds({"abc"}, tok, 4, "tiny_corpus.txt"); });
  CHECK_THAT(msg, Catch::Contains("tiny_corpus.txt"));
  CHECK_THAT(msg, Catch::Contains("4 tokens"));
  CHECK_THAT(msg, Catch::Contains("seq_len 4"));
  CHECK_THROWS_AS(dst::TokenDataset({}, tok, 8, "empty"), DataError);
  CHECK_THROWS_AS(dst::TokenDataset({"abcdef"}, tok, 0, "zero"), DataError);
  // Exactly seq_len + 1 tokens fits.
  CHECK(dst::TokenDataset({"abcd"}, tok, 4, "fits").size() == 1);
}

TEST_CASE("split_documents moves the last ceil(fraction * n) documents to validation", "[data]") {
  std::vector<std::string> docs;
  for (int i = 0; i < 10; ++i) docs.push_back("doc" + std::to_string(i));
  std::vector<std::string> train, val;

  dst::split_documents(docs, 0.2, &train, &val);
  CHECK(train == std::vector<std::string>(docs.begin(), docs.begin() + 8));
  CHECK(val == std::vector<std::string>{"doc8", "doc9"});

  dst::split_documents(docs, 0.25, &train, &val);  // ceil(2.5) = 3
  CHECK(train.size() == 7);
  CHECK(val == std::vector<std::string>{"doc7", "doc8", "doc9"});

  dst::split_documents(docs, 0.01, &train, &val);  // at least one
  CHECK(train.size() == 9);
  CHECK(val == std::vector<std::string>{"doc9"});

  dst::split_documents(docs, 0.0, &train, &val);
  CHECK(train == docs);
  CHECK(val.empty());

  std::vector<std::string> hundred(100, "x");
  dst::split_documents(hundred, 0.07, &train, &val);  // no floating-point round-up to 8
  CHECK(val.size() == 7);
  CHECK(train.size() == 93);

  dst::split_documents({"only"}, 0.5, &train, &val);  // a single document stays in train
  CHECK(train == std::vector<std::string>{"only"});
  CHECK(val.empty());

  CHECK_THROWS_AS(dst::split_documents(docs, -0.1, &train, &val), DataError);
  CHECK_THROWS_AS(dst::split_documents(docs, 1.0, &train, &val), DataError);
}

TEST_CASE("sampler ranks' micro-batches partition the global batch in row order", "[data]") {
  const int64_t n = 103;
  for (int dp : {1, 2, 4}) {
    for (int64_t ga : {1, 2}) {
      for (int64_t mbs : {1, 3}) {
        CAPTURE(dp, ga, mbs);
        std::vector<dst::DistributedSampler> ranks;
        for (int r = 0; r < dp; ++r) ranks.emplace_back(n, 1234, r, dp, mbs, ga);
        const int64_t global = dp * ga * mbs;
        REQUIRE(ranks[0].global_batch_size() == global);
        for (int step = 0; step < 40; ++step) {  // crosses several epoch boundaries
          const std::vector<int64_t> expected = ranks[0].peek_global_batch();
          REQUIRE(static_cast<int64_t>(expected.size()) == global);
          std::vector<int64_t> assembled(static_cast<size_t>(global), -1);
          std::set<int64_t> seen;
          for (int r = 0; r < dp; ++r) {
            CHECK(ranks[static_cast<size_t>(r)].peek_global_batch() == expected);
            const auto micro = ranks[static_cast<size_t>(r)].next_step();
            REQUIRE(static_cast<int64_t>(micro.size()) == ga);
            for (int64_t k = 0; k < ga; ++k) {
              REQUIRE(static_cast<int64_t>(micro[static_cast<size_t>(k)].size()) == mbs);
              for (int64_t i = 0; i < mbs; ++i) {
                const int64_t idx = micro[static_cast<size_t>(k)][static_cast<size_t>(i)];
                CHECK((idx >= 0 && idx < n));
                CHECK(seen.insert(idx).second);  // disjoint across ranks and micro-batches
                assembled[static_cast<size_t>((k * dp + r) * mbs + i)] = idx;
              }
            }
          }
          CHECK(assembled == expected);
          for (int r = 1; r < dp; ++r)
            CHECK(ranks[static_cast<size_t>(r)].state() == ranks[0].state());
        }
      }
    }
  }
}

TEST_CASE("sampler global batch does not depend on dp size", "[data]") {
  // Same global batch size with different (dp, grad_accum, mbs) factorisations.
  dst::DistributedSampler a(50, 9, 0, 1, 4, 1), b(50, 9, 0, 2, 2, 1), c(50, 9, 1, 4, 1, 1);
  for (int step = 0; step < 30; ++step) {
    const auto g = a.peek_global_batch();
    CHECK(b.peek_global_batch() == g);
    CHECK(c.peek_global_batch() == g);
    a.next_step();
    b.next_step();
    c.next_step();
  }
}

TEST_CASE("sampler is deterministic, reshuffles per epoch and rolls over", "[data]") {
  const int64_t n = 10;
  dst::DistributedSampler a(n, 77, 0, 1, 3, 1), b(n, 77, 0, 1, 3, 1), other(n, 78, 0, 1, 3, 1);
  std::vector<int64_t> epoch0, epoch1, other0;
  for (int step = 0; step < 3; ++step) {
    CHECK(a.state() == dst::SamplerState{0, 3 * step});
    const auto s = a.next_step();
    CHECK(b.next_step() == s);
    epoch0.insert(epoch0.end(), s[0].begin(), s[0].end());
    const auto o = other.next_step();
    other0.insert(other0.end(), o[0].begin(), o[0].end());
  }
  CHECK(a.state() == dst::SamplerState{0, 9});
  // 9 + 3 > 10: the remainder of one sequence is skipped and epoch 1 starts.
  for (int step = 0; step < 3; ++step) {
    const auto s = a.next_step();
    CHECK(a.state() == dst::SamplerState{1, 3 * (step + 1)});
    CHECK(b.next_step() == s);
    epoch1.insert(epoch1.end(), s[0].begin(), s[0].end());
  }
  // Each epoch visits 9 distinct sequences.
  CHECK(std::set<int64_t>(epoch0.begin(), epoch0.end()).size() == 9);
  CHECK(std::set<int64_t>(epoch1.begin(), epoch1.end()).size() == 9);
  CHECK(epoch0 != epoch1);
  CHECK(epoch0 != other0);

  // When the dataset divides evenly, a full epoch is a permutation of all indices.
  dst::DistributedSampler even(12, 5, 0, 2, 3, 1);
  dst::SamplerState before = even.state();
  std::vector<int64_t> all;
  for (int step = 0; step < 2; ++step) {
    const auto g = even.peek_global_batch();
    all.insert(all.end(), g.begin(), g.end());
    even.next_step();
  }
  CHECK(before.epoch == 0);
  CHECK(even.state() == dst::SamplerState{0, 12});
  std::sort(all.begin(), all.end());
  for (int64_t i = 0; i < 12; ++i) CHECK(all[static_cast<size_t>(i)] == i);
  // peek at the end of an epoch shows epoch 1's first batch without advancing.
  const auto next = even.peek_global_batch();
  CHECK(even.state() == dst::SamplerState{0, 12});
  dst::DistributedSampler fresh_epoch(12, 5, 0, 2, 3, 1);
  fresh_epoch.set_state({1, 0});
  CHECK(fresh_epoch.peek_global_batch() == next);
  even.next_step();
  CHECK(even.state() == dst::SamplerState{1, 6});
}

TEST_CASE("sampler state serialises and resumes the identical sequence", "[data]") {
  dst::DistributedSampler a(37, 2024, 1, 2, 2, 2);
  for (int step = 0; step < 7; ++step) a.next_step();
  const std::string saved = a.serialize();
  CHECK(saved == std::to_string(a.state().epoch) + ":" + std::to_string(a.state().offset));
  CHECK(a.state().epoch >= 1);  // 7 steps of 8 cross the 37-sequence epoch

  dst::DistributedSampler resumed(37, 2024, 1, 2, 2, 2);
  resumed.deserialize(saved);
  CHECK(resumed.state() == a.state());
  CHECK(resumed.serialize() == saved);
  for (int step = 0; step < 20; ++step) {
    CHECK(resumed.peek_global_batch() == a.peek_global_batch());
    CHECK(resumed.next_step() == a.next_step());
  }

  dst::DistributedSampler via_state(37, 2024, 1, 2, 2, 2);
  via_state.set_state(a.state());
  CHECK(via_state.next_step() == a.next_step());
}

TEST_CASE("sampler rejects malformed state and bad arguments", "[data]") {
  dst::DistributedSampler s(20, 1, 0, 1, 2, 1);
  for (const std::string bad :
       {"", ":", "1", "1:", ":2", "a:b", "1:2:3", "-1:0", "1:-2", " 1:2", "1:2 ", "1: 2", "+1:2",
        "1:2x", "0x1:2", "1:21", "99999999999999999999:0"}) {
    CAPTURE(bad);
    CHECK_THROWS_AS(s.deserialize(bad), DataError);
  }
  CHECK(s.state() == dst::SamplerState{});  // unchanged by failed deserialisation
  s.deserialize("3:20");
  CHECK(s.state() == dst::SamplerState{3, 20});
  CHECK_THROWS_AS(s.set_state({-1, 0}), DataError);

  CHECK_THROWS_AS(dst::DistributedSampler(7, 1, 0, 2, 2, 2), DataError);  // 8 > 7
  CHECK_NOTHROW(dst::DistributedSampler(8, 1, 0, 2, 2, 2));
  CHECK_THROWS_AS(dst::DistributedSampler(0, 1, 0, 1, 1, 1), DataError);
  CHECK_THROWS_AS(dst::DistributedSampler(10, 1, 2, 2, 1, 1), DataError);
  CHECK_THROWS_AS(dst::DistributedSampler(10, 1, -1, 2, 1, 1), DataError);
  CHECK_THROWS_AS(dst::DistributedSampler(10, 1, 0, 0, 1, 1), DataError);
  CHECK_THROWS_AS(dst::DistributedSampler(10, 1, 0, 1, 0, 1), DataError);
  CHECK_THROWS_AS(dst::DistributedSampler(10, 1, 0, 1, 1, 0), DataError);
  CHECK_THROWS_AS(dst::DistributedSampler(10, 1, 0, 1, -2, 1), DataError);
  CHECK_THAT(message_of([] { dst::DistributedSampler(7, 1, 0, 2, 2, 2); }), Catch::Contains("7"));
}
