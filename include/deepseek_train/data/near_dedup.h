// Near-duplicate document detection for corpus preparation: MinHash signatures over word
// shingles, indexed with locality-sensitive hashing (LSH banding), keeping the first document of
// each group whose estimated Jaccard similarity reaches a threshold. Torch-free.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace dst {

struct NearDedupOptions {
  int shingle_words = 5;       // words per shingle
  int num_permutations = 128;  // MinHash values per signature
  double threshold = 0.8;      // estimated Jaccard similarity at or above which = duplicate
  uint64_t seed = 0x5eedULL;   // seeds the hash functions (same seed, same decisions)
  // Throws ConfigError naming `<prefix>shingle_words` etc. when a value is out of range.
  void validate(const std::string& prefix = "near_dedup.") const;
};

using MinHashSignature = std::vector<uint32_t>;

// Computes signatures. Words are maximal runs of ASCII letters/digits and non-ASCII bytes,
// ASCII-lowercased (so punctuation, case and spacing changes do not matter); a text with fewer
// words than shingle_words is one shingle. Thread-safe (const).
class MinHasher {
 public:
  explicit MinHasher(const NearDedupOptions& options);
  // Empty for a text without words.
  MinHashSignature signature(const std::string& text) const;
  int num_permutations() const { return static_cast<int>(multipliers_.size()); }

  // Fraction of equal positions (0 when either signature is empty or sizes differ).
  static double estimate_jaccard(const MinHashSignature& a, const MinHashSignature& b);

 private:
  int shingle_words_;
  uint64_t seed_;
  std::vector<uint64_t> multipliers_;  // odd; h_i(x) = (a_i * x + b_i) >> 32
  std::vector<uint64_t> offsets_;
};

// Keeps the first of each near-duplicate group. Decisions depend only on the order of calls, so
// feeding documents in input order is deterministic. Not thread-safe (compute signatures in
// parallel with hasher(), then call is_duplicate_and_insert in order).
class NearDuplicateFilter {
 public:
  explicit NearDuplicateFilter(const NearDedupOptions& options);
  ~NearDuplicateFilter();
  NearDuplicateFilter(NearDuplicateFilter&&) noexcept;
  NearDuplicateFilter& operator=(NearDuplicateFilter&&) noexcept;

  // True when a kept document's estimated Jaccard similarity with this one is >= threshold;
  // otherwise the document is kept (remembered) and false is returned. A text without words is
  // never a duplicate and is not remembered.
  bool is_duplicate_and_insert(const std::string& text);
  bool is_duplicate_and_insert(const MinHashSignature& signature);

  const MinHasher& hasher() const;
  int bands() const;          // LSH bands
  int rows_per_band() const;  // signature values per band
  int64_t size() const;       // documents kept so far

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace dst
