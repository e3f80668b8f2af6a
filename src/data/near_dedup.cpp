// MinHash + LSH near-duplicate filter.
#include "deepseek_train/data/near_dedup.h"

#include <algorithm>
#include <cmath>
#include <unordered_map>

#include "deepseek_train/core/error.h"

namespace dst {

namespace {

// splitmix64 finaliser: a fast, well-mixing 64-bit bijection.
uint64_t mix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ULL;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ULL;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBULL;
  return x ^ (x >> 31);
}

bool is_word_byte(unsigned char c) {
  return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c >= 0x80;
}

// 64-bit hashes of the words of `text` (FNV-1a over the lower-cased bytes, then mixed).
std::vector<uint64_t> word_hashes(const std::string& text, uint64_t seed) {
  std::vector<uint64_t> words;
  uint64_t h = 0;
  bool in_word = false;
  for (unsigned char c : text) {
    if (is_word_byte(c)) {
      if (!in_word) h = 0xCBF29CE484222325ULL ^ seed;
      in_word = true;
      if (c >= 'A' && c <= 'Z') c = static_cast<unsigned char>(c - 'A' + 'a');
      h = (h ^ c) * 0x100000001B3ULL;
    } else if (in_word) {
      words.push_back(mix64(h));
      in_word = false;
    }
  }
  if (in_word) words.push_back(mix64(h));
  return words;
}

}  // namespace

void NearDedupOptions::validate(const std::string& prefix) const {
  DST_CHECK(shingle_words > 0, ConfigError,
            prefix << "shingle_words must be positive, got " << shingle_words);
  DST_CHECK(num_permutations > 0 && num_permutations <= 4096, ConfigError,
            prefix << "num_permutations must be in [1, 4096], got " << num_permutations);
  DST_CHECK(threshold > 0.0 && threshold <= 1.0, ConfigError,
            prefix << "threshold must be in (0, 1], got " << threshold);
}

// ---------------------------------------------------------------------------------------------
// MinHasher
// ---------------------------------------------------------------------------------------------

MinHasher::MinHasher(const NearDedupOptions& options)
    : shingle_words_(options.shingle_words), seed_(options.seed) {
  options.validate();
  uint64_t state = mix64(options.seed ^ 0x6D696E68617368ULL);
  for (int i = 0; i < options.num_permutations; ++i) {
    state = mix64(state);
    multipliers_.push_back(state | 1);
    state = mix64(state);
    offsets_.push_back(state);
  }
}

MinHashSignature MinHasher::signature(const std::string& text) const {
  const std::vector<uint64_t> words = word_hashes(text, seed_);
  if (words.empty()) return {};
  const size_t k = std::min(words.size(), static_cast<size_t>(shingle_words_));
  const size_t shingles = words.size() - k + 1;
  const size_t n = multipliers_.size();
  std::vector<uint64_t> minimum(n, ~uint64_t{0});
  for (size_t s = 0; s < shingles; ++s) {
    uint64_t x = seed_;
    for (size_t j = 0; j < k; ++j) x = mix64(x ^ words[s + j]);
    // Multiply-shift hashing of an already mixed key; the high half is the hash.
    for (size_t i = 0; i < n; ++i) {
      const uint64_t v = (multipliers_[i] * x + offsets_[i]) >> 32;
      minimum[i] = std::min(minimum[i], v);
    }
  }
  MinHashSignature signature(n);
  for (size_t i = 0; i < n; ++i) signature[i] = static_cast<uint32_t>(minimum[i]);
  return signature;
}

double MinHasher::estimate_jaccard(const MinHashSignature& a, const MinHashSignature& b) {
  if (a.empty() || a.size() != b.size()) return 0.0;
  size_t equal = 0;
  for (size_t i = 0; i < a.size(); ++i) equal += a[i] == b[i];
  return static_cast<double>(equal) / static_cast<double>(a.size());
}

// ---------------------------------------------------------------------------------------------
// NearDuplicateFilter
// ---------------------------------------------------------------------------------------------

struct NearDuplicateFilter::Impl {
  explicit Impl(const NearDedupOptions& options) : hasher(options), threshold(options.threshold) {
    // Fewest bands (cheapest index, fewest candidates to verify) whose probability of making a
    // pair at exactly the threshold a candidate, 1 - (1 - t^r)^b, is at least 0.99.
    const int n = options.num_permutations;
    rows = 1;
    for (int r = n; r >= 1; --r) {
      const int b = n / r;
      const double p = 1.0 - std::pow(1.0 - std::pow(threshold, r), b);
      if (p >= 0.99) {
        rows = r;
        break;
      }
    }
    bands = n / rows;
    tables.resize(static_cast<size_t>(bands));
  }

  uint64_t band_key(const MinHashSignature& s, int band) const {
    uint64_t h = 0x62616E64ULL + static_cast<uint64_t>(band);
    for (int j = 0; j < rows; ++j) h = mix64(h ^ s[static_cast<size_t>(band * rows + j)]);
    return h;
  }

  MinHasher hasher;
  double threshold;
  int rows = 1;
  int bands = 1;
  int64_t kept = 0;
  std::vector<uint32_t> signatures;  // kept documents' signatures, back to back
  std::vector<std::unordered_map<uint64_t, std::vector<uint32_t>>> tables;  // per band
};

NearDuplicateFilter::NearDuplicateFilter(const NearDedupOptions& options)
    : impl_(std::make_unique<Impl>(options)) {}
NearDuplicateFilter::~NearDuplicateFilter() = default;
NearDuplicateFilter::NearDuplicateFilter(NearDuplicateFilter&&) noexcept = default;
NearDuplicateFilter& NearDuplicateFilter::operator=(NearDuplicateFilter&&) noexcept = default;

const MinHasher& NearDuplicateFilter::hasher() const { return impl_->hasher; }
int NearDuplicateFilter::bands() const { return impl_->bands; }
int NearDuplicateFilter::rows_per_band() const { return impl_->rows; }
int64_t NearDuplicateFilter::size() const { return impl_->kept; }

bool NearDuplicateFilter::is_duplicate_and_insert(const std::string& text) {
  return is_duplicate_and_insert(impl_->hasher.signature(text));
}

bool NearDuplicateFilter::is_duplicate_and_insert(const MinHashSignature& signature) {
  Impl& m = *impl_;
  if (signature.empty()) return false;
  const size_t n = static_cast<size_t>(m.hasher.num_permutations());
  DST_CHECK(
      signature.size() == n, InternalError,
      "near-duplicate filter: signature has " << signature.size() << " values, expected " << n);
  std::vector<uint64_t> keys(static_cast<size_t>(m.bands));
  for (int b = 0; b < m.bands; ++b) {
    keys[static_cast<size_t>(b)] = m.band_key(signature, b);
    auto found = m.tables[static_cast<size_t>(b)].find(keys[static_cast<size_t>(b)]);
    if (found == m.tables[static_cast<size_t>(b)].end()) continue;
    for (uint32_t id : found->second) {
      const uint32_t* other = m.signatures.data() + static_cast<size_t>(id) * n;
      size_t equal = 0;
      for (size_t i = 0; i < n; ++i) equal += other[i] == signature[i];
      if (static_cast<double>(equal) >= m.threshold * static_cast<double>(n) - 1e-9) return true;
    }
  }
  const auto id = static_cast<uint32_t>(m.kept);
  m.signatures.insert(m.signatures.end(), signature.begin(), signature.end());
  for (int b = 0; b < m.bands; ++b)
    m.tables[static_cast<size_t>(b)][keys[static_cast<size_t>(b)]].push_back(id);
  ++m.kept;
  return false;
}

}  // namespace dst
