// Tests of corpus preparation (`dstrain prepare`): PII scrubbing, cleaning, de-duplication,
// packing and loss masks, re-runs, determinism across thread counts, input errors, and reading
// the result back with PreparedDataset.
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <catch2/catch.hpp>
#include <cctype>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "deepseek_train/core/error.h"
#include "deepseek_train/core/log.h"
#include "deepseek_train/core/sha256.h"
#include "deepseek_train/data/byte_tokenizer.h"
#include "deepseek_train/data/corpus_prepare.h"
#include "deepseek_train/data/near_dedup.h"
#include "deepseek_train/data/pii_scrubber.h"
#include "deepseek_train/data/prepared_dataset.h"
#include "deepseek_train/data/tokenizer.h"
#include "support/shared_data.h"

namespace fs = std::filesystem;

namespace {

constexpr int32_t kEos = dst::ByteTokenizer::kEos;

// A fresh directory under the system temp dir, removed at scope exit.
struct TempDir {
  fs::path path;
  explicit TempDir(const std::string& tag) {
    path =
        fs::temp_directory_path() / ("dst_test_prepare_" + tag + "_" + std::to_string(::getpid()));
    fs::remove_all(path);
    fs::create_directories(path);
  }
  ~TempDir() {
    std::error_code ec;
    fs::permissions(path, fs::perms::owner_all, fs::perm_options::add, ec);
    fs::remove_all(path, ec);
  }
  std::string operator/(const std::string& name) const { return (path / name).string(); }
};

void write_text(const std::string& path, const std::string& content) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << content;
  REQUIRE(out.good());
}

std::string read_text(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

// JSON string literal of plain ASCII test text (quotes and backslashes escaped).
std::string json_string(const std::string& text) {
  std::string out = "\"";
  for (char c : text) {
    if (c == '"' || c == '\\') out.push_back('\\');
    if (c == '\n' || c == '\r') {
      out += c == '\n' ? "\\n" : "\\r";
      continue;
    }
    out.push_back(c);
  }
  return out + "\"";
}

template <typename ErrorType>
std::string error_of(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const ErrorType& e) {
    return e.what();
  }
  return "<no error thrown>";
}

dst::Logger quiet_logger() { return dst::Logger(0, 1, dst::LogLevel::kWarn); }

dst::PrepareOptions base_options(const std::vector<std::string>& inputs, const std::string& out) {
  dst::PrepareOptions o;
  o.inputs = inputs;
  o.output_dir = out;
  o.tokenizer = "byte";
  o.seq_len = 16;
  o.val_fraction = 0.0;
  o.documents_per_shard = 1000;
  o.threads = 1;
  o.progress = false;
  return o;
}

// All rows of a split, concatenated, with their masks.
void all_rows(const std::string& dir, const std::string& split, std::vector<int32_t>* tokens,
              std::vector<uint8_t>* mask) {
  dst::PreparedDataset dataset(dir, split);
  std::vector<int64_t> indices(static_cast<size_t>(dataset.size()));
  for (size_t i = 0; i < indices.size(); ++i) indices[i] = static_cast<int64_t>(i);
  dataset.read_rows(indices, tokens, mask);
}

// A shard keeps whole rows of seq_len + 1 tokens and drops the tail: the rows read back are
// exactly the stream's first rows, and there is at least one.
void check_packed_rows(const std::vector<int32_t>& tokens, const std::vector<int32_t>& stream,
                       int64_t seq_len) {
  const size_t row = static_cast<size_t>(seq_len + 1);
  REQUIRE(stream.size() >= row);
  REQUIRE(tokens.size() == stream.size() / row * row);
  CHECK(std::equal(tokens.begin(), tokens.end(), stream.begin()));
}

// The token stream of documents packed the way prepare packs a shard (byte tokenizer).
std::vector<int32_t> byte_stream(const std::vector<std::string>& docs) {
  std::vector<int32_t> stream;
  for (const std::string& d : docs) {
    for (unsigned char c : d) stream.push_back(c);
    stream.push_back(kEos);
  }
  return stream;
}

std::string numbered_words(int count, int offset) {
  std::string text;
  for (int i = 0; i < count; ++i) {
    if (i) text += " ";
    text += "w" + std::to_string((i + offset) * 7919 % 100003);
  }
  return text;
}

std::map<std::string, std::pair<fs::file_time_type, std::string>> snapshot(const fs::path& dir) {
  std::map<std::string, std::pair<fs::file_time_type, std::string>> files;
  for (const auto& entry : fs::directory_iterator(dir))
    files[entry.path().filename().string()] = {fs::last_write_time(entry.path()),
                                               read_text(entry.path().string())};
  return files;
}

}  // namespace

TEST_CASE("PII scrubber replaces and counts each kind and leaves look-alikes alone", "[data]") {
  dst::PiiOptions options;
  options.custom.push_back({"employee_id", "EMP-[0-9]{6}"});
  const dst::PiiScrubber scrubber(options);
  dst::PiiCounts counts;
  const std::string text =
      "Mail john.doe+news@example.co.uk or ADMIN@Mail.Example.org. "
      "Call (555) 123-4567, 555-123-4567, +44 20 7946 0958 or +1 (555) 123-4567. "
      "Hosts 192.168.1.20, 10.0.0.255:8080, ::1 and 2001:db8::ff00:42:8329. "
      "Cards 4111 1111 1111 1111 and 5500-0000-0000-0004. Badge EMP-123456.";
  const std::string scrubbed = scrubber.scrub(text, &counts);
  CHECK(scrubbed ==
        "Mail <EMAIL> or <EMAIL>. Call <PHONE>, <PHONE>, <PHONE> or <PHONE>. "
        "Hosts <IP_ADDRESS>, <IP_ADDRESS>:8080, <IP_ADDRESS> and <IP_ADDRESS>. "
        "Cards <CARD_NUMBER> and <CARD_NUMBER>. Badge <EMPLOYEE_ID>.");
  CHECK(counts["email"] == 2);
  CHECK(counts["phone"] == 4);
  CHECK(counts["ip_address"] == 4);
  CHECK(counts["card_number"] == 2);
  CHECK(counts["employee_id"] == 1);

  const std::string innocent =
      "In 1805 the army had 2,000,000 men; tickets cost $1,299.99; see version 1.2.3 and "
      "release 10.4.1; on 2023-01-15 at 10:30:45 pages 100-1000 of 4111 1111 1111 1112 (not a "
      "card: Luhn fails); 256.1.1.1 is no address; std::vector and a::b are code; ratio 3:1.";
  dst::PiiCounts none;
  CHECK(scrubber.scrub(innocent, &none) == innocent);
  CHECK(none.empty());

  // Disabled kinds are left alone.
  dst::PiiOptions only_email;
  only_email.phones = only_email.ip_addresses = only_email.card_numbers = false;
  CHECK(dst::PiiScrubber(only_email).scrub("a@b.com 555-123-4567") == "<EMAIL> 555-123-4567");

  // A bad custom regex names the pattern, PCRE2's message and the offset.
  dst::PiiOptions bad;
  bad.custom.push_back({"broken", "EMP-(\\d+"});
  const std::string message = error_of<dst::ConfigError>([&] { dst::PiiScrubber s(bad); });
  CHECK(message.find("'broken'") != std::string::npos);
  CHECK(message.find("offset 8") != std::string::npos);
  CHECK(message.find("parenthesis") != std::string::npos);
  CHECK(message.find('\n') == std::string::npos);
}

TEST_CASE("clean_text normalises whitespace and repairs UTF-8", "[data]") {
  CHECK(dst::clean_text("  Hello \t  world  \r\nsecond\t line \r\n\r\n  third  ") ==
        "Hello world\nsecond line\n\n third");
  CHECK(dst::clean_text("a\rb\x01"
                        "c\x7f") == "a\nbc");
  CHECK(dst::clean_text("bad \xff byte") == "bad \xEF\xBF\xBD byte");
  CHECK(dst::clean_text(" \n\t ") == "");
  // Instruction prompts keep their trailing space, responses their leading one.
  CHECK(dst::clean_text("  Q: 2+2?  A: ", true, false) == "Q: 2+2? A: ");
  CHECK(dst::clean_text(" 4  \n", false, true) == " 4");
  CHECK(dst::is_valid_utf8("caf\xC3\xA9"));
  CHECK_FALSE(dst::is_valid_utf8("\xC0\xAF"));  // overlong '/'
}

TEST_CASE("prepare scrubs PII in documents and counts it per kind", "[data]") {
  TempDir dir("pii");
  const std::string innocent =
      "In 1805 the army had 2,000,000 men; tickets cost $1,299.99; version 1.2.3; card "
      "4111 1111 1111 1112.";
  write_text(dir / "in.txt", innocent +
                                 "\n\nContact john.doe@example.com for details.\n\n"
                                 "Call +44 20 7946 0958 or (555) 123-4567 today.\n\n"
                                 "Server 192.168.1.20 and 2001:db8::ff00:42:8329 were probed.\n\n"
                                 "Pay with 4111 1111 1111 1111 please.\n\n"
                                 "The end of this small test corpus is here.\n");
  dst::PrepareOptions options = base_options({dir / "in.txt"}, dir / "out");
  options.seq_len = 7;
  const dst::PrepareReport report = dst::prepare_corpus(options, quiet_logger());
  CHECK(report.documents_read == 6);
  CHECK(report.pii.at("email") == 1);
  CHECK(report.pii.at("phone") == 2);
  CHECK(report.pii.at("ip_address") == 2);
  CHECK(report.pii.at("card_number") == 1);

  std::vector<int32_t> tokens;
  std::vector<uint8_t> mask;
  all_rows(dir / "out", "train", &tokens, &mask);
  const std::string text = dst::ByteTokenizer().decode(tokens);
  CHECK(text.find(innocent + "<|eos|>Contact <EMAIL> for details.<|eos|>Call <PHONE> or <PHONE> "
                             "today.<|eos|>Server <IP_ADDRESS> and <IP_ADDRESS> were probed."
                             "<|eos|>Pay with <CARD_NUMBER> please.<|eos|>The end") == 0);
  CHECK(text.find("example.com") == std::string::npos);
  CHECK(text.find("7946") == std::string::npos);

  const std::string manifest = read_text(dir / "out/manifest.json");
  CHECK(manifest.find("\"card_number\": 1") != std::string::npos);
}

TEST_CASE("prepare removes short documents, exact duplicates and near duplicates", "[data]") {
  TempDir dir("dedup");
  const std::string a = numbered_words(100, 0);
  // One word of 100 replaced: 5 of 96 shingles differ, Jaccard ~0.90.
  const std::string a_changed = numbered_words(70, 0) + " zzz " + numbered_words(29, 71);
  std::string a_upper = a;  // case and punctuation differ only
  for (char& c : a_upper) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  a_upper += "!";
  const std::string b = numbered_words(100, 5000);
  write_text(dir / "docs.jsonl", "{\"text\": " + json_string(a) +
                                     "}\n{\"text\": \"tiny\"}\n{\"text\": " + json_string(b) +
                                     "}\n\n{\"text\": " + json_string("  " + a + "\r\n") +
                                     "}\n{\"text\": " + json_string(a_changed) +
                                     "}\n{\"text\": " + json_string(a_upper) + "}\n");

  dst::PrepareOptions options = base_options({dir / "docs.jsonl"}, dir / "exact");
  options.min_chars = 10;
  const dst::PrepareReport exact = dst::prepare_corpus(options, quiet_logger());
  CHECK(exact.documents_read == 6);
  CHECK(exact.dropped_short == 1);
  CHECK(exact.exact_duplicates == 1);  // the copy of `a` with extra whitespace
  CHECK(exact.near_duplicates == 0);
  CHECK(exact.documents_kept == 4);

  options.output_dir = dir / "near";
  options.near_dedup = true;
  const dst::PrepareReport near = dst::prepare_corpus(options, quiet_logger());
  CHECK(near.exact_duplicates == 1);
  CHECK(near.near_duplicates == 2);
  CHECK(near.documents_kept == 2);
  std::vector<int32_t> tokens;
  std::vector<uint8_t> mask;
  all_rows(dir / "near", "train", &tokens, &mask);
  check_packed_rows(tokens, byte_stream({a, b}), options.seq_len);  // first of each group kept

  // The filter on its own.
  dst::NearDedupOptions near_options;
  dst::NearDuplicateFilter filter(near_options);
  CHECK_FALSE(filter.is_duplicate_and_insert(a));
  CHECK(filter.is_duplicate_and_insert(a_changed));
  CHECK_FALSE(filter.is_duplicate_and_insert(b));
  CHECK_FALSE(filter.is_duplicate_and_insert("..."));  // no words: never a duplicate
  CHECK(filter.size() == 2);
  const dst::MinHasher& hasher = filter.hasher();
  CHECK(dst::MinHasher::estimate_jaccard(hasher.signature(a), hasher.signature(a_changed)) > 0.8);
  CHECK(dst::MinHasher::estimate_jaccard(hasher.signature(a), hasher.signature(b)) < 0.2);
}

TEST_CASE("packing accounts for every document, contiguous and followed by EOS", "[data]") {
  TempDir dir("packing");
  std::vector<std::string> docs;
  std::string jsonl;
  for (int i = 0; i < 23; ++i) {
    docs.push_back("document " + std::to_string(i) + ": " + numbered_words(i % 7 + 1, i * 31));
    jsonl += "{\"id\": " + std::to_string(i) + ", \"text\": " + json_string(docs.back()) + "}\n";
  }
  write_text(dir / "docs.jsonl", jsonl);
  dst::PrepareOptions options = base_options({dir / "docs.jsonl"}, dir / "out");
  options.seq_len = 13;
  options.documents_per_shard = 5;  // shards pack independently
  const dst::PrepareReport report = dst::prepare_corpus(options, quiet_logger());
  REQUIRE(report.train.shards.size() == 5);
  CHECK(report.validation.shards.empty());

  std::vector<int32_t> tokens;
  std::vector<uint8_t> mask;
  all_rows(dir / "out", "train", &tokens, &mask);
  CHECK(static_cast<int64_t>(tokens.size()) == report.train.rows * 14);
  CHECK(std::all_of(mask.begin(), mask.end(), [](uint8_t m) { return m == 1; }));
  int64_t eos_in_rows = 0;
  int64_t eos_in_tails = 0;
  size_t at = 0;  // position in the concatenated rows
  for (size_t s = 0; s < report.train.shards.size(); ++s) {
    const dst::PreparedShardReport& shard = report.train.shards[s];
    const std::vector<std::string> shard_docs(
        docs.begin() + static_cast<long>(s * 5),
        docs.begin() + static_cast<long>(std::min<size_t>(docs.size(), s * 5 + 5)));
    CHECK(shard.documents == static_cast<int64_t>(shard_docs.size()));
    const std::vector<int32_t> stream = byte_stream(shard_docs);
    CHECK(shard.tokens == static_cast<int64_t>(stream.size()));
    CHECK(shard.rows == static_cast<int64_t>(stream.size()) / 14);
    CHECK(shard.dropped_tail_tokens == static_cast<int64_t>(stream.size()) % 14);
    const size_t kept = static_cast<size_t>(shard.rows * 14);
    // The shard's rows are exactly the start of its stream: every document contiguous + EOS.
    REQUIRE(at + kept <= tokens.size());
    CHECK(std::equal(stream.begin(), stream.begin() + static_cast<long>(kept),
                     tokens.begin() + static_cast<long>(at)));
    eos_in_rows += std::count(tokens.begin() + static_cast<long>(at),
                              tokens.begin() + static_cast<long>(at + kept), kEos);
    eos_in_tails += std::count(stream.begin() + static_cast<long>(kept), stream.end(), kEos);
    at += kept;
  }
  CHECK(eos_in_rows + eos_in_tails == static_cast<int64_t>(docs.size()));
  CHECK(report.dropped_tail_tokens ==
        report.tokens - report.rows * 14);  // the tails are all that is dropped
}

TEST_CASE("instruction data masks the loss on prompt tokens", "[data]") {
  TempDir dir("instruction");
  const std::vector<std::pair<std::string, std::string>> pairs = {
      {"Q: capital of France? A:", " Paris"},
      {"Translate 'chat': ", "cat"},
      {"2+2=", " 4"},
      {"Say hi. ", "hi there, friend"}};
  std::string jsonl;
  for (const auto& [prompt, response] : pairs)
    jsonl +=
        "{\"prompt\": " + json_string(prompt) + ", \"response\": " + json_string(response) + "}\n";
  jsonl += "{\"text\": \"A plain document mixed in.\"}\n";
  write_text(dir / "sft.jsonl", jsonl);
  dst::PrepareOptions options = base_options({dir / "sft.jsonl"}, dir / "out");
  options.seq_len = 9;
  const dst::PrepareReport report = dst::prepare_corpus(options, quiet_logger());
  REQUIRE(report.documents_kept == 5);

  std::vector<int32_t> stream;
  std::vector<uint8_t> target;  // expected loss mask: prompts 0, responses and EOS 1
  for (const auto& [prompt, response] : pairs) {
    for (unsigned char c : prompt) {
      stream.push_back(c);
      target.push_back(0);
    }
    for (unsigned char c : response) {
      stream.push_back(c);
      target.push_back(1);
    }
    stream.push_back(kEos);
    target.push_back(1);
  }
  for (unsigned char c : std::string("A plain document mixed in.")) stream.push_back(c);
  stream.push_back(kEos);
  target.resize(stream.size(), 1);

  std::vector<int32_t> tokens;
  std::vector<uint8_t> mask;
  all_rows(dir / "out", "train", &tokens, &mask);
  REQUIRE(tokens.size() == static_cast<size_t>(report.rows * 10));
  CHECK(std::equal(tokens.begin(), tokens.end(), stream.begin()));
  CHECK(std::equal(mask.begin(), mask.end(), target.begin()));

  // Labels: the next token, or -100 where it is a prompt token.
  dst::PreparedDataset dataset(dir / "out", "train");
  for (int64_t row = 0; row < dataset.size(); ++row) {
    const dst::TokenBatch batch = dataset.batch({row});
    for (int64_t j = 0; j < 9; ++j) {
      const size_t next = static_cast<size_t>(row * 10 + j + 1);
      CHECK(batch.input_ids[static_cast<size_t>(j)] == stream[next - 1]);
      CHECK(batch.labels[static_cast<size_t>(j)] == (target[next] ? stream[next] : -100));
    }
  }
}

TEST_CASE("chat records train on the assistant turns only", "[data]") {
  TempDir dir("chat");
  write_text(dir / "chat.jsonl",
             "{\"messages\": [{\"role\": \"system\", \"content\": \"Be brief.\"}, "
             "{\"role\": \"user\", \"content\": \"Hi?\"}, "
             "{\"role\": \"assistant\", \"content\": \"Hello.\"}, "
             "{\"role\": \"user\", \"content\": \"Bye?\"}, "
             "{\"role\": \"assistant\", \"content\": \"Bye.\"}]}\n");
  dst::PrepareOptions options = base_options({dir / "chat.jsonl"}, dir / "out");
  options.chat_template = "chatml";
  options.seq_len = 15;
  const dst::PrepareReport report = dst::prepare_corpus(options, quiet_logger());
  REQUIRE(report.documents_kept == 1);
  // The byte tokenizer: one token per byte of the rendered text; trained bytes are each
  // assistant content with its <|im_end|>, then the EOS after the record.
  const std::string text =
      "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi?<|im_end|>\n"
      "<|im_start|>assistant\nHello.<|im_end|>\n<|im_start|>user\nBye?<|im_end|>\n"
      "<|im_start|>assistant\nBye.<|im_end|>\n";
  std::vector<uint8_t> target(text.size(), 0);
  for (const std::string trained : {"Hello.<|im_end|>", "Bye.<|im_end|>"})
    std::fill_n(target.begin() + static_cast<std::ptrdiff_t>(text.find(trained)), trained.size(),
                1);
  target.push_back(1);  // EOS
  std::vector<int32_t> tokens;
  std::vector<uint8_t> mask;
  all_rows(dir / "out", "train", &tokens, &mask);
  REQUIRE(tokens.size() == static_cast<size_t>(report.rows * 16));
  CHECK(std::equal(mask.begin(), mask.end(), target.begin()));
  CHECK(std::equal(tokens.begin(), tokens.begin() + 10, text.begin()));

  // deepseek's template ends each answer with the tokenizer's EOS: no second EOS is packed.
  auto deepseek = base_options({dir / "chat.jsonl"}, dir / "deepseek");
  deepseek.chat_template = "deepseek";
  deepseek.tokenizer = dst::testing::shared_data("tokenizers/deepseek-llm/tokenizer.json").string();
  deepseek.seq_len = 8;
  const dst::PrepareReport ds = dst::prepare_corpus(deepseek, quiet_logger());
  REQUIRE(ds.rows > 0);
  std::vector<int32_t> ds_tokens;
  std::vector<uint8_t> ds_mask;
  all_rows(dir / "deepseek", "train", &ds_tokens, &ds_mask);
  const int32_t eos = 100001;  // <｜end▁of▁sentence｜>
  // One per answer (the last may fall in the dropped tail), never two in a row.
  const auto eos_count = std::count(ds_tokens.begin(), ds_tokens.end(), eos);
  CHECK(eos_count >= 1);
  CHECK(eos_count <= 2);
  CHECK(std::adjacent_find(ds_tokens.begin(), ds_tokens.end(), [eos](int32_t a, int32_t b) {
          return a == eos && b == eos;
        }) == ds_tokens.end());

  // A record with an unknown role or no template: one-line errors naming the file and line.
  write_text(dir / "role.jsonl", "{\"messages\": [{\"role\": \"robot\", \"content\": \"x\"}]}\n");
  const std::string role = error_of<dst::DataError>([&] {
    dst::prepare_corpus(
        [&] {
          auto o = base_options({dir / "role.jsonl"}, dir / "out2");
          o.chat_template = "deepseek";
          return o;
        }(),
        quiet_logger());
  });
  CHECK(role.find(dir / "role.jsonl" + ":1: messages[0].role 'robot' is not system, user or "
                                       "assistant") != std::string::npos);
  const std::string none = error_of<dst::DataError>([&] {
    dst::prepare_corpus(base_options({dir / "chat.jsonl"}, dir / "out3"), quiet_logger());
  });
  CHECK(none.find("prepare.chat_template names no template") != std::string::npos);
}

TEST_CASE("chat records rendered with a model's Jinja chat template", "[data]") {
  TempDir dir("chat_jinja");
  write_text(dir / "chat.jsonl",
             "{\"messages\": [{\"role\": \"user\", \"content\": \"Hi?\"}, "
             "{\"role\": \"assistant\", \"content\": \" Hello. \"}]}\n");
  // A model folder: tokenizer_config.json with the template (no generation blocks) and tokens.
  fs::create_directories(dir.path / "model");
  const std::string source =
      "{% for m in messages %}{% if m['role'] == 'user' %}{{ bos_token + '[INST] ' + "
      "m['content'] + ' [/INST]' }}{% else %}{{ ' ' + m['content'] | trim + ' ' + eos_token }}"
      "{% endif %}{% endfor %}";
  write_text(dir / "model/tokenizer_config.json",
             "{\"chat_template\": " + json_string(source) +
                 ", \"bos_token\": \"<s>\", \"eos_token\": {\"content\": \"</s>\"}}");
  dst::PrepareOptions options = base_options({dir / "chat.jsonl"}, dir / "out");
  options.chat_template = dir / "model/tokenizer_config.json";
  options.seq_len = 16;  // two rows of 17: the text's 33 bytes and the EOS
  options.validate();
  const dst::PrepareReport report = dst::prepare_corpus(options, quiet_logger());
  REQUIRE(report.documents_kept == 1);
  // Byte tokenizer: the answer as the template trimmed it, through the eos token, trains; then
  // the document's EOS.
  const std::string text = "<s>[INST] Hi? [/INST] Hello. </s>";
  std::vector<uint8_t> target(text.size(), 0);
  std::fill(target.begin() + static_cast<std::ptrdiff_t>(text.find("Hello.")), target.end(), 1);
  target.push_back(1);
  std::vector<int32_t> tokens;
  std::vector<uint8_t> mask;
  all_rows(dir / "out", "train", &tokens, &mask);
  REQUIRE(tokens.size() == target.size());
  CHECK(std::equal(tokens.begin(), tokens.end() - 1, text.begin()));
  CHECK(mask == target);
  // The manifest records the template file and the SHA-256 of its text.
  const std::string manifest = read_text(dir / "out/manifest.json");
  CHECK_THAT(manifest,
             Catch::Contains("tokenizer_config.json") &&
                 Catch::Contains("\"chat_template_sha256\": \"" + dst::sha256_hex(source) + "\""));
  // A changed template re-makes the shards.
  write_text(dir / "model/tokenizer_config.json",
             "{\"chat_template\": " + json_string(source + "{{ '\\n' }}") +
                 ", \"bos_token\": \"<s>\", \"eos_token\": \"</s>\"}");
  CHECK(dst::prepare_corpus(options, quiet_logger()).shards_written == 1);
  CHECK(dst::prepare_corpus(options, quiet_logger()).shards_skipped == 1);

  // One-line ConfigErrors naming the file: missing file, no chat_template, syntax error.
  auto validate_error = [&](const std::string& spec) {
    dst::PrepareOptions o = options;
    o.chat_template = spec;
    return error_of<dst::ConfigError>([&] { o.validate(); });
  };
  CHECK_THAT(validate_error(dir / "none.jinja"),
             Catch::Contains("prepare.chat_template must be chatml, deepseek, llama3 or a chat "
                             "template file") &&
                 Catch::Contains("none.jinja: no such chat template file"));
  write_text(dir / "plain.json", "{\"eos_token\": \"</s>\"}");
  CHECK_THAT(validate_error(dir / "plain.json"),
             Catch::Contains("plain.json: no \"chat_template\" in this tokenizer config"));
  write_text(dir / "bad.jinja", "{{ messages[0] }\n");
  const std::string bad = validate_error(dir / "bad.jinja");
  CHECK_THAT(bad, Catch::Contains("bad.jinja:1:16: chat template syntax error"));
  CHECK(bad.find('\n') == std::string::npos);
  // raise_exception in the template: a DataError naming the record.
  write_text(dir / "strict.jinja", "{{ raise_exception('only system turns here') }}");
  const std::string raised = error_of<dst::DataError>([&] {
    dst::PrepareOptions o = base_options({dir / "chat.jsonl"}, dir / "out_strict");
    o.chat_template = dir / "strict.jinja";
    dst::prepare_corpus(o, quiet_logger());
  });
  CHECK_THAT(raised, Catch::Contains(dir / "chat.jsonl" + ":1: the chat template") &&
                         Catch::Contains("raised an exception (line 1): only system turns here"));
}

TEST_CASE("directory inputs are read sorted; text_split file and line", "[data]") {
  TempDir dir("directories");
  fs::create_directories(dir.path / "in" / "sub");
  write_text(dir / "in/b.jsonl", "{\"text\": \"From the JSONL file.\"}\n");
  write_text(dir / "in/a.txt", "Para one,\nsecond line.\n\n\n  Para   two.  \n");
  write_text(dir / "in/c.csv", "ignored,1\n");
  write_text(dir / "in/.hidden.txt", "ignored\n");
  write_text(dir / "in/sub/d.txt", "not read: directories are not recursive\n");
  dst::PrepareOptions options = base_options({dir / "in"}, dir / "out");
  options.seq_len = 4;
  const dst::PrepareReport report = dst::prepare_corpus(options, quiet_logger());
  CHECK(report.input_files == 2);
  CHECK(report.documents_read == 3);
  std::vector<int32_t> tokens;
  std::vector<uint8_t> mask;
  all_rows(dir / "out", "train", &tokens, &mask);
  check_packed_rows(tokens,
                    byte_stream({"Para one,\nsecond line.", "Para two.", "From the JSONL file."}),
                    options.seq_len);
  const std::string manifest = read_text(dir / "out/manifest.json");
  CHECK(manifest.find("a.txt") < manifest.find("b.jsonl"));
  CHECK(manifest.find("c.csv") == std::string::npos);

  options.output_dir = dir / "file";
  options.text_split = "file";
  const dst::PrepareReport whole = dst::prepare_corpus(options, quiet_logger());
  CHECK(whole.documents_read == 2);
  all_rows(dir / "file", "train", &tokens, &mask);
  check_packed_rows(
      tokens, byte_stream({"Para one,\nsecond line.\n\n\n Para two.", "From the JSONL file."}),
      options.seq_len);

  options.output_dir = dir / "line";
  options.text_split = "line";
  CHECK(dst::prepare_corpus(options, quiet_logger()).documents_read == 4);

  fs::create_directories(dir.path / "empty");
  const std::string m = error_of<dst::DataError>(
      [&] { dst::prepare_corpus(base_options({dir / "empty"}, dir / "out2"), quiet_logger()); });
  CHECK(m.find(dir / "empty" + ": directory has no .txt or .jsonl files") != std::string::npos);
}

TEST_CASE("a second prepare run on unchanged input rewrites nothing", "[data]") {
  TempDir dir("rerun");
  std::string text;
  for (int i = 0; i < 60; ++i) text += "Paragraph " + numbered_words(8, i * 13) + ".\n\n";
  write_text(dir / "a.txt", text);
  write_text(dir / "b.txt", "Line one of b.\nLine two of b.\n");
  dst::PrepareOptions options = base_options({dir / "a.txt", dir / "b.txt"}, dir / "out");
  options.val_fraction = 0.2;
  options.documents_per_shard = 10;
  const dst::PrepareReport first = dst::prepare_corpus(options, quiet_logger());
  CHECK(first.documents_kept == 61);
  CHECK(first.validation.documents > 0);
  CHECK(first.shards_skipped == 0);
  CHECK(first.shards_written ==
        static_cast<int64_t>(first.train.shards.size() + first.validation.shards.size()));
  CHECK(first.manifest_written);

  const auto before = snapshot(dir.path / "out");
  const dst::PrepareReport second = dst::prepare_corpus(options, quiet_logger());
  CHECK(second.shards_written == 0);
  CHECK(second.shards_skipped == first.shards_written);
  CHECK_FALSE(second.manifest_written);
  CHECK(second.rows == first.rows);
  CHECK(snapshot(dir.path / "out") == before);

  // Appending a document rewrites only the shard it lands in (and the manifest).
  write_text(dir / "b.txt", "Line one of b.\nLine two of b.\n\nA new paragraph appended.\n");
  const dst::PrepareReport third = dst::prepare_corpus(options, quiet_logger());
  CHECK(third.documents_kept == 62);
  CHECK(third.shards_written == 1);
  CHECK(third.manifest_written);

  // Fewer documents: the shards past the end are removed.
  text.clear();
  for (int i = 0; i < 15; ++i) text += "Paragraph " + numbered_words(8, i * 13) + ".\n\n";
  write_text(dir / "a.txt", text);
  const dst::PrepareReport fourth = dst::prepare_corpus(options, quiet_logger());
  CHECK(fourth.documents_kept == 17);
  CHECK_FALSE(fourth.stale_files_removed.empty());
  size_t shard_files = 0;
  for (const auto& entry : fs::directory_iterator(dir.path / "out"))
    shard_files += entry.path().extension() == ".h5";
  CHECK(shard_files == fourth.train.shards.size() + fourth.validation.shards.size());
  CHECK(dst::read_prepared_manifest(dir / "out").rows("train") == fourth.train.rows);
}

TEST_CASE("prepare gives identical shards with 1 and 2 threads", "[data]") {
  TempDir dir("threads");
  std::string jsonl;
  for (int i = 0; i < 400; ++i) {
    std::string t = "Record " + std::to_string(i % 350) + " " + numbered_words(20 + i % 17, i * 50);
    if (i % 50 == 0) t += " mail me at user" + std::to_string(i) + "@example.org";
    jsonl += "{\"text\": " + json_string(t) + "}\n";
  }
  write_text(dir / "in.jsonl", jsonl);
  dst::PrepareOptions options = base_options({dir / "in.jsonl"}, dir / "one");
  options.seq_len = 64;
  options.val_fraction = 0.1;
  options.documents_per_shard = 60;
  options.near_dedup = true;
  options.threads = 1;
  const dst::PrepareReport one = dst::prepare_corpus(options, quiet_logger());
  options.output_dir = dir / "two";
  options.threads = 2;
  const dst::PrepareReport two = dst::prepare_corpus(options, quiet_logger());
  CHECK(one.pii.at("email") == 8);
  CHECK(one.pii == two.pii);
  CHECK(one.documents_kept == two.documents_kept);
  REQUIRE(one.train.shards.size() > 3);
  std::vector<std::string> names;
  for (const auto& entry : fs::directory_iterator(dir.path / "one"))
    names.push_back(entry.path().filename().string());
  CHECK(names.size() == one.train.shards.size() + one.validation.shards.size() + 1);
  for (const std::string& name : names) {
    INFO(name);
    CHECK(read_text(dir / ("one/" + name)) == read_text(dir / ("two/" + name)));
  }
}

TEST_CASE("bad inputs give one-line DataErrors naming the file and line", "[data]") {
  TempDir dir("errors");
  auto run = [&](const std::vector<std::string>& inputs) {
    return error_of<dst::DataError>(
        [&] { dst::prepare_corpus(base_options(inputs, dir / "out"), quiet_logger()); });
  };
  auto one_line = [](const std::string& m) { return m.find('\n') == std::string::npos; };

  write_text(dir / "bad.jsonl", "{\"text\": \"fine\"}\n\n{\"text\": oops}\n");
  std::string m = run({dir / "bad.jsonl"});
  CHECK(m.find(dir / "bad.jsonl" + ":3: malformed JSON") != std::string::npos);
  CHECK(one_line(m));

  write_text(dir / "nofield.jsonl", "{\"text\": \"fine\"}\n{\"body\": \"x\"}\n");
  m = run({dir / "nofield.jsonl"});
  CHECK(m.find(dir / "nofield.jsonl" + ":2: no field 'text'") != std::string::npos);
  CHECK(one_line(m));

  write_text(dir / "notstring.jsonl", "{\"text\": 42}\n");
  m = run({dir / "notstring.jsonl"});
  CHECK(m.find(dir / "notstring.jsonl" + ":1: field 'text' is not a string") != std::string::npos);

  write_text(dir / "data.csv", "a,b\n");
  m = run({dir / "data.csv"});
  CHECK(m.find(dir / "data.csv" + ": unknown input extension '.csv'") != std::string::npos);
  CHECK(one_line(m));

  m = run({dir / "missing.txt"});
  CHECK(m.find(dir / "missing.txt" + ": no such file or directory") != std::string::npos);

  // Unreadable: permissions where they apply; as root, a file whose reads fail (EIO).
  const std::string unreadable = dir / "secret.txt";
  write_text(unreadable, "secret\n");
  ::chmod(unreadable.c_str(), 0);
  if (::access(unreadable.c_str(), R_OK) == 0) {
    fs::remove(unreadable);
    fs::create_symlink("/proc/self/mem", unreadable);
  }
  m = run({unreadable});
  CHECK(m.find(unreadable + ": cannot ") != std::string::npos);
  CHECK(one_line(m));

  // Nothing of the failed runs is left behind as a manifest.
  CHECK_FALSE(fs::exists(dir.path / "out" / "manifest.json"));

  // Option errors name the key.
  dst::PrepareOptions options = base_options({dir / "bad.jsonl"}, dir / "out");
  options.seq_len = 0;
  CHECK(error_of<dst::ConfigError>([&] {
          options.validate();
        }).find("prepare.seq_len must be positive") != std::string::npos);
  options = base_options({dir / "bad.jsonl"}, dir / "out");
  options.text_split = "sentence";
  CHECK(error_of<dst::ConfigError>([&] { options.validate(); }).find("prepare.text_split") !=
        std::string::npos);
}

TEST_CASE("PreparedDataset reads back the packed rows and checks the tokenizer", "[data]") {
  TempDir dir("dataset");
  std::vector<std::string> docs;
  std::string text;
  for (int i = 0; i < 40; ++i) {
    docs.push_back("Doc " + std::to_string(i) + " " + numbered_words(i % 5 + 2, i));
    text += docs.back() + "\n";
  }
  write_text(dir / "lines.txt", text);
  dst::PrepareOptions options = base_options({dir / "lines.txt"}, dir / "out");
  options.text_split = "line";
  options.seq_len = 11;
  const dst::PrepareReport report = dst::prepare_corpus(options, quiet_logger());

  const dst::PreparedManifest manifest = dst::read_prepared_manifest(dir / "out");
  CHECK(manifest.seq_len == 11);
  CHECK(manifest.tokenizer_fingerprint == dst::ByteTokenizer().fingerprint());
  CHECK(manifest.vocab_size == dst::ByteTokenizer::kVocabSize);
  CHECK(manifest.eos_id == kEos);
  CHECK(manifest.rows("train") == report.train.rows);
  CHECK(manifest.rows("validation") == 0);

  {
    dst::PreparedDataset dataset(dir / "out", "train", dst::ByteTokenizer().fingerprint());
    REQUIRE(dataset.size() == report.train.rows);
    CHECK(dataset.seq_len() == 11);
    const std::vector<int32_t> stream = byte_stream(docs);
    const std::vector<int64_t> indices = {3, 0, 1, 2, 3, dataset.size() - 1};
    const dst::TokenBatch batch = dataset.batch(indices);
    CHECK(batch.rows == 6);
    CHECK(batch.seq_len == 11);
    for (size_t r = 0; r < indices.size(); ++r)
      for (size_t j = 0; j < 11; ++j) {
        const size_t at = static_cast<size_t>(indices[r]) * 12 + j;
        CHECK(batch.input_ids[r * 11 + j] == stream[at]);
        CHECK(batch.labels[r * 11 + j] == stream[at + 1]);
      }
    CHECK(error_of<dst::DataError>([&] { dataset.batch({dataset.size()}); }).find("out of range") !=
          std::string::npos);
  }  // closes the shard files before they are modified below

  const std::string manifest_path = dir / "out/manifest.json";
  std::string m = error_of<dst::DataError>(
      [&] { dst::PreparedDataset d(dir / "out", "train", "some-other-tokenizer"); });
  CHECK(m.find(manifest_path) != std::string::npos);
  CHECK(m.find("fingerprint") != std::string::npos);
  m = error_of<dst::DataError>([&] { dst::PreparedDataset d(dir / "out", "validation"); });
  CHECK(m.find("has no rows") != std::string::npos);

  // A corrupt shard or manifest is named.
  const std::string shard = dir / "out/train-00000.h5";
  write_text(dir / "shard.bak", read_text(shard));
  write_text(shard, "not an HDF5 file");
  m = error_of<dst::DataError>([&] { dst::PreparedDataset d(dir / "out", "train"); });
  CHECK(m.find(shard) != std::string::npos);
  fs::rename(dir / "shard.bak", shard);
  write_text(manifest_path, "{\"format\": ");
  m = error_of<dst::DataError>([&] { dst::PreparedDataset d(dir / "out", "train"); });
  CHECK(m.find(manifest_path + ": not valid JSON") != std::string::npos);
  fs::remove(manifest_path);
  m = error_of<dst::DataError>([&] { dst::read_prepared_manifest(dir / "out"); });
  CHECK(m.find(manifest_path) != std::string::npos);
}

TEST_CASE("prepare of War and Peace with the byte tokenizer", "[data]") {
  const fs::path corpus = dst::testing::shared_data("corpus/war_and_peace.jsonl");
  TempDir dir("war_and_peace");
  dst::PrepareOptions options = base_options({corpus.string()}, dir / "out");
  options.seq_len = 512;
  options.val_fraction = 0.05;
  options.documents_per_shard = 4000;
  options.threads = 0;
  const dst::PrepareReport report = dst::prepare_corpus(options, quiet_logger());
  CHECK(report.input_bytes == static_cast<int64_t>(fs::file_size(corpus)));
  CHECK(report.documents_read == 7133);  // one record per line
  CHECK(report.dropped_short == 0);
  // Repeated short records (chapter headings) are exact duplicates.
  CHECK(report.exact_duplicates > 50);
  CHECK(report.exact_duplicates < 500);
  CHECK(report.documents_kept ==
        report.documents_read - report.exact_duplicates - report.near_duplicates);
  CHECK(report.train.documents + report.validation.documents == report.documents_kept);
  const double val_share =
      static_cast<double>(report.validation.documents) / static_cast<double>(report.documents_kept);
  CHECK(val_share > 0.03);
  CHECK(val_share < 0.07);
  // Byte tokens: about one per input byte (JSON escapes and duplicates aside), plus EOS.
  CHECK(report.tokens > 1700000);
  CHECK(report.tokens < 2000000);
  CHECK(report.rows * 513 + report.dropped_tail_tokens == report.tokens);
  CHECK(report.dropped_tail_tokens <
        513 * static_cast<int64_t>(report.train.shards.size() + report.validation.shards.size()));
  CHECK(report.train.shards.size() == 2);
  dst::PreparedDataset train(dir / "out", "train", dst::ByteTokenizer().fingerprint());
  CHECK(train.size() == report.train.rows);
  const dst::TokenBatch batch = train.batch({0});
  CHECK(dst::ByteTokenizer().decode({batch.input_ids.begin(), batch.input_ids.begin() + 9}) ==
        "CHAPTER I");
}

TEST_CASE("prepare with the GPT-2 tokenizer", "[data]") {
  const fs::path tokenizer_json = dst::testing::shared_data("tokenizers/gpt2/tokenizer.json");
  const std::unique_ptr<dst::Tokenizer> tokenizer = dst::load_tokenizer(tokenizer_json.string());
  REQUIRE(tokenizer->eos_id() >= 0);
  TempDir dir("gpt2");
  const std::vector<std::string> docs = {
      "It was in July, 1805, and the speaker was the well-known Anna Pavlovna Scherer.",
      "\"Heavens! what a virulent attack!\" replied the prince, not in the least disconcerted.",
      "Prompt-free plain text, with numbers like 2,000,000 and a year 1812."};
  std::string jsonl;
  for (const std::string& d : docs) jsonl += "{\"text\": " + json_string(d) + "}\n";
  write_text(dir / "in.jsonl", jsonl);
  dst::PrepareOptions options = base_options({dir / "in.jsonl"}, dir / "out");
  options.tokenizer = tokenizer_json.string();
  options.seq_len = 8;
  const dst::PrepareReport report = dst::prepare_corpus(options, quiet_logger());
  std::vector<int32_t> expected;
  for (const std::string& d : docs) {
    const std::vector<int32_t> ids = tokenizer->encode(d);
    expected.insert(expected.end(), ids.begin(), ids.end());
    expected.push_back(tokenizer->eos_id());
  }
  CHECK(report.tokens == static_cast<int64_t>(expected.size()));
  std::vector<int32_t> tokens;
  std::vector<uint8_t> mask;
  all_rows(dir / "out", "train", &tokens, &mask);
  check_packed_rows(tokens, expected, options.seq_len);
  CHECK(dst::read_prepared_manifest(dir / "out").tokenizer_fingerprint == tokenizer->fingerprint());
  CHECK(error_of<dst::DataError>([&] {
          dst::PreparedDataset d(dir / "out", "train", dst::ByteTokenizer().fingerprint());
        }).find("fingerprint") != std::string::npos);
}

TEST_CASE("an encrypted prepared corpus reads back in memory only; tamper, wrong or missing key",
          "[data]") {
  TempDir dir("encrypted");
  std::string text;
  for (int i = 0; i < 40; ++i) text += "Secret record " + numbered_words(8, i * 17) + ".\n\n";
  write_text(dir / "a.txt", text);
  write_text(dir / "key.hex", std::string(64, 'a') + "\n");
  write_text(dir / "other.hex", std::string(64, 'b') + "\n");
  dst::PrepareOptions plain = base_options({dir / "a.txt"}, dir / "plain");
  plain.val_fraction = 0.2;
  plain.documents_per_shard = 10;
  dst::PrepareOptions sealed = plain;
  sealed.output_dir = dir / "sealed";
  sealed.encryption.key_file = dir / "key.hex";
  dst::prepare_corpus(plain, quiet_logger());
  const dst::PrepareReport first = dst::prepare_corpus(sealed, quiet_logger());
  CHECK(first.shards_written > 1);
  // Nothing of the text is on the disk: every shard is an envelope, the manifest's shard list,
  // sources and counts are sealed.
  for (const auto& entry : fs::directory_iterator(dir.path / "sealed")) {
    const std::string bytes = read_text(entry.path().string());
    CHECK(bytes.find("Secret record") == std::string::npos);
    if (entry.path().extension() == ".h5") CHECK(dst::file_is_encrypted(entry.path().string()));
  }
  const std::string manifest_text = read_text(dir / "sealed/manifest.json");
  CHECK(manifest_text.find("content_hash") == std::string::npos);
  CHECK(manifest_text.find("a.txt") == std::string::npos);
  // With the key: the same rows as the plaintext corpus, from either split.
  const dst::EncryptionKey key = dst::EncryptionKey::from_file(dir / "key.hex");
  for (const std::string split : {"train", "validation"}) {
    dst::PreparedDataset expected(dir / "plain", split);
    dst::PreparedDataset actual(dir / "sealed", split, "", &key);
    REQUIRE(actual.size() == expected.size());
    std::vector<int64_t> indices(static_cast<size_t>(actual.size()));
    for (size_t i = 0; i < indices.size(); ++i) indices[i] = static_cast<int64_t>(i);
    std::vector<int32_t> tokens_a, tokens_b;
    std::vector<uint8_t> mask_a, mask_b;
    expected.read_rows(indices, &tokens_a, &mask_a);
    actual.read_rows(indices, &tokens_b, &mask_b);
    CHECK(tokens_a == tokens_b);
    CHECK(mask_a == mask_b);
  }
  // A re-run with the key rewrites nothing (the sealed manifest compares by content).
  const dst::PrepareReport second = dst::prepare_corpus(sealed, quiet_logger());
  CHECK(second.shards_written == 0);
  CHECK_FALSE(second.manifest_written);
  // Missing key, another key: one-line errors naming the manifest.
  std::string m = error_of<dst::DataError>([&] { dst::PreparedDataset(dir / "sealed", "train"); });
  CHECK_THAT(m, Catch::Contains("manifest.json: the prepared corpus is encrypted") &&
                    Catch::Contains("data.encryption.key_file"));
  const dst::EncryptionKey other = dst::EncryptionKey::from_file(dir / "other.hex");
  m = error_of<dst::DataError>([&] { dst::PreparedDataset(dir / "sealed", "train", "", &other); });
  CHECK_THAT(m, Catch::Contains("was encrypted with key " + key.fingerprint()));
  // A sealed part that is not hex: a DataError naming the manifest.
  const std::string manifest_path = dir / "sealed/manifest.json";
  const std::string good_manifest = read_text(manifest_path);
  std::string bad_manifest = good_manifest;
  bad_manifest.replace(bad_manifest.find("\"sealed\": \"") + 11, 2, "zz");
  write_text(manifest_path, bad_manifest);
  m = error_of<dst::DataError>([&] { dst::PreparedDataset(dir / "sealed", "train", "", &key); });
  CHECK_THAT(m, Catch::Contains("manifest.json: key 'sealed' is not lowercase hex"));
  write_text(manifest_path, good_manifest);
  // One changed byte in a shard: the shard fails to authenticate, named.
  const std::string shard = dir / "sealed/train-00000.h5";
  std::string bytes = read_text(shard);
  bytes[bytes.size() / 2] ^= 1;
  write_text(shard, bytes);
  m = error_of<dst::CheckpointError>(
      [&] { dst::PreparedDataset(dir / "sealed", "train", "", &key); });
  CHECK_THAT(m, Catch::Contains("train-00000.h5: authentication failed"));
  CHECK(m.find('\n') == std::string::npos);
  // A missing key file fails before anything is written.
  dst::PrepareOptions missing = sealed;
  missing.output_dir = dir / "never";
  missing.encryption.key_file = dir / "absent.hex";
  CHECK_THROWS_AS(dst::prepare_corpus(missing, quiet_logger()), dst::ConfigError);
  CHECK_FALSE(fs::exists(dir.path / "never"));
}
