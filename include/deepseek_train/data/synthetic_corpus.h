// Generator of a small synthetic corpus with learnable structure (templated sentences and
// arithmetic facts), so the quickstart trains on something real without any download.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace dst {

// `num_documents` documents, each a single line without '\n', deterministic for a seed.
std::vector<std::string> generate_synthetic_corpus(int64_t num_documents, uint64_t seed);

// Writes documents one per line, atomically (temporary file + rename). Throws DataError.
void write_text_corpus(const std::string& path, const std::vector<std::string>& documents);

// Reads a text corpus: one document per line, empty lines skipped. Throws DataError naming the
// file when it cannot be read or holds no document.
std::vector<std::string> read_text_corpus(const std::string& path);

}  // namespace dst
