// Inputs of `dstrain prepare`: the input files (directories expanded to their .txt and .jsonl
// files), read in order as a stream of raw records (paragraphs, lines or whole files of text;
// JSONL lines), and the parsing of a JSONL record into a Document.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "deepseek_train/data/chat_template.h"
#include "deepseek_train/data/corpus_prepare.h"

namespace dst::detail {

enum class InputKind { kText, kJsonl };

struct Source {
  std::string path;
  InputKind kind = InputKind::kText;
  int64_t bytes = 0;
  std::string sha256;
};

// The files of prepare.inputs in order, each directory replaced by its .txt and .jsonl files
// (sorted, hidden files skipped). Throws DataError for a missing path or an unknown extension.
std::vector<Source> expand_inputs(const std::vector<std::string>& inputs);

class FileReader;

// One unparsed document: a paragraph, line or whole file of text, or one JSONL line.
struct RawRecord {
  size_t source = 0;
  int64_t line = 0;  // first line of the record (1-based)
  std::string text;
};

// Produces the records of all sources in order, a chunk at a time. Fills in each source's size
// and SHA-256 once it has been read completely.
class RecordStream {
 public:
  RecordStream(std::vector<Source>& sources, const std::string& text_split);
  ~RecordStream();

  bool finished() const { return finished_; }
  // Bytes read so far (all sources).
  int64_t bytes_read() const;

  // Appends records until about `budget` bytes were added or the input ends.
  void fill(std::vector<RawRecord>& out, size_t budget);

 private:
  size_t flush_paragraph(std::vector<RawRecord>& out);

  std::vector<Source>& sources_;
  std::string text_split_;
  size_t current_ = 0;
  std::unique_ptr<FileReader> reader_;
  std::string line_;
  std::string paragraph_;
  int64_t paragraph_line_ = 0;
  int64_t finished_bytes_ = 0;
  bool finished_ = false;
};

struct Document {
  bool instruction = false;
  std::string text;  // the text, or an instruction's prompt
  std::string response;
  std::vector<ChatMessage> messages;  // a chat record (text and response unused)
  std::string where;                  // a chat record's file:line, for rendering errors
  bool chat() const { return !messages.empty(); }
};

Document parse_jsonl(const RawRecord& raw, const Source& source, const PrepareOptions& options);

}  // namespace dst::detail
