// Inputs of `dstrain prepare` (see corpus_sources.h).
#include "data/corpus_sources.h"

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <optional>
#include <system_error>
#include <utility>

#include "deepseek_train/core/error.h"
#include "deepseek_train/core/sha256.h"

namespace dst {

namespace fs = std::filesystem;
using nlohmann::json;

namespace detail {

namespace {

constexpr size_t kReadBlockBytes = size_t{1} << 20;

std::optional<InputKind> kind_of_extension(const fs::path& path) {
  const std::string ext = path.extension().string();
  if (ext == ".txt") return InputKind::kText;
  if (ext == ".jsonl") return InputKind::kJsonl;
  return std::nullopt;
}

bool is_blank(const std::string& line) {
  return line.find_first_not_of(" \t\r\f\v") == std::string::npos;
}

// One-line description of a JSON value's type for error messages.
std::string json_type(const json& value) { return value.type_name(); }

}  // namespace

std::vector<Source> expand_inputs(const std::vector<std::string>& inputs) {
  std::vector<Source> sources;
  for (const std::string& input : inputs) {
    std::error_code ec;
    const fs::file_status status = fs::status(input, ec);
    DST_CHECK(status.type() != fs::file_type::not_found, DataError,
              input << ": no such file or directory");
    if (fs::is_directory(status)) {
      std::vector<fs::path> files;
      for (const auto& entry : fs::directory_iterator(input, ec)) {
        const fs::path& p = entry.path();
        if (p.filename().string().rfind('.', 0) == 0 || !kind_of_extension(p)) continue;
        std::error_code file_ec;
        if (fs::is_regular_file(p, file_ec)) files.push_back(p);
      }
      DST_CHECK(!ec, DataError, input << ": cannot list directory: " << ec.message());
      DST_CHECK(!files.empty(), DataError, input << ": directory has no .txt or .jsonl files");
      std::sort(files.begin(), files.end());
      for (const fs::path& p : files) sources.push_back({p.string(), *kind_of_extension(p), 0, {}});
      continue;
    }
    const std::optional<InputKind> kind = kind_of_extension(input);
    DST_CHECK(kind.has_value(), DataError,
              input << ": unknown input extension '" << fs::path(input).extension().string()
                    << "' (expected .txt or .jsonl, or a directory)");
    sources.push_back({input, *kind, 0, {}});
  }
  return sources;
}

// Reads a file in blocks, hashing and counting every byte; yields lines (a UTF-8 byte order mark
// at the start of the file is skipped).
class FileReader {
 public:
  explicit FileReader(const std::string& path) : path_(path), buffer_(kReadBlockBytes) {
    file_ = std::fopen(path.c_str(), "rb");
    if (file_ == nullptr) {
      const int error = errno;
      DST_THROW(DataError, path << ": cannot open for reading: " << std::strerror(error));
    }
  }
  ~FileReader() {
    if (file_ != nullptr) std::fclose(file_);
  }
  FileReader(const FileReader&) = delete;
  FileReader& operator=(const FileReader&) = delete;

  // The next line without its '\n' (the last line may lack one); false at the end of the file.
  bool next_line(std::string& line) {
    line.clear();
    bool partial = false;
    for (;;) {
      if (pos_ == len_ && !refill()) {
        if (partial) ++line_number_;
        return partial;
      }
      const char* start = buffer_.data() + pos_;
      const auto* newline = static_cast<const char*>(std::memchr(start, '\n', len_ - pos_));
      if (newline != nullptr) {
        line.append(start, static_cast<size_t>(newline - start));
        pos_ += static_cast<size_t>(newline - start) + 1;
        ++line_number_;
        return true;
      }
      line.append(start, len_ - pos_);
      pos_ = len_;
      partial = true;
    }
  }

  void read_all(std::string& out) {
    out.clear();
    while (pos_ < len_ || refill()) {
      out.append(buffer_.data() + pos_, len_ - pos_);
      pos_ = len_;
    }
  }

  int64_t line_number() const { return line_number_; }
  int64_t bytes() const { return bytes_; }
  std::string finish() { return to_hex(hash_.digest()); }

 private:
  bool refill() {
    const size_t n = std::fread(buffer_.data(), 1, buffer_.size(), file_);
    if (n == 0) {
      if (std::ferror(file_)) {
        const int error = errno;
        DST_THROW(DataError, path_ << ": cannot read: " << std::strerror(error));
      }
      return false;
    }
    hash_.update(buffer_.data(), n);
    pos_ = 0;
    len_ = n;
    if (bytes_ == 0 && n >= 3 && std::memcmp(buffer_.data(), "\xEF\xBB\xBF", 3) == 0) pos_ = 3;
    bytes_ += static_cast<int64_t>(n);
    return true;
  }

  std::string path_;
  Sha256 hash_;
  std::vector<char> buffer_;
  std::FILE* file_ = nullptr;
  size_t pos_ = 0;
  size_t len_ = 0;
  int64_t bytes_ = 0;
  int64_t line_number_ = 0;
};

RecordStream::RecordStream(std::vector<Source>& sources, const std::string& text_split)
    : sources_(sources), text_split_(text_split) {}

RecordStream::~RecordStream() = default;

int64_t RecordStream::bytes_read() const {
  return finished_bytes_ + (reader_ ? reader_->bytes() : 0);
}

void RecordStream::fill(std::vector<RawRecord>& out, size_t budget) {
  size_t added = 0;
  while (added < budget && !finished_) {
    if (!reader_) {
      if (current_ == sources_.size()) {
        finished_ = true;
        break;
      }
      reader_ = std::make_unique<FileReader>(sources_[current_].path);
    }
    const bool line_records = sources_[current_].kind == InputKind::kJsonl || text_split_ == "line";
    bool file_done = false;
    if (line_records) {
      if (reader_->next_line(line_)) {
        if (!is_blank(line_)) {
          added += line_.size();
          out.push_back({current_, reader_->line_number(), line_});
        }
      } else {
        file_done = true;
      }
    } else if (text_split_ == "paragraph") {
      if (reader_->next_line(line_)) {
        if (is_blank(line_)) {
          added += flush_paragraph(out);
        } else {
          if (paragraph_.empty()) {
            paragraph_line_ = reader_->line_number();
          } else {
            paragraph_.push_back('\n');
          }
          paragraph_ += line_;
        }
      } else {
        added += flush_paragraph(out);
        file_done = true;
      }
    } else {  // "file"
      std::string all;
      reader_->read_all(all);
      added += all.size();
      out.push_back({current_, 1, std::move(all)});
      file_done = true;
    }
    if (file_done) {
      sources_[current_].bytes = reader_->bytes();
      sources_[current_].sha256 = reader_->finish();
      finished_bytes_ += reader_->bytes();
      reader_.reset();
      ++current_;
    }
  }
}

size_t RecordStream::flush_paragraph(std::vector<RawRecord>& out) {
  if (paragraph_.empty()) return 0;
  const size_t size = paragraph_.size();
  out.push_back({current_, paragraph_line_, std::move(paragraph_)});
  paragraph_.clear();
  return size;
}

Document parse_jsonl(const RawRecord& raw, const Source& source, const PrepareOptions& options) {
  json value;
  try {
    value = json::parse(raw.text);
  } catch (const json::exception& e) {
    // The parser quotes what it read; a long line would make an unreadable message.
    std::string what = e.what();
    if (what.size() > 300) {
      size_t cut = 300;
      while (cut > 0 && (static_cast<unsigned char>(what[cut]) & 0xC0) == 0x80) --cut;
      what = what.substr(0, cut) + "...";
    }
    DST_THROW(DataError, source.path << ":" << raw.line << ": malformed JSON (" << what << ")");
  }
  DST_CHECK(value.is_object(), DataError,
            source.path << ":" << raw.line << ": expected a JSON object, got " << json_type(value));
  Document doc;
  const auto text = value.find(options.text_field);
  if (text != value.end()) {
    DST_CHECK(text->is_string(), DataError,
              source.path << ":" << raw.line << ": field '" << options.text_field
                          << "' is not a string (" << json_type(*text) << ")");
    doc.text = text->get<std::string>();
    return doc;
  }
  const auto messages = value.find(options.messages_field);
  if (messages != value.end()) {
    const std::string where = source.path + ":" + std::to_string(raw.line);
    DST_CHECK(!options.chat_template.empty(), DataError,
              where << ": a chat record ('" << options.messages_field
                    << "'), but prepare.chat_template names no template (chatml, deepseek, "
                       "llama3, or a model's chat template file)");
    doc.messages = parse_chat_messages(messages->dump(), where);
    doc.where = where;
    return doc;
  }
  const auto prompt = value.find(options.prompt_field);
  const auto response = value.find(options.response_field);
  DST_CHECK(prompt != value.end() && response != value.end(), DataError,
            source.path << ":" << raw.line << ": no field '" << options.text_field << "' (nor '"
                        << options.messages_field << "', nor '" << options.prompt_field << "' and '"
                        << options.response_field << "')");
  DST_CHECK(prompt->is_string(), DataError,
            source.path << ":" << raw.line << ": field '" << options.prompt_field
                        << "' is not a string (" << json_type(*prompt) << ")");
  DST_CHECK(response->is_string(), DataError,
            source.path << ":" << raw.line << ": field '" << options.response_field
                        << "' is not a string (" << json_type(*response) << ")");
  doc.instruction = true;
  doc.text = prompt->get<std::string>();
  doc.response = response->get<std::string>();
  return doc;
}

}  // namespace detail

}  // namespace dst
