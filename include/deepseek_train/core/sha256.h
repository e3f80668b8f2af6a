// SHA-256 (OpenSSL 3 EVP): one-shot and incremental digests of bytes and files. Used for
// checkpoint manifests, tokenizer fingerprints and prepared-corpus content hashes.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

// OpenSSL's EVP_MD_CTX, forward-declared so this header does not pull in OpenSSL.
struct evp_md_ctx_st;

namespace dst {

using Sha256Digest = std::array<unsigned char, 32>;

// Hex SHA-256 (64 lowercase characters) of `size` bytes at `data`.
std::string sha256_hex(const void* data, std::size_t size);
std::string sha256_hex(const std::string& bytes);

// Hex SHA-256 of a file's content, streamed in 1 MiB blocks. Throws IoError naming the path when
// the file cannot be opened or read.
std::string sha256_file_hex(const std::string& path);

// 64 lowercase hex characters of a digest.
std::string to_hex(const Sha256Digest& digest);

// Incremental SHA-256, e.g. to hash data while it is written. Not copyable. reset() starts a new
// digest on the same context (cheap reuse for many small inputs).
class Sha256 {
 public:
  Sha256();
  ~Sha256();
  Sha256(const Sha256&) = delete;
  Sha256& operator=(const Sha256&) = delete;
  Sha256(Sha256&&) noexcept;
  Sha256& operator=(Sha256&&) noexcept;

  void update(const void* data, std::size_t size);
  void update(const std::string& bytes) { update(bytes.data(), bytes.size()); }
  // Eight little-endian bytes: a length or count inside a hashed structure.
  void update_u64(uint64_t value);
  // Finishes the digest. The hasher cannot be updated afterwards until reset() (InternalError).
  Sha256Digest digest();
  std::string hex_digest() { return to_hex(digest()); }
  void reset();

 private:
  struct ContextDeleter {
    void operator()(evp_md_ctx_st* context) const;
  };
  std::unique_ptr<evp_md_ctx_st, ContextDeleter> context_;
  bool finished_ = false;
};

}  // namespace dst
