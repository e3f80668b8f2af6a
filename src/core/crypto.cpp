#include "deepseek_train/core/crypto.h"

#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <system_error>
#include <vector>

#include "deepseek_train/core/atomic_file.h"
#include "deepseek_train/core/error.h"

namespace dst {

namespace {

constexpr unsigned char kMagic[kEnvelopeMagicSize] = {'D', 'S', 'T', 'A', 'E', 'S', '1', '\0'};
constexpr std::size_t kHeaderSize = kEnvelopeMagicSize + kEnvelopeNonceSize;
constexpr std::size_t kFileBlockSize = std::size_t{1} << 20;
// EVP update lengths are ints: feed larger buffers in pieces.
constexpr std::size_t kMaxUpdateSize = std::size_t{1} << 30;
// A key file is a few dozen bytes; reading stops after this many (and the file is rejected).
constexpr std::size_t kMaxKeyFileSize = 4096;
constexpr char kFingerprintDomain[] = "deepseek_train-key-id";

struct CipherContextDeleter {
  void operator()(EVP_CIPHER_CTX* context) const { EVP_CIPHER_CTX_free(context); }
};
using CipherContext = std::unique_ptr<EVP_CIPHER_CTX, CipherContextDeleter>;

struct FileCloser {
  void operator()(std::FILE* file) const { std::fclose(file); }
};
using File = std::unique_ptr<std::FILE, FileCloser>;

// Wipes a buffer when the scope ends, however it ends.
class ScopedCleanse {
 public:
  ScopedCleanse(void* data, std::size_t size) : data_(data), size_(size) {}
  ~ScopedCleanse() { OPENSSL_cleanse(data_, size_); }
  ScopedCleanse(const ScopedCleanse&) = delete;
  ScopedCleanse& operator=(const ScopedCleanse&) = delete;

 private:
  void* data_;
  std::size_t size_;
};

// The most recent OpenSSL error as text (the queue is cleared), for messages.
std::string openssl_error() {
  unsigned long code = 0;
  unsigned long last = 0;
  while ((code = ERR_get_error()) != 0) last = code;
  if (last == 0) return "no OpenSSL error reported";
  char text[256];
  ERR_error_string_n(last, text, sizeof(text));
  return text;
}

std::string errno_message(int error) {
  return std::error_code(error, std::generic_category()).message();
}

int hex_value(unsigned char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

bool is_space(unsigned char c) { return std::isspace(c) != 0; }

// Decodes exactly 64 hex characters (after trimming surrounding whitespace) into `key`. Returns
// false, with `key` wiped, when the text is anything else.
bool parse_hex_key(const unsigned char* text, std::size_t size,
                   std::array<unsigned char, EncryptionKey::kSize>& key) {
  std::size_t begin = 0;
  std::size_t end = size;
  while (begin < end && is_space(text[begin])) ++begin;
  while (end > begin && is_space(text[end - 1])) --end;
  if (end - begin != 2 * EncryptionKey::kSize) return false;
  for (std::size_t i = 0; i < EncryptionKey::kSize; ++i) {
    const int high = hex_value(text[begin + 2 * i]);
    const int low = hex_value(text[begin + 2 * i + 1]);
    if (high < 0 || low < 0) {
      OPENSSL_cleanse(key.data(), key.size());
      return false;
    }
    key[i] = static_cast<unsigned char>((high << 4) | low);
  }
  return true;
}

bool starts_with_magic(const void* data, std::size_t size) {
  return size >= kEnvelopeMagicSize && std::memcmp(data, kMagic, kEnvelopeMagicSize) == 0;
}

const unsigned char* bytes_of(const std::string& s) {
  return reinterpret_cast<const unsigned char*>(s.data());
}

// Feeds `size` bytes to an AES-GCM context: additional authenticated data when `out` is null,
// otherwise cipher text/plain text written to `out` (GCM output is as long as its input).
void cipher_update(EVP_CIPHER_CTX* context, unsigned char* out, const unsigned char* in,
                   std::size_t size, const std::string& what) {
  while (size > 0) {
    const std::size_t chunk = std::min(size, kMaxUpdateSize);
    int written = 0;
    const bool ok = EVP_CipherUpdate(context, out, &written, in, static_cast<int>(chunk)) == 1;
    DST_CHECK(ok && (out == nullptr || static_cast<std::size_t>(written) == chunk), CheckpointError,
              what << ": AES-256-GCM update failed (" << openssl_error() << ")");
    in += chunk;
    if (out != nullptr) out += chunk;
    size -= chunk;
  }
}

// A context ready to encrypt (encrypt=1) or decrypt (encrypt=0) with the key and nonce, with the
// magic and the associated data already authenticated.
CipherContext start_cipher(const unsigned char* key, const unsigned char* nonce, int encrypt,
                           const std::string& associated_data, const std::string& what) {
  CipherContext context(EVP_CIPHER_CTX_new());
  DST_CHECK(context, CheckpointError,
            what << ": cannot create an AES-256-GCM context (" << openssl_error() << ")");
  const bool ok = EVP_CipherInit_ex(context.get(), EVP_aes_256_gcm(), nullptr, nullptr, nullptr,
                                    encrypt) == 1 &&
                  EVP_CIPHER_CTX_ctrl(context.get(), EVP_CTRL_GCM_SET_IVLEN,
                                      static_cast<int>(kEnvelopeNonceSize), nullptr) == 1 &&
                  EVP_CipherInit_ex(context.get(), nullptr, nullptr, key, nonce, encrypt) == 1;
  DST_CHECK(ok, CheckpointError,
            what << ": cannot initialize AES-256-GCM (" << openssl_error() << ")");
  // Authenticating the magic binds the format version; its length is fixed, so the associated
  // data that follows cannot be confused with it.
  cipher_update(context.get(), nullptr, kMagic, kEnvelopeMagicSize, what);
  cipher_update(context.get(), nullptr, bytes_of(associated_data), associated_data.size(), what);
  return context;
}

}  // namespace

// The only code that reads key bytes.
struct EncryptionKeyAccess {
  static const unsigned char* bytes(const EncryptionKey& key) { return key.bytes_.data(); }
};

namespace {

// Calls consume(data, size) for each block of the file in order; IoError naming it on failure.
template <typename Consume>
void read_file_blocks(const std::string& path, Consume&& consume) {
  File file(std::fopen(path.c_str(), "rb"));
  if (!file) {
    const int error = errno;
    DST_THROW(IoError, "cannot read '" << path << "': " << errno_message(error));
  }
  std::vector<char> block(kFileBlockSize);
  for (;;) {
    const std::size_t got = std::fread(block.data(), 1, block.size(), file.get());
    consume(block.data(), got);
    if (got < block.size()) break;
  }
  if (std::ferror(file.get())) {
    const int error = errno;
    DST_THROW(IoError, "cannot read '" << path << "': " << errno_message(error));
  }
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Keys
// ---------------------------------------------------------------------------------------------

EncryptionKey::EncryptionKey(const unsigned char* bytes) {
  std::memcpy(bytes_.data(), bytes, kSize);
}

EncryptionKey::~EncryptionKey() { OPENSSL_cleanse(bytes_.data(), bytes_.size()); }

EncryptionKey EncryptionKey::from_file(const std::string& path) {
  File file(std::fopen(path.c_str(), "rb"));
  if (!file) {
    const int error = errno;
    DST_THROW(ConfigError,
              "encryption key file '" << path << "': cannot open (" << errno_message(error) << ")");
  }
  std::array<unsigned char, kMaxKeyFileSize + 1> content;
  ScopedCleanse wipe_content(content.data(), content.size());
  const std::size_t size = std::fread(content.data(), 1, content.size(), file.get());
  if (std::ferror(file.get())) {
    const int error = errno;
    DST_THROW(ConfigError,
              "encryption key file '" << path << "': cannot read (" << errno_message(error) << ")");
  }
  if (size == kSize) return EncryptionKey(content.data());
  std::array<unsigned char, kSize> key;
  ScopedCleanse wipe_key(key.data(), key.size());
  DST_CHECK(size <= kMaxKeyFileSize && parse_hex_key(content.data(), size, key), ConfigError,
            "encryption key file '" << path << "': expected 32 raw bytes or 64 hex characters");
  return EncryptionKey(key.data());
}

EncryptionKey EncryptionKey::from_env(const std::string& variable) {
  const char* value = std::getenv(variable.c_str());
  DST_CHECK(value != nullptr && value[0] != '\0', ConfigError,
            "encryption key variable '" << variable << "' is not set or empty");
  std::array<unsigned char, kSize> key;
  ScopedCleanse wipe_key(key.data(), key.size());
  DST_CHECK(parse_hex_key(reinterpret_cast<const unsigned char*>(value), std::strlen(value), key),
            ConfigError,
            "encryption key variable '" << variable << "': expected 64 hex characters");
  return EncryptionKey(key.data());
}

EncryptionKey EncryptionKey::from_bytes(const std::string& raw32) {
  DST_CHECK(raw32.size() == kSize, ConfigError,
            "encryption key: expected 32 raw bytes, got " << raw32.size());
  return EncryptionKey(bytes_of(raw32));
}

std::string EncryptionKey::fingerprint() const {
  Sha256 hasher;
  hasher.update(kFingerprintDomain, sizeof(kFingerprintDomain) - 1);
  hasher.update(bytes_.data(), bytes_.size());
  return hasher.hex_digest().substr(0, 16);
}

// ---------------------------------------------------------------------------------------------
// Sealed envelopes
// ---------------------------------------------------------------------------------------------

bool is_encrypted_envelope(const std::string& bytes) {
  return starts_with_magic(bytes.data(), bytes.size());
}

bool file_is_encrypted(const std::string& path) {
  File file(std::fopen(path.c_str(), "rb"));
  if (!file) {
    const int error = errno;
    DST_THROW(IoError, "cannot read '" << path << "': " << errno_message(error));
  }
  unsigned char head[kEnvelopeMagicSize];
  const std::size_t got = std::fread(head, 1, sizeof(head), file.get());
  if (std::ferror(file.get())) {
    const int error = errno;
    DST_THROW(IoError, "cannot read '" << path << "': " << errno_message(error));
  }
  return starts_with_magic(head, got);
}

std::string encrypt_bytes(const EncryptionKey& key, const std::string& plaintext,
                          const std::string& associated_data, const std::string& what) {
  std::string envelope(kEnvelopeOverhead + plaintext.size(), '\0');
  auto* out = reinterpret_cast<unsigned char*>(envelope.data());
  std::memcpy(out, kMagic, kEnvelopeMagicSize);
  unsigned char* nonce = out + kEnvelopeMagicSize;
  DST_CHECK(RAND_bytes(nonce, static_cast<int>(kEnvelopeNonceSize)) == 1, CheckpointError,
            what << ": cannot generate a random nonce (" << openssl_error() << ")");
  CipherContext context =
      start_cipher(EncryptionKeyAccess::bytes(key), nonce, 1, associated_data, what);
  cipher_update(context.get(), out + kHeaderSize, bytes_of(plaintext), plaintext.size(), what);
  int written = 0;
  unsigned char* tag = out + kHeaderSize + plaintext.size();
  const bool ok = EVP_CipherFinal_ex(context.get(), tag, &written) == 1 && written == 0 &&
                  EVP_CIPHER_CTX_ctrl(context.get(), EVP_CTRL_GCM_GET_TAG,
                                      static_cast<int>(kEnvelopeTagSize), tag) == 1;
  DST_CHECK(ok, CheckpointError,
            what << ": AES-256-GCM encryption failed (" << openssl_error() << ")");
  return envelope;
}

std::optional<EncryptionKey> load_encryption_key(const EncryptionKeySource& source) {
  if (!source.key_file.empty()) return EncryptionKey::from_file(source.key_file);
  if (!source.key_env.empty()) return EncryptionKey::from_env(source.key_env);
  return std::nullopt;
}

std::string decrypt_bytes(const EncryptionKey& key, const std::string& envelope,
                          const std::string& associated_data, const std::string& what) {
  DST_CHECK(envelope.size() >= kEnvelopeMagicSize, CheckpointError,
            what << ": not an encrypted file (" << envelope.size() << " bytes, shorter than the "
                 << kEnvelopeMagicSize << "-byte magic)");
  DST_CHECK(is_encrypted_envelope(envelope), CheckpointError,
            what << ": not an encrypted file (no DSTAES1 magic)");
  DST_CHECK(envelope.size() >= kEnvelopeOverhead, CheckpointError,
            what << ": not an encrypted file (truncated: " << envelope.size()
                 << " bytes, an envelope has at least " << kEnvelopeOverhead << ")");
  const unsigned char* in = bytes_of(envelope);
  const std::size_t ciphertext_size = envelope.size() - kEnvelopeOverhead;
  CipherContext context = start_cipher(EncryptionKeyAccess::bytes(key), in + kEnvelopeMagicSize, 0,
                                       associated_data, what);
  std::string plaintext(ciphertext_size, '\0');
  auto* out = reinterpret_cast<unsigned char*>(plaintext.data());
  cipher_update(context.get(), out, in + kHeaderSize, ciphertext_size, what);
  unsigned char tag[kEnvelopeTagSize];
  std::memcpy(tag, in + kHeaderSize + ciphertext_size, kEnvelopeTagSize);
  int written = 0;
  const bool authentic = EVP_CIPHER_CTX_ctrl(context.get(), EVP_CTRL_GCM_SET_TAG,
                                             static_cast<int>(kEnvelopeTagSize), tag) == 1 &&
                         EVP_CipherFinal_ex(context.get(), out + ciphertext_size, &written) == 1;
  if (!authentic) {
    ERR_clear_error();
    OPENSSL_cleanse(out, ciphertext_size);  // never leave unauthenticated plaintext around
    DST_THROW(CheckpointError,
              what << ": authentication failed (wrong key or the file was modified)");
  }
  return plaintext;
}

void encrypt_file_in_place(const EncryptionKey& key, const std::string& path,
                           const std::string& associated_data) {
  const std::string plaintext = read_file_bytes(path);
  DST_CHECK(!is_encrypted_envelope(plaintext), CheckpointError,
            path << ": already an encrypted file (refusing to encrypt it twice)");
  write_file_atomically(path, encrypt_bytes(key, plaintext, associated_data, path));
}

std::string read_and_decrypt_file(const EncryptionKey& key, const std::string& path,
                                  const std::string& associated_data) {
  return decrypt_bytes(key, read_file_bytes(path), associated_data, path);
}

std::string read_file_bytes(const std::string& path) {
  std::string bytes;
  std::error_code ec;
  const auto expected = std::filesystem::file_size(path, ec);
  if (!ec) bytes.reserve(static_cast<std::size_t>(expected));
  read_file_blocks(path, [&](const char* data, std::size_t size) { bytes.append(data, size); });
  return bytes;
}

}  // namespace dst
