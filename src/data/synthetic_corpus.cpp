// Synthetic corpus of templated sentences and arithmetic facts, plus plain-text corpus I/O.
#include "deepseek_train/data/synthetic_corpus.h"

#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <random>
#include <system_error>

#include "deepseek_train/core/atomic_file.h"
#include "deepseek_train/core/error.h"
#include "deepseek_train/core/random.h"

namespace dst {
namespace {

int64_t uniform_int(std::mt19937_64& rng, int64_t lo, int64_t hi) {  // inclusive range
  return lo + static_cast<int64_t>(uniform_below(rng, static_cast<uint64_t>(hi - lo + 1)));
}

template <size_t N>
const char* pick(std::mt19937_64& rng, const char* const (&words)[N]) {
  return words[uniform_below(rng, N)];
}

const char* const kAdjectives[] = {"red", "small", "big", "old", "young", "quick", "lazy", "happy"};
const char* const kAnimals[] = {"fox", "bird", "cat", "dog", "fish", "horse", "mouse", "owl"};
const char* const kVerbs[] = {"sees", "follows", "likes", "watches", "finds", "helps"};
const char* const kPlaces[] = {"river", "forest", "house", "hill", "garden", "lake"};
const char* const kNames[] = {"alice", "bob", "carol", "dave", "emma", "frank"};
const char* const kFruits[] = {"apples", "pears", "plums", "lemons", "cherries"};
const char* const kColors[] = {"red", "blue", "green", "yellow", "white", "black"};
const char* const kThings[] = {"ball", "book", "cup", "box", "hat", "key"};
const char* const kFurniture[] = {"table", "chair", "bed", "shelf", "floor"};
const char* const kActivities[] = {"read", "swim", "sing", "run", "paint", "cook"};
const char* const kTimes[] = {"morning", "evening", "afternoon", "night"};

std::string sentence(std::mt19937_64& rng) {
  switch (uniform_below(rng, 6)) {
    case 0:
      return std::string("the ") + pick(rng, kAdjectives) + " " + pick(rng, kAnimals) + " " +
             pick(rng, kVerbs) + " the " + pick(rng, kAdjectives) + " " + pick(rng, kAnimals) +
             " near the " + pick(rng, kPlaces) + ".";
    case 1: {
      const std::string a = pick(rng, kNames);
      std::string b = pick(rng, kNames);
      while (b == a) b = pick(rng, kNames);
      const std::string fruit = pick(rng, kFruits);
      const int64_t x = uniform_int(rng, 1, 9), y = uniform_int(rng, 1, 9);
      return a + " has " + std::to_string(x) + " " + fruit + " and " + b + " has " +
             std::to_string(y) + " " + fruit + ", so together they have " + std::to_string(x + y) +
             " " + fruit + ".";
    }
    case 2: {
      const int64_t x = uniform_int(rng, 0, 49), y = uniform_int(rng, 0, 49);
      return std::to_string(x) + " + " + std::to_string(y) + " = " + std::to_string(x + y) + ".";
    }
    case 3: {
      const int64_t x = uniform_int(rng, 0, 49), y = uniform_int(rng, 0, x);
      return std::to_string(x) + " - " + std::to_string(y) + " = " + std::to_string(x - y) + ".";
    }
    case 4:
      return std::string("the ") + pick(rng, kColors) + " " + pick(rng, kThings) + " is on the " +
             pick(rng, kFurniture) + ".";
    default:
      return std::string(pick(rng, kNames)) + " likes to " + pick(rng, kActivities) + " in the " +
             pick(rng, kTimes) + ".";
  }
}

}  // namespace

std::vector<std::string> generate_synthetic_corpus(int64_t num_documents, uint64_t seed) {
  DST_CHECK(num_documents >= 0, DataError,
            "synthetic corpus: num_documents must be >= 0, got " << num_documents);
  std::mt19937_64 rng(seed ^ 0x9e3779b97f4a7c15ULL);
  std::vector<std::string> documents;
  documents.reserve(static_cast<size_t>(num_documents));
  for (int64_t d = 0; d < num_documents; ++d) {
    // Sentences are joined by spaces until the document reaches its target length (100..250
    // bytes); a sentence that would push it past 300 bytes ends the document instead.
    const size_t target = static_cast<size_t>(uniform_int(rng, 100, 250));
    std::string doc;
    while (doc.size() < target) {
      const std::string s = sentence(rng);
      if (doc.empty()) {
        doc = s;
      } else if (doc.size() + 1 + s.size() <= 300) {
        doc += " " + s;
      } else {
        break;
      }
    }
    documents.push_back(std::move(doc));
  }
  return documents;
}

void write_text_corpus(const std::string& path, const std::vector<std::string>& documents) {
  for (size_t i = 0; i < documents.size(); ++i) {
    DST_CHECK(documents[i].find('\n') == std::string::npos, DataError,
              "cannot write corpus '" << path << "': document " << i << " contains a newline");
  }
  std::string contents;
  for (const std::string& doc : documents) contents += doc + '\n';
  try {
    write_file_atomically(path, contents);
  } catch (const IoError& e) {
    DST_THROW(DataError, "cannot write corpus '" << path << "': " << e.what());
  }
}

std::vector<std::string> read_text_corpus(const std::string& path) {
  std::error_code ec;
  DST_CHECK(!std::filesystem::is_directory(path, ec), DataError,
            "cannot read corpus '" << path << "': it is a directory");
  std::ifstream in(path, std::ios::binary);
  DST_CHECK(in.is_open(), DataError, "cannot open corpus file '" << path << "'");
  std::vector<std::string> documents;
  std::string line;
  while (std::getline(in, line)) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (!line.empty()) documents.push_back(line);
  }
  DST_CHECK(!in.bad(), DataError, "error while reading corpus file '" << path << "'");
  DST_CHECK(!documents.empty(), DataError,
            "corpus file '" << path << "' holds no document (only empty lines)");
  return documents;
}

}  // namespace dst
