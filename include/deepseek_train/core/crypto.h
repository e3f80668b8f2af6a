// Encryption at rest for checkpoints and prepared corpora: 256-bit keys from a file or an
// environment variable, and AES-256-GCM sealed envelopes (OpenSSL 3 EVP) so files can be stored
// encrypted and any modification, wrong key or mismatched context is detected on load; SHA-256
// digests of files and bytes for manifests.
#pragma once

#include <array>
#include <cstddef>
#include <iosfwd>
#include <memory>
#include <optional>
#include <string>

#include "deepseek_train/core/sha256.h"  // checkpoint digests (sha256_hex, Sha256)

namespace dst {

// ---------------------------------------------------------------------------------------------
// Keys
// ---------------------------------------------------------------------------------------------

struct EncryptionKeyAccess;  // defined in crypto.cpp; the only reader of the key bytes

// A 256-bit AES key. Never printable (no operator<<, no to_string) and no error message ever
// contains key bytes. The bytes are wiped (OPENSSL_cleanse) when the object is destroyed; every
// copy holds its own bytes and wipes them.
class EncryptionKey {
 public:
  static constexpr std::size_t kSize = 32;

  // Key file content: exactly 32 raw bytes, or 64 hex characters (either case; surrounding
  // whitespace and a trailing newline allowed). Anything else throws ConfigError
  // "encryption key file '<path>': expected 32 raw bytes or 64 hex characters"; a missing or
  // unreadable file throws ConfigError naming the path.
  static EncryptionKey from_file(const std::string& path);
  // Environment variable holding 64 hex characters (surrounding whitespace allowed). Unset, empty
  // or malformed throws ConfigError naming the variable (never its value).
  static EncryptionKey from_env(const std::string& variable);
  // Exactly 32 raw bytes, else ConfigError. Meant for tests.
  static EncryptionKey from_bytes(const std::string& raw32);

  // A short, non-reversible identifier: the first 16 hex characters of
  // SHA-256("deepseek_train-key-id" + key), so a manifest can record which key was used.
  std::string fingerprint() const;

  EncryptionKey(const EncryptionKey&) = default;
  EncryptionKey& operator=(const EncryptionKey&) = default;
  EncryptionKey(EncryptionKey&&) = default;  // copies: the source keeps (and later wipes) its bytes
  EncryptionKey& operator=(EncryptionKey&&) = default;
  ~EncryptionKey();

  friend std::ostream& operator<<(std::ostream&, const EncryptionKey&) = delete;

 private:
  explicit EncryptionKey(const unsigned char* bytes);
  friend struct EncryptionKeyAccess;

  std::array<unsigned char, kSize> bytes_;
};

// Where a key comes from: the recipe keys <section>.encryption.key_file (32 raw bytes or 64 hex
// characters) and key_env (a variable holding 64 hex characters); at most one is set.
struct EncryptionKeySource {
  std::string key_file;
  std::string key_env;
  bool enabled() const { return !key_file.empty() || !key_env.empty(); }
};

// The key `source` names, or nullopt when it names none; errors as from_file / from_env.
std::optional<EncryptionKey> load_encryption_key(const EncryptionKeySource& source);

// ---------------------------------------------------------------------------------------------
// Sealed envelopes
// ---------------------------------------------------------------------------------------------
//
// Format: magic "DSTAES1\0" (8 bytes) | 12-byte random nonce | ciphertext | 16-byte GCM tag.
// The magic and the caller's associated data are authenticated (not encrypted). A fresh random
// nonce per message: keep well below 2^32 encryptions per key.

inline constexpr std::size_t kEnvelopeMagicSize = 8;
inline constexpr std::size_t kEnvelopeNonceSize = 12;
inline constexpr std::size_t kEnvelopeTagSize = 16;
inline constexpr std::size_t kEnvelopeOverhead =
    kEnvelopeMagicSize + kEnvelopeNonceSize + kEnvelopeTagSize;

// True when `bytes` starts with the envelope magic.
bool is_encrypted_envelope(const std::string& bytes);
// True when the file starts with the envelope magic (reads its first 8 bytes). A file shorter than
// that is not encrypted; one that cannot be opened or read throws IoError naming it.
bool file_is_encrypted(const std::string& path);

// Encrypts with AES-256-GCM under a fresh random nonce; `associated_data` is authenticated but not
// stored, so decryption needs the same value. `what` only labels errors (OpenSSL failures).
std::string encrypt_bytes(const EncryptionKey& key, const std::string& plaintext,
                          const std::string& associated_data,
                          const std::string& what = "checkpoint data");

// Decrypts an envelope; `what` names the source (a file path) in errors. A wrong key, any changed
// nonce, ciphertext or tag byte, or different associated data throws CheckpointError
// "<what>: authentication failed (wrong key or the file was modified)". Input too short to be an
// envelope or without the magic (including a changed magic byte) throws CheckpointError
// "<what>: not an encrypted file (...)". No unauthenticated plaintext is returned.
std::string decrypt_bytes(const EncryptionKey& key, const std::string& envelope,
                          const std::string& associated_data, const std::string& what);

// Reads `path` (which must not already be an envelope: CheckpointError), encrypts it and replaces
// the file atomically with the envelope.
void encrypt_file_in_place(const EncryptionKey& key, const std::string& path,
                           const std::string& associated_data);
// Reads and decrypts a file written by encrypt_file_in_place; errors name the path.
std::string read_and_decrypt_file(const EncryptionKey& key, const std::string& path,
                                  const std::string& associated_data);

// Whole file content. Throws IoError naming the path when it cannot be opened or read.
std::string read_file_bytes(const std::string& path);

}  // namespace dst
