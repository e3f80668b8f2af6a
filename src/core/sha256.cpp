// SHA-256 over OpenSSL's EVP interface.
#include "deepseek_train/core/sha256.h"

#include <openssl/err.h>
#include <openssl/evp.h>

#include <cerrno>
#include <cstdio>
#include <system_error>
#include <vector>

#include "deepseek_train/core/error.h"

namespace dst {

namespace {

constexpr std::size_t kFileBlockSize = std::size_t{1} << 20;

// The most recent OpenSSL error as text (the queue is cleared), for messages.
std::string openssl_error() {
  unsigned long code = 0, last = 0;
  while ((code = ERR_get_error()) != 0) last = code;
  if (last == 0) return "no OpenSSL error reported";
  char text[256];
  ERR_error_string_n(last, text, sizeof(text));
  return text;
}

}  // namespace

std::string to_hex(const Sha256Digest& digest) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string hex(2 * digest.size(), '0');
  for (std::size_t i = 0; i < digest.size(); ++i) {
    hex[2 * i] = kDigits[digest[i] >> 4];
    hex[2 * i + 1] = kDigits[digest[i] & 0x0f];
  }
  return hex;
}

void Sha256::ContextDeleter::operator()(evp_md_ctx_st* context) const { EVP_MD_CTX_free(context); }

Sha256::Sha256() : context_(EVP_MD_CTX_new()) {
  DST_CHECK(context_, InternalError,
            "SHA-256: cannot create an OpenSSL digest context (" << openssl_error() << ")");
  reset();
}

Sha256::~Sha256() = default;
Sha256::Sha256(Sha256&&) noexcept = default;
Sha256& Sha256::operator=(Sha256&&) noexcept = default;

void Sha256::reset() {
  DST_ASSERT(context_, "SHA-256 hasher used after a move");
  DST_CHECK(EVP_DigestInit_ex(context_.get(), EVP_sha256(), nullptr) == 1, InternalError,
            "SHA-256: EVP_DigestInit_ex failed (" << openssl_error() << ")");
  finished_ = false;
}

void Sha256::update(const void* data, std::size_t size) {
  DST_ASSERT(context_ && !finished_, "SHA-256 hasher updated after digest() or a move");
  if (size == 0) return;
  DST_CHECK(EVP_DigestUpdate(context_.get(), data, size) == 1, InternalError,
            "SHA-256: EVP_DigestUpdate failed (" << openssl_error() << ")");
}

void Sha256::update_u64(uint64_t value) {
  unsigned char bytes[8];
  for (int i = 0; i < 8; ++i) bytes[i] = static_cast<unsigned char>(value >> (8 * i));
  update(bytes, sizeof(bytes));
}

Sha256Digest Sha256::digest() {
  DST_ASSERT(context_ && !finished_, "SHA-256 digest() called twice or after a move");
  Sha256Digest digest{};
  unsigned int size = 0;
  DST_CHECK(EVP_DigestFinal_ex(context_.get(), digest.data(), &size) == 1 && size == digest.size(),
            InternalError, "SHA-256: EVP_DigestFinal_ex failed (" << openssl_error() << ")");
  finished_ = true;
  return digest;
}

std::string sha256_hex(const void* data, std::size_t size) {
  Sha256 hasher;
  hasher.update(data, size);
  return hasher.hex_digest();
}

std::string sha256_hex(const std::string& bytes) { return sha256_hex(bytes.data(), bytes.size()); }

std::string sha256_file_hex(const std::string& path) {
  std::unique_ptr<std::FILE, int (*)(std::FILE*)> file(std::fopen(path.c_str(), "rb"),
                                                       &std::fclose);
  auto fail = [&](int error) {
    DST_THROW(IoError, "cannot read '"
                           << path
                           << "': " << std::error_code(error, std::generic_category()).message());
  };
  if (!file) fail(errno);
  Sha256 hasher;
  std::vector<char> block(kFileBlockSize);
  for (;;) {
    const std::size_t got = std::fread(block.data(), 1, block.size(), file.get());
    hasher.update(block.data(), got);
    if (got < block.size()) break;
  }
  if (std::ferror(file.get())) fail(errno);
  return hasher.hex_digest();
}

}  // namespace dst
