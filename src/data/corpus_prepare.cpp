// Corpus preparation, streamed in chunks so memory stays bounded by a chunk, two shard buffers and
// the de-duplication indexes:
//   read records (sequential) -> parse/clean/scrub/hash (parallel, per record)
//   -> drop short/duplicates, choose the split (sequential, input order)
//   -> full shard: content hash; identical file on disk ? skip : tokenize (parallel) + pack +
//   write.
// Every decision depends on the input order only, so any thread count gives the same files.
// Inputs are read by corpus_sources.h; shards are named and written by corpus_shards.h.
#include "deepseek_train/data/corpus_prepare.h"

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <exception>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iomanip>
#include <nlohmann/json.hpp>
#include <optional>
#include <sstream>
#include <thread>
#include <unordered_set>

#include "data/corpus_shards.h"
#include "data/corpus_sources.h"
#include "deepseek_train/core/atomic_file.h"
#include "deepseek_train/core/error.h"
#include "deepseek_train/core/sha256.h"
#include "deepseek_train/data/prepared_dataset.h"
#include "deepseek_train/data/tokenizer.h"

namespace dst {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

using detail::Document;
using detail::expand_inputs;
using detail::InputKind;
using detail::is_leftover_temporary;
using detail::kShardFormat;
using detail::PackedShard;
using detail::parse_jsonl;
using detail::RawRecord;
using detail::RecordStream;
using detail::shard_file_name;
using detail::shard_index_of;
using detail::Source;
using detail::write_shard_file;

// Raw record bytes handed to the parallel cleaning stage at a time.
constexpr size_t kChunkBytes = size_t{16} << 20;

using Digest = Sha256Digest;

uint64_t load_u64(const unsigned char* p) {
  uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v |= static_cast<uint64_t>(p[i]) << (8 * i);
  return v;
}

uint64_t mix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ULL;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ULL;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBULL;
  return x ^ (x >> 31);
}

// First 128 bits of a document digest: the exact-duplicate key.
struct DocKey {
  uint64_t a = 0, b = 0;
  bool operator==(const DocKey& o) const { return a == o.a && b == o.b; }
};
struct DocKeyHash {
  size_t operator()(const DocKey& k) const { return static_cast<size_t>(k.a); }
};

// ---------------------------------------------------------------------------------------------
// Threads
// ---------------------------------------------------------------------------------------------

// Calls fn(i, worker) for every i in [0, n) on up to `threads` threads, handing out blocks of
// `grain` indices; worker < threads. The first exception (by worker) is rethrown after all
// threads have stopped.
void parallel_for(size_t n, int threads, size_t grain, const std::function<void(size_t, int)>& fn) {
  const size_t blocks = (n + grain - 1) / grain;
  const int workers = static_cast<int>(std::min<size_t>(static_cast<size_t>(threads), blocks));
  if (workers <= 1) {
    for (size_t i = 0; i < n; ++i) fn(i, 0);
    return;
  }
  std::atomic<size_t> next{0};
  std::vector<std::exception_ptr> errors(static_cast<size_t>(workers));
  auto run = [&](int worker) {
    try {
      for (;;) {
        const size_t begin = next.fetch_add(grain);
        if (begin >= n) break;
        const size_t end = std::min(n, begin + grain);
        for (size_t i = begin; i < end; ++i) fn(i, worker);
      }
    } catch (...) {
      errors[static_cast<size_t>(worker)] = std::current_exception();
      next.store(n);
    }
  };
  std::vector<std::thread> pool;
  for (int w = 1; w < workers; ++w) pool.emplace_back(run, w);
  run(0);
  for (std::thread& t : pool) t.join();
  for (const std::exception_ptr& e : errors)
    if (e) std::rethrow_exception(e);
}

// ---------------------------------------------------------------------------------------------
// Documents
// ---------------------------------------------------------------------------------------------

struct CleanRecord {
  std::exception_ptr error;
  bool too_short = false;
  Document doc;
  Digest hash{};
  PiiCounts pii;
  MinHashSignature signature;
};

int64_t count_code_points(const std::string& text) {
  int64_t n = 0;
  for (unsigned char c : text) n += (c & 0xC0) != 0x80;
  return n;
}

// ---------------------------------------------------------------------------------------------
// Progress
// ---------------------------------------------------------------------------------------------

double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

// A one-line progress bar on stderr, drawn only when stderr is a terminal.
class ProgressBar {
 public:
  ProgressBar(bool wanted, int64_t total_bytes)
      : enabled_(wanted && ::isatty(STDERR_FILENO) == 1),
        total_bytes_(total_bytes),
        start_(std::chrono::steady_clock::now()) {}
  ~ProgressBar() { finish(); }

  void update(int64_t documents, int64_t shards, int64_t bytes, bool force = false) {
    if (!enabled_) return;
    const auto now = std::chrono::steady_clock::now();
    if (!force && drawn_ && now - last_ < std::chrono::milliseconds(200)) return;
    last_ = now;
    drawn_ = true;
    const double seconds = std::max(seconds_since(start_), 1e-9);
    const double fraction =
        total_bytes_ > 0 ? std::min(1.0, static_cast<double>(bytes) / total_bytes_) : 1.0;
    constexpr int kWidth = 24;
    const int filled = static_cast<int>(fraction * kWidth);
    std::string bar(static_cast<size_t>(filled), '#');
    bar.resize(kWidth, '.');
    std::fprintf(stderr, "\rprepare [%s] %3.0f%%  %lld documents  %lld shards  %.1f MB/s   ",
                 bar.c_str(), fraction * 100.0, static_cast<long long>(documents),
                 static_cast<long long>(shards), static_cast<double>(bytes) / 1e6 / seconds);
    std::fflush(stderr);
  }
  void finish() {
    if (enabled_ && drawn_) std::fputc('\n', stderr);
    drawn_ = false;
    enabled_ = false;
  }

 private:
  bool enabled_;
  int64_t total_bytes_;
  std::chrono::steady_clock::time_point start_;
  std::chrono::steady_clock::time_point last_;
  bool drawn_ = false;
};

std::string megabytes(int64_t bytes) {
  std::ostringstream out;
  out << std::fixed << std::setprecision(1) << static_cast<double>(bytes) / 1e6 << " MB";
  return out.str();
}

// ---------------------------------------------------------------------------------------------
// The pipeline
// ---------------------------------------------------------------------------------------------

struct SplitState {
  std::string name;
  int64_t next_index = 0;
  std::vector<Document> docs;
  std::vector<Digest> hashes;
  PrepareSplitReport* report = nullptr;
};

class Pipeline {
 public:
  Pipeline(const PrepareOptions& options, const Logger& logger)
      : options_(options),
        key_(load_encryption_key(options.encryption)),
        logger_(logger),
        threads_(options.threads > 0
                     ? options.threads
                     : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()))),
        tokenizer_(load_tokenizer(options.tokenizer, options.eos_token)),
        chat_template_(
            options.chat_template.empty()
                ? std::nullopt
                : std::optional<ChatTemplate>(ChatTemplate::load(options.chat_template))),
        scrubber_(options.scrub_pii ? options.pii : PiiOptions{false, false, false, false, {}}),
        output_dir_(options.output_dir) {
    DST_CHECK(tokenizer_->eos_id() >= 0, DataError,
              "prepare: tokenizer " << tokenizer_->describe()
                                    << " has no end-of-document token (set prepare.eos_token)");
    if (options.near_dedup) near_ = std::make_unique<NearDuplicateFilter>(options.near);
    for (int i = 0; i < threads_; ++i) hashers_.push_back(std::make_unique<Sha256>());
    train_.name = "train";
    train_.report = &report_.train;
    validation_.name = "validation";
    validation_.report = &report_.validation;
    report_.output_dir = output_dir_.string();
    report_.manifest_path = (output_dir_ / kPreparedManifestName).string();
    for (const std::string& kind : scrubber_.kinds()) report_.pii[kind] = 0;
  }

  // `start`: when prepare_corpus was called (the report's time includes loading the tokenizer).
  PrepareReport run(std::chrono::steady_clock::time_point start) {
    sources_ = expand_inputs(options_.inputs);
    int64_t total_bytes = 0;
    for (const Source& s : sources_) {
      std::error_code ec;
      const auto size = fs::file_size(s.path, ec);
      if (!ec) total_bytes += static_cast<int64_t>(size);
    }
    std::error_code ec;
    fs::create_directories(output_dir_, ec);
    DST_CHECK(!ec && fs::is_directory(output_dir_), IoError,
              output_dir_.string() << ": cannot create the output directory"
                                   << (ec ? ": " + ec.message() : std::string()));
    logger_.info("prepare: " + std::to_string(sources_.size()) + " input file(s), " +
                 megabytes(total_bytes) + ", tokenizer " + tokenizer_->describe() + ", " +
                 std::to_string(threads_) + " thread(s) -> " + output_dir_.string());
    progress_ = std::make_unique<ProgressBar>(options_.progress, total_bytes);

    RecordStream stream(sources_, options_.text_split);
    std::vector<RawRecord> chunk;
    while (!stream.finished()) {
      chunk.clear();
      stream.fill(chunk, kChunkBytes);
      process_chunk(chunk);
      bytes_done_ = stream.bytes_read();  // input bytes whose documents are processed
      progress_->update(report_.documents_read, shards_done(), bytes_done_);
    }
    for (SplitState* split : {&train_, &validation_})
      if (!split->docs.empty()) finish_shard(*split);
    progress_->update(report_.documents_read, shards_done(), bytes_done_, true);
    progress_->finish();

    report_.input_files = static_cast<int64_t>(sources_.size());
    for (const Source& s : sources_) report_.input_bytes += s.bytes;
    for (const PrepareSplitReport* split : {&report_.train, &report_.validation}) {
      report_.tokens += split->tokens;
      report_.dropped_tail_tokens += split->dropped_tail_tokens;
      report_.rows += split->rows;
    }
    log_cleaning();
    DST_CHECK(report_.documents_kept > 0, DataError,
              "prepare: no documents left after cleaning ("
                  << report_.documents_read << " read, " << report_.dropped_short
                  << " shorter than prepare.min_chars " << options_.min_chars << ")");
    DST_CHECK(report_.train.rows > 0, DataError,
              "prepare: the training split has no rows: its "
                  << report_.train.tokens << " tokens cannot fill one row of prepare.seq_len "
                  << options_.seq_len << " + 1 tokens");
    remove_stale_files();
    write_manifest();

    report_.seconds = seconds_since(start);
    report_.mb_per_second =
        static_cast<double>(report_.input_bytes) / 1e6 / std::max(report_.seconds, 1e-9);
    for (const PrepareSplitReport* split : {&report_.train, &report_.validation}) {
      const int64_t written = std::count_if(split->shards.begin(), split->shards.end(),
                                            [](const auto& s) { return s.written; });
      logger_.info(
          "prepare: " + std::string(split == &report_.train ? "train" : "validation") + ": " +
          std::to_string(split->documents) + " documents, " + std::to_string(split->rows) +
          " rows in " + std::to_string(split->shards.size()) + " shard(s) (" +
          std::to_string(written) + " written, " +
          std::to_string(split->shards.size() - static_cast<size_t>(written)) + " unchanged)");
    }
    std::ostringstream done;
    done << "prepare: manifest " << (report_.manifest_written ? "written" : "unchanged") << " ("
         << report_.manifest_path << "); " << std::fixed << std::setprecision(2) << report_.seconds
         << " s, " << std::setprecision(1) << report_.mb_per_second << " MB/s";
    logger_.info(done.str());
    return report_;
  }

 private:
  int64_t shards_done() const { return report_.shards_written + report_.shards_skipped; }

  // Parse, clean, scrub and hash every record in parallel; then filter and route in order.
  void process_chunk(std::vector<RawRecord>& chunk) {
    std::vector<CleanRecord> cleaned(chunk.size());
    parallel_for(chunk.size(), threads_, 64, [&](size_t i, int worker) {
      try {
        clean_record(chunk[i], cleaned[i], *hashers_[static_cast<size_t>(worker)]);
      } catch (const Error&) {
        cleaned[i].error = std::current_exception();
      }
    });
    for (CleanRecord& record : cleaned) {
      if (record.error) std::rethrow_exception(record.error);
      ++report_.documents_read;
      if (record.too_short) {
        ++report_.dropped_short;
        continue;
      }
      if (options_.exact_dedup) {
        const DocKey key{load_u64(record.hash.data()), load_u64(record.hash.data() + 8)};
        if (!seen_.insert(key).second) {
          ++report_.exact_duplicates;
          continue;
        }
      }
      if (near_ && near_->is_duplicate_and_insert(record.signature)) {
        ++report_.near_duplicates;
        continue;
      }
      ++report_.documents_kept;
      for (const auto& [kind, n] : record.pii) report_.pii[kind] += n;
      SplitState& split = is_validation(record.hash) ? validation_ : train_;
      split.docs.push_back(std::move(record.doc));
      split.hashes.push_back(record.hash);
      if (static_cast<int64_t>(split.docs.size()) == options_.documents_per_shard)
        finish_shard(split);
    }
  }

  // Consumes raw.text.
  void clean_record(RawRecord& raw, CleanRecord& out, Sha256& hasher) const {
    const Source& source = sources_[raw.source];
    Document doc;
    if (source.kind == InputKind::kJsonl) {
      doc = parse_jsonl(raw, source, options_);
      raw.text = std::string();
    } else {
      doc.text = std::move(raw.text);
    }
    if (doc.chat()) {
      clean_chat(doc, out, hasher);
      return;
    }
    int64_t chars = 0;
    if (doc.instruction) {
      doc.text = clean_text(doc.text, true, false);
      doc.response = clean_text(doc.response, false, true);
      chars = count_code_points(doc.text) + count_code_points(doc.response);
      out.too_short = doc.response.empty();
    } else {
      doc.text = clean_text(doc.text);
      chars = count_code_points(doc.text);
    }
    out.too_short = out.too_short || chars == 0 || chars < options_.min_chars;
    if (out.too_short) return;
    if (scrubber_.enabled()) {
      doc.text = scrubber_.scrub(std::move(doc.text), &out.pii);
      if (doc.instruction) doc.response = scrubber_.scrub(std::move(doc.response), &out.pii);
    }
    hasher.reset();
    if (doc.instruction) {
      hasher.update("I", 1);
      hasher.update_u64(doc.text.size());
      hasher.update(doc.text);
      hasher.update(doc.response);
    } else {
      hasher.update("T", 1);
      hasher.update(doc.text);
    }
    out.hash = hasher.digest();
    if (near_)
      out.signature =
          near_->hasher().signature(doc.instruction ? doc.text + "\n" + doc.response : doc.text);
    out.doc = std::move(doc);
  }

  // clean_record for a chat record: every message cleaned and scrubbed; the hash covers roles
  // and contents.
  void clean_chat(Document& doc, CleanRecord& out, Sha256& hasher) const {
    int64_t chars = 0;
    for (ChatMessage& m : doc.messages) {
      m.content = clean_text(m.content);
      chars += count_code_points(m.content);
      if (scrubber_.enabled()) m.content = scrubber_.scrub(std::move(m.content), &out.pii);
    }
    out.too_short = chars == 0 || chars < options_.min_chars;
    if (out.too_short) return;
    hasher.reset();
    hasher.update("C", 1);
    std::string joined;
    for (const ChatMessage& m : doc.messages) {
      for (const std::string* part : {&m.role, &m.content}) {
        hasher.update_u64(part->size());
        hasher.update(*part);
      }
      joined += m.content + "\n";
    }
    out.hash = hasher.digest();
    if (near_) out.signature = near_->hasher().signature(joined);
    out.doc = std::move(doc);
  }

  bool is_validation(const Digest& hash) const {
    if (options_.val_fraction <= 0.0) return false;
    const uint64_t x = mix64(load_u64(hash.data() + 16) ^ mix64(options_.seed));
    const double u = static_cast<double>(x >> 11) * (1.0 / 9007199254740992.0);  // [0, 1)
    return u < options_.val_fraction;
  }

  std::string shard_content_hash(const std::vector<Digest>& hashes) {
    Sha256 h;
    h.update(std::string(kShardFormat) + "\n");
    h.update_u64(kPreparedFormatVersion);
    h.update_u64(static_cast<uint64_t>(options_.seq_len));
    h.update(tokenizer_->fingerprint() + "\n");
    h.update_u64(static_cast<uint64_t>(tokenizer_->eos_id()));
    h.update_u64(static_cast<uint64_t>(tokenizer_->vocab_size()));
    // Chat records render differently under another template (or an edited template file).
    if (chat_template_) h.update("chat template " + chat_template_->fingerprint() + "\n");
    h.update_u64(hashes.size());
    for (const Digest& d : hashes) h.update(d.data(), d.size());
    return to_hex(h.digest());
  }

  PackedShard tokenize_and_pack(const std::vector<Document>& docs) const {
    struct Encoded {
      std::vector<int32_t> ids;
      size_t prompt_tokens = 0;
      std::vector<uint8_t> mask;  // chat records: per token (else prompt_tokens decides)
    };
    std::vector<Encoded> encoded(docs.size());
    parallel_for(docs.size(), threads_, 8, [&](size_t i, int) {
      const Document& doc = docs[i];
      if (doc.chat()) {
        const RenderedChat chat = chat_template_->render(doc.messages, doc.where);
        encoded[i].ids = tokenizer_->encode(chat.text);
        encoded[i].mask = chat_token_mask(*tokenizer_, encoded[i].ids, chat);
        return;
      }
      encoded[i].ids = tokenizer_->encode(doc.text);
      if (doc.instruction) {
        encoded[i].prompt_tokens = encoded[i].ids.size();
        const std::vector<int32_t> response = tokenizer_->encode(doc.response);
        encoded[i].ids.insert(encoded[i].ids.end(), response.begin(), response.end());
      }
    });
    const int32_t eos = tokenizer_->eos_id();
    // A document is followed by EOS, unless it already ends with it (a chat template's end
    // marker, e.g. deepseek's <｜end▁of▁sentence｜>).
    auto needs_eos = [eos](const Encoded& e) { return e.ids.empty() || e.ids.back() != eos; };
    PackedShard packed;
    for (const Encoded& e : encoded)
      packed.total_tokens += static_cast<int64_t>(e.ids.size()) + (needs_eos(e) ? 1 : 0);
    const int64_t row = options_.seq_len + 1;
    packed.rows = packed.total_tokens / row;
    const size_t keep = static_cast<size_t>(packed.rows * row);
    packed.tokens.resize(keep);
    packed.mask.resize(keep);
    const int32_t vocab = tokenizer_->vocab_size();
    size_t at = 0;
    for (Encoded& e : encoded) {
      if (at == keep) break;
      const size_t n = std::min(e.ids.size(), keep - at);
      bool in_range = true;
      for (size_t j = 0; j < n; ++j) in_range &= e.ids[j] >= 0 && e.ids[j] < vocab;
      DST_CHECK(in_range, InternalError,
                "prepare: tokenizer " << tokenizer_->describe()
                                      << " produced an id outside its vocabulary of " << vocab);
      std::copy(e.ids.begin(), e.ids.begin() + static_cast<std::ptrdiff_t>(n),
                packed.tokens.begin() + static_cast<std::ptrdiff_t>(at));
      if (!e.mask.empty()) {
        std::copy_n(e.mask.begin(), n, packed.mask.begin() + static_cast<std::ptrdiff_t>(at));
      } else {
        const size_t prompt = std::min(e.prompt_tokens, n);
        std::fill_n(packed.mask.begin() + static_cast<std::ptrdiff_t>(at), prompt, uint8_t{0});
        std::fill_n(packed.mask.begin() + static_cast<std::ptrdiff_t>(at + prompt), n - prompt,
                    uint8_t{1});
      }
      at += n;
      if (at < keep && needs_eos(e)) {
        packed.tokens[at] = eos;
        packed.mask[at] = 1;
        ++at;
      }
      e.ids = std::vector<int32_t>();
    }
    return packed;
  }

  void finish_shard(SplitState& split) {
    PreparedShardReport shard;
    shard.file = shard_file_name(split.name, split.next_index);
    shard.documents = static_cast<int64_t>(split.docs.size());
    shard.content_hash = shard_content_hash(split.hashes);
    const std::string path = (output_dir_ / shard.file).string();
    const std::optional<PreparedShardAttributes> existing =
        read_prepared_shard_attributes(path, key_ ? &*key_ : nullptr);
    // A kept shard is encrypted exactly when this run encrypts (under this key, or it would not
    // have opened).
    if (existing && file_is_encrypted(path) == key_.has_value() &&
        existing->format == kShardFormat && existing->format_version == kPreparedFormatVersion &&
        existing->content_hash == shard.content_hash && existing->documents == shard.documents &&
        existing->seq_len == options_.seq_len) {
      shard.tokens = existing->tokens;
      shard.dropped_tail_tokens = existing->dropped_tail_tokens;
      shard.rows = existing->rows;
      ++report_.shards_skipped;
      logger_.debug("prepare: " + shard.file + " unchanged, skipped");
    } else {
      const PackedShard packed = tokenize_and_pack(split.docs);
      shard.tokens = packed.total_tokens;
      shard.rows = packed.rows;
      shard.dropped_tail_tokens = packed.total_tokens - packed.rows * (options_.seq_len + 1);
      PreparedShardAttributes attributes;
      attributes.format = kShardFormat;
      attributes.format_version = kPreparedFormatVersion;
      attributes.split = split.name;
      attributes.shard_index = split.next_index;
      attributes.content_hash = shard.content_hash;
      attributes.seq_len = options_.seq_len;
      attributes.documents = shard.documents;
      attributes.tokens = shard.tokens;
      attributes.dropped_tail_tokens = shard.dropped_tail_tokens;
      attributes.rows = shard.rows;
      attributes.tokenizer_fingerprint = tokenizer_->fingerprint();
      attributes.eos_id = tokenizer_->eos_id();
      invalidate_manifest();
      if (key_) {
        // Sealed in memory: the plaintext shard never reaches the disk.
        std::string image = detail::shard_file_image(packed, attributes, shard.file);
        write_file_atomically(path, encrypt_bytes(*key_, image, shard.file, path));
        std::fill(image.begin(), image.end(), '\0');
      } else {
        write_atomically(path, [&](const std::string& temporary) {
          write_shard_file(temporary, packed, attributes);
        });
      }
      shard.written = true;
      ++report_.shards_written;
      logger_.debug("prepare: wrote " + shard.file + " (" + std::to_string(shard.rows) + " rows)");
    }
    PrepareSplitReport& r = *split.report;
    r.documents += shard.documents;
    r.tokens += shard.tokens;
    r.dropped_tail_tokens += shard.dropped_tail_tokens;
    r.rows += shard.rows;
    r.shards.push_back(std::move(shard));
    split.docs.clear();
    split.hashes.clear();
    ++split.next_index;
    progress_->update(report_.documents_read, shards_done(), bytes_done_);
  }

  // Before the first change to the directory, the old manifest goes: a run that fails half-way
  // must not leave a manifest describing shards that were replaced or removed.
  void invalidate_manifest() {
    if (manifest_invalidated_) return;
    manifest_invalidated_ = true;
    const fs::path manifest = output_dir_ / kPreparedManifestName;
    std::error_code ec;
    if (fs::remove(manifest, ec)) logger_.debug("prepare: removed the previous manifest");
    DST_CHECK(!ec, IoError, manifest.string() << ": cannot remove: " << ec.message());
  }

  void remove_stale_files() {
    std::vector<fs::path> stale;
    std::error_code ec;
    for (const auto& entry : fs::directory_iterator(output_dir_, ec)) {
      const std::string name = entry.path().filename().string();
      const auto train_index = shard_index_of(name, "train");
      const auto validation_index = shard_index_of(name, "validation");
      if ((train_index && *train_index >= train_.next_index) ||
          (validation_index && *validation_index >= validation_.next_index) ||
          is_leftover_temporary(name))
        stale.push_back(entry.path());
    }
    DST_CHECK(!ec, IoError, output_dir_.string() << ": cannot list directory: " << ec.message());
    std::sort(stale.begin(), stale.end());
    for (const fs::path& path : stale) {
      invalidate_manifest();
      fs::remove(path, ec);
      DST_CHECK(!ec, IoError, path.string() << ": cannot remove stale file: " << ec.message());
      report_.stale_files_removed.push_back(path.filename().string());
      logger_.info("prepare: removed stale " + path.filename().string());
    }
  }

  json manifest_json() const {
    json pii_options = {{"enabled", options_.scrub_pii},
                        {"emails", options_.pii.emails},
                        {"phones", options_.pii.phones},
                        {"ip_addresses", options_.pii.ip_addresses},
                        {"card_numbers", options_.pii.card_numbers},
                        {"custom", json::array()}};
    for (const CustomPiiPattern& p : options_.pii.custom)
      pii_options["custom"].push_back({{"name", p.name}, {"regex", p.regex}});
    json splits = json::object();
    for (const PrepareSplitReport* split : {&report_.train, &report_.validation}) {
      json shards = json::array();
      for (const PreparedShardReport& s : split->shards)
        shards.push_back({{"file", s.file},
                          {"documents", s.documents},
                          {"tokens", s.tokens},
                          {"dropped_tail_tokens", s.dropped_tail_tokens},
                          {"rows", s.rows},
                          {"content_hash", s.content_hash}});
      splits[split == &report_.train ? "train" : "validation"] = {
          {"documents", split->documents},
          {"tokens", split->tokens},
          {"dropped_tail_tokens", split->dropped_tail_tokens},
          {"rows", split->rows},
          {"shards", shards}};
    }
    json sources = json::array();
    for (const Source& s : sources_)
      sources.push_back({{"path", s.path}, {"bytes", s.bytes}, {"sha256", s.sha256}});
    json pii_counts = json::object();
    for (const auto& [kind, n] : report_.pii) pii_counts[kind] = n;
    return {{"format", kPreparedFormat},
            {"format_version", kPreparedFormatVersion},
            {"seq_len", options_.seq_len},
            {"row_tokens", options_.seq_len + 1},
            {"datasets", {{"tokens", "int32"}, {"loss_mask", "uint8"}}},
            {"tokenizer",
             {{"spec", options_.tokenizer},
              {"eos_token", options_.eos_token},
              {"describe", tokenizer_->describe()},
              {"fingerprint", tokenizer_->fingerprint()},
              {"eos_id", tokenizer_->eos_id()},
              {"vocab_size", tokenizer_->vocab_size()}}},
            {"options",
             {{"text_split", options_.text_split},
              {"text_field", options_.text_field},
              {"prompt_field", options_.prompt_field},
              {"response_field", options_.response_field},
              {"messages_field", options_.messages_field},
              {"chat_template", options_.chat_template},
              {"chat_template_sha256", chat_template_ ? chat_template_->sha256() : ""},
              {"min_chars", options_.min_chars},
              {"exact_dedup", options_.exact_dedup},
              {"near_dedup",
               {{"enabled", options_.near_dedup},
                {"shingle_words", options_.near.shingle_words},
                {"num_permutations", options_.near.num_permutations},
                {"threshold", options_.near.threshold},
                {"seed", options_.near.seed}}},
              {"pii", pii_options},
              {"val_fraction", options_.val_fraction},
              {"seed", options_.seed},
              {"documents_per_shard", options_.documents_per_shard}}},
            {"splits", splits},
            {"counts",
             {{"documents_read", report_.documents_read},
              {"dropped_short", report_.dropped_short},
              {"exact_duplicates", report_.exact_duplicates},
              {"near_duplicates", report_.near_duplicates},
              {"documents_kept", report_.documents_kept},
              {"pii", pii_counts},
              {"tokens", report_.tokens},
              {"dropped_tail_tokens", report_.dropped_tail_tokens},
              {"rows", report_.rows}}},
            {"sources", sources}};
  }

  // The existing manifest's content with its sealed part opened (null when it cannot be read).
  json existing_manifest() const {
    std::ifstream in(report_.manifest_path, std::ios::binary);
    if (!in) return nullptr;
    std::ostringstream text;
    text << in.rdbuf();
    try {
      json manifest = json::parse(text.str());
      if (!manifest.is_object() || !manifest.contains("sealed")) return key_ ? nullptr : manifest;
      return key_ ? detail::unseal_manifest(std::move(manifest), *key_, report_.manifest_path)
                  : nullptr;
    } catch (const std::exception&) {
      return nullptr;  // unreadable or another key's: rewritten
    }
  }

  // Writes the manifest unless the existing one holds the same content (a re-run is a no-op).
  void write_manifest() {
    const json manifest = manifest_json();
    if (existing_manifest() == manifest) {
      report_.manifest_written = false;
      return;
    }
    // Under encryption the private part (per-shard data, sources, PII counts) is sealed.
    const json stored = key_ ? detail::seal_manifest(manifest, *key_) : manifest;
    write_file_atomically(report_.manifest_path, stored.dump(2) + "\n");
    report_.manifest_written = true;
  }

  void log_cleaning() const {
    std::ostringstream line;
    line << "prepare: " << report_.documents_read << " documents read, " << report_.dropped_short
         << " too short, " << report_.exact_duplicates << " exact duplicates, "
         << report_.near_duplicates << " near duplicates, " << report_.documents_kept << " kept";
    if (!report_.pii.empty()) {
      line << "; PII replaced:";
      for (const auto& [kind, n] : report_.pii) line << " " << kind << " " << n;
    }
    logger_.info(line.str());
  }

  const PrepareOptions& options_;
  const std::optional<EncryptionKey> key_;  // prepare.encryption: shards and manifest sealed
  const Logger& logger_;
  const int threads_;
  std::unique_ptr<Tokenizer> tokenizer_;
  const std::optional<ChatTemplate> chat_template_;  // prepare.chat_template, when set
  PiiScrubber scrubber_;
  std::unique_ptr<NearDuplicateFilter> near_;
  std::vector<std::unique_ptr<Sha256>> hashers_;  // one per worker
  fs::path output_dir_;
  std::vector<Source> sources_;
  std::unordered_set<DocKey, DocKeyHash> seen_;
  SplitState train_;
  SplitState validation_;
  PrepareReport report_;
  std::unique_ptr<ProgressBar> progress_;
  int64_t bytes_done_ = 0;
  bool manifest_invalidated_ = false;
};

}  // namespace

// ---------------------------------------------------------------------------------------------
// Public functions
// ---------------------------------------------------------------------------------------------

void PrepareOptions::validate() const {
  DST_CHECK(encryption.key_file.empty() || encryption.key_env.empty(), ConfigError,
            "prepare.encryption: set key_file or key_env, not both");
  DST_CHECK(!inputs.empty(), ConfigError,
            "prepare.inputs must list at least one file or directory");
  for (const std::string& input : inputs)
    DST_CHECK(!input.empty(), ConfigError, "prepare.inputs must not contain an empty path");
  DST_CHECK(!output_dir.empty(), ConfigError, "prepare.output_dir must be set");
  DST_CHECK(!tokenizer.empty(), ConfigError,
            "prepare.tokenizer must be \"byte\" or a tokenizer.json path");
  DST_CHECK(seq_len > 0, ConfigError, "prepare.seq_len must be positive, got " << seq_len);
  DST_CHECK(seq_len < (int64_t{1} << 30), ConfigError, "prepare.seq_len is too large: " << seq_len);
  DST_CHECK(text_split == "paragraph" || text_split == "line" || text_split == "file", ConfigError,
            "prepare.text_split must be paragraph, line or file, got '" << text_split << "'");
  DST_CHECK(!text_field.empty(), ConfigError, "prepare.text_field must not be empty");
  DST_CHECK(!prompt_field.empty(), ConfigError, "prepare.prompt_field must not be empty");
  DST_CHECK(!response_field.empty(), ConfigError, "prepare.response_field must not be empty");
  if (!chat_template.empty()) {  // a built-in name, or a template file that must parse
    try {
      ChatTemplate::load(chat_template);
    } catch (const ConfigError& e) {
      DST_THROW(ConfigError,
                "prepare.chat_template must be chatml, deepseek, llama3 or a chat "
                "template file: "
                    << e.what());
    }
  }
  DST_CHECK(prompt_field != response_field, ConfigError,
            "prepare.prompt_field and prepare.response_field must differ (both '" << prompt_field
                                                                                  << "')");
  DST_CHECK(min_chars >= 0, ConfigError,
            "prepare.min_chars must not be negative, got " << min_chars);
  if (near_dedup) near.validate("prepare.near.");
  DST_CHECK(val_fraction >= 0.0 && val_fraction < 1.0, ConfigError,
            "prepare.val_fraction must be in [0, 1), got " << val_fraction);
  DST_CHECK(documents_per_shard > 0, ConfigError,
            "prepare.documents_per_shard must be positive, got " << documents_per_shard);
  DST_CHECK(threads >= 0, ConfigError,
            "prepare.threads must not be negative (0 = all cores), got " << threads);
  for (const CustomPiiPattern& p : pii.custom)
    DST_CHECK(!p.name.empty(), ConfigError, "prepare.pii.custom: a pattern has no name");
}

std::string PrepareReport::summary() const {
  std::ostringstream out;
  out << "documents: " << documents_read << " read, " << dropped_short << " too short, "
      << exact_duplicates << " exact duplicates, " << near_duplicates << " near duplicates, "
      << documents_kept << " kept\n";
  if (!pii.empty()) {
    out << "PII replaced:";
    for (const auto& [kind, n] : pii) out << " " << kind << " " << n;
    out << "\n";
  }
  for (const auto* split : {&train, &validation}) {
    out << (split == &train ? "train: " : "validation: ") << split->documents << " documents, "
        << split->tokens << " tokens, " << split->rows << " rows, " << split->shards.size()
        << " shard(s)\n";
  }
  out << "shards: " << shards_written << " written, " << shards_skipped << " unchanged";
  if (!stale_files_removed.empty()) out << ", " << stale_files_removed.size() << " stale removed";
  out << "; dropped tail tokens: " << dropped_tail_tokens << "\n";
  out << "manifest: " << manifest_path << (manifest_written ? " (written)" : " (unchanged)")
      << "\n";
  out << std::fixed << std::setprecision(1) << static_cast<double>(input_bytes) / 1e6 << " MB in "
      << std::setprecision(2) << seconds << " s (" << std::setprecision(1) << mb_per_second
      << " MB/s)\n";
  return out.str();
}

PrepareReport prepare_corpus(const PrepareOptions& options, const Logger& logger) {
  const auto start = std::chrono::steady_clock::now();
  options.validate();
  Pipeline pipeline(options, logger);
  return pipeline.run(start);
}

std::string clean_text(const std::string& input, bool strip_leading, bool strip_trailing) {
  std::string repaired;
  if (!is_valid_utf8(input)) repaired = make_valid_utf8(input);
  const std::string& text = repaired.empty() ? input : repaired;
  // Written through a raw pointer: the output is never longer than the input (+1 space).
  std::string out(text.size() + 1, '\0');
  char* const begin_out = &out[0];
  char* w = begin_out;
  bool pending_space = false;
  const char* p = text.data();
  const char* const end = p + text.size();
  while (p < end) {
    char c = *p++;
    if (static_cast<unsigned char>(c) > 0x20 && c != 0x7F) {
      if (pending_space) *w++ = ' ';
      pending_space = false;
      *w++ = c;
      continue;
    }
    if (c == '\r') {
      c = '\n';
      if (p < end && *p == '\n') ++p;
    }
    if (c == ' ' || c == '\t' || c == '\f' || c == '\v') {
      pending_space = true;
    } else if (c == '\n') {
      pending_space = false;  // spaces before a newline go
      *w++ = '\n';
    }
    // other control characters are removed
  }
  if (pending_space) *w++ = ' ';
  const char* first = begin_out;
  const char* last = w;
  if (strip_leading)
    while (first < last && (*first == ' ' || *first == '\n')) ++first;
  if (strip_trailing)
    while (last > first && (last[-1] == ' ' || last[-1] == '\n')) --last;
  if (first == begin_out) {
    out.resize(static_cast<size_t>(last - first));
    return out;
  }
  return std::string(first, last);
}

}  // namespace dst
