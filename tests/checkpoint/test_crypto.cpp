#include <unistd.h>

#include <catch2/catch.hpp>
#include <cctype>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <vector>

#include "deepseek_train/checkpoint/encrypted_folder.h"
#include "deepseek_train/core/crypto.h"
#include "deepseek_train/core/error.h"

using namespace dst;

namespace {

namespace fs = std::filesystem;

const std::string kKeyHex = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
const std::string kOtherKeyHex = "f0e1d2c3b4a5968778695a4b3c2d1e0ff0e1d2c3b4a5968778695a4b3c2d1e0f";

fs::path test_dir() {
  const fs::path dir = fs::temp_directory_path() / "dst_crypto_test";
  fs::create_directories(dir);
  return dir;
}

std::string raw_key_bytes() {
  std::string raw;
  for (int i = 0; i < 32; ++i) raw.push_back(static_cast<char>(i));
  return raw;
}

void write_file(const fs::path& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << bytes;
}

// Deterministic, non-trivial content of `size` bytes.
std::string pattern_bytes(std::size_t size) {
  std::string bytes(size, '\0');
  unsigned state = 12345;
  for (auto& c : bytes) {
    state = state * 1103515245u + 12345u;
    c = static_cast<char>(state >> 16);
  }
  return bytes;
}

// The message of the E thrown by f(); fails the test when f() does not throw E.
template <typename E, typename F>
std::string message_of(F&& f) {
  try {
    f();
  } catch (const E& e) {
    return e.what();
  }
  FAIL("expected an exception");
  return "";
}

bool contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

}  // namespace

TEST_CASE("crypto: SHA-256 known vectors, incremental and file hashes", "[checkpoint]") {
  CHECK(sha256_hex(std::string()) ==
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  CHECK(sha256_hex(std::string("abc")) ==
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  CHECK(sha256_hex("abc", 3) == sha256_hex(std::string("abc")));

  Sha256 hasher;
  hasher.update("a", 1);
  hasher.update(std::string("bc"));
  CHECK(hasher.hex_digest() == sha256_hex(std::string("abc")));
  CHECK_THROWS_AS(hasher.update("x", 1), InternalError);
  // reset() starts a new digest on the same hasher.
  hasher.reset();
  hasher.update(std::string("abc"));
  const Sha256Digest raw = hasher.digest();
  CHECK(to_hex(raw) == sha256_hex(std::string("abc")));

  const std::string content = pattern_bytes((std::size_t{1} << 20) * 2 + 12345);
  const fs::path path = test_dir() / "hash_me.bin";
  write_file(path, content);
  const std::string digest = sha256_file_hex(path.string());
  CHECK(digest == sha256_hex(content));
  CHECK(digest.size() == 64);
  CHECK(digest.find_first_not_of("0123456789abcdef") == std::string::npos);

  const fs::path empty = test_dir() / "empty.bin";
  write_file(empty, "");
  CHECK(sha256_file_hex(empty.string()) == sha256_hex(std::string()));

  const std::string missing = (test_dir() / "no_such_file.bin").string();
  CHECK(contains(message_of<IoError>([&] { sha256_file_hex(missing); }), missing));
}

TEST_CASE("crypto: keys from raw and hex files and the environment", "[checkpoint]") {
  const EncryptionKey reference = EncryptionKey::from_bytes(raw_key_bytes());

  const fs::path raw = test_dir() / "raw.key";
  write_file(raw, raw_key_bytes());
  CHECK(EncryptionKey::from_file(raw.string()).fingerprint() == reference.fingerprint());

  const fs::path hex = test_dir() / "hex.key";
  write_file(hex, kKeyHex + "\n");
  CHECK(EncryptionKey::from_file(hex.string()).fingerprint() == reference.fingerprint());

  const fs::path padded = test_dir() / "padded.key";
  std::string upper = kKeyHex;
  for (auto& c : upper) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  write_file(padded, "  \t" + upper + "\r\n\n");
  CHECK(EncryptionKey::from_file(padded.string()).fingerprint() == reference.fingerprint());

  const std::string variable = "DST_CRYPTO_TEST_KEY";
  ::setenv(variable.c_str(), kKeyHex.c_str(), 1);
  CHECK(EncryptionKey::from_env(variable).fingerprint() == reference.fingerprint());
  ::setenv(variable.c_str(), (kKeyHex + "\n").c_str(), 1);
  CHECK(EncryptionKey::from_env(variable).fingerprint() == reference.fingerprint());
  ::unsetenv(variable.c_str());

  // A key from the file encrypts what the reference key decrypts.
  const std::string sealed =
      encrypt_bytes(EncryptionKey::from_file(hex.string()), "payload", "context");
  CHECK(decrypt_bytes(reference, sealed, "context", "sealed") == "payload");
}

TEST_CASE("crypto: malformed or missing keys fail without revealing them", "[checkpoint]") {
  const std::vector<std::string> bad_contents = {
      kKeyHex.substr(0, 63),                             // one hex character short
      kKeyHex + "0",                                     // one too many
      kKeyHex.substr(0, 62) + "zz",                      // not hex
      kKeyHex.substr(0, 32) + " " + kKeyHex.substr(32),  // whitespace inside
      raw_key_bytes() + "x",                             // 33 raw bytes
      raw_key_bytes().substr(0, 31),                     // 31 raw bytes
      "",                                                // empty
      std::string(10000, 'a'),                           // far too long
  };
  for (std::size_t i = 0; i < bad_contents.size(); ++i) {
    CAPTURE(i);
    const std::string path = (test_dir() / ("bad" + std::to_string(i) + ".key")).string();
    write_file(path, bad_contents[i]);
    const std::string message = message_of<ConfigError>([&] { EncryptionKey::from_file(path); });
    CHECK(contains(
        message, "encryption key file '" + path + "': expected 32 raw bytes or 64 hex characters"));
    CHECK(message.find('\n') == std::string::npos);
    CHECK_FALSE(contains(message, kKeyHex.substr(0, 16)));
    CHECK_FALSE(contains(message, kKeyHex.substr(40, 16)));
  }

  const std::string missing = (test_dir() / "missing.key").string();
  CHECK(contains(message_of<ConfigError>([&] { EncryptionKey::from_file(missing); }), missing));

  const std::string variable = "DST_CRYPTO_TEST_UNSET_KEY";
  ::unsetenv(variable.c_str());
  CHECK(contains(message_of<ConfigError>([&] { EncryptionKey::from_env(variable); }), variable));
  ::setenv(variable.c_str(), "", 1);
  CHECK(contains(message_of<ConfigError>([&] { EncryptionKey::from_env(variable); }), variable));
  const std::string malformed = kKeyHex.substr(0, 60) + "wxyz";
  ::setenv(variable.c_str(), malformed.c_str(), 1);
  const std::string env_message =
      message_of<ConfigError>([&] { EncryptionKey::from_env(variable); });
  CHECK(contains(env_message, variable));
  CHECK_FALSE(contains(env_message, malformed.substr(0, 16)));
  ::unsetenv(variable.c_str());

  CHECK_THROWS_AS(EncryptionKey::from_bytes(std::string(31, 'k')), ConfigError);
  CHECK_THROWS_AS(EncryptionKey::from_bytes(std::string(33, 'k')), ConfigError);
}

TEST_CASE("crypto: key fingerprints are stable, short and do not reveal the key", "[checkpoint]") {
  const EncryptionKey a = EncryptionKey::from_bytes(raw_key_bytes());
  const EncryptionKey b = EncryptionKey::from_bytes(raw_key_bytes());
  const std::string fingerprint = a.fingerprint();
  CHECK(fingerprint.size() == 16);
  CHECK(fingerprint.find_first_not_of("0123456789abcdef") == std::string::npos);
  CHECK(a.fingerprint() == fingerprint);
  CHECK(b.fingerprint() == fingerprint);
  CHECK(fingerprint == sha256_hex("deepseek_train-key-id" + raw_key_bytes()).substr(0, 16));
  CHECK_FALSE(contains(kKeyHex, fingerprint));

  ::setenv("DST_CRYPTO_TEST_OTHER_KEY", kOtherKeyHex.c_str(), 1);
  const EncryptionKey other = EncryptionKey::from_env("DST_CRYPTO_TEST_OTHER_KEY");
  ::unsetenv("DST_CRYPTO_TEST_OTHER_KEY");
  CHECK(other.fingerprint() != fingerprint);
  CHECK_FALSE(contains(kOtherKeyHex, other.fingerprint()));

  // Copies and moves keep the key.
  EncryptionKey copy = a;
  CHECK(copy.fingerprint() == fingerprint);
  copy = other;
  CHECK(copy.fingerprint() == other.fingerprint());
  EncryptionKey moved = std::move(copy);
  CHECK(moved.fingerprint() == other.fingerprint());
}

TEST_CASE("crypto: encrypt/decrypt round trips with fresh nonces", "[checkpoint]") {
  const EncryptionKey key = EncryptionKey::from_bytes(raw_key_bytes());
  for (const std::size_t size :
       {std::size_t{0}, std::size_t{1}, std::size_t{100}, std::size_t{3} << 20}) {
    CAPTURE(size);
    const std::string plaintext = pattern_bytes(size);
    const std::string envelope = encrypt_bytes(key, plaintext, "shard-0");
    CHECK(envelope.size() == plaintext.size() + kEnvelopeOverhead);
    CHECK(is_encrypted_envelope(envelope));
    CHECK(envelope.compare(0, 8, std::string("DSTAES1\0", 8)) == 0);
    if (size >= 100) CHECK_FALSE(contains(envelope, plaintext.substr(0, 32)));
    CHECK(decrypt_bytes(key, envelope, "shard-0", "mem") == plaintext);
  }
  CHECK(decrypt_bytes(key, encrypt_bytes(key, "x", ""), "", "mem") == "x");

  const std::string plaintext = "the same checkpoint bytes";
  const std::string first = encrypt_bytes(key, plaintext, "ad");
  const std::string second = encrypt_bytes(key, plaintext, "ad");
  CHECK(first != second);
  CHECK(first.substr(8, 12) != second.substr(8, 12));  // different nonces
  CHECK(decrypt_bytes(key, first, "ad", "first") == plaintext);
  CHECK(decrypt_bytes(key, second, "ad", "second") == plaintext);
  CHECK_FALSE(is_encrypted_envelope(plaintext));
  CHECK_FALSE(is_encrypted_envelope("DSTAES1"));
}

TEST_CASE("crypto: any changed byte, wrong key or other associated data fails", "[checkpoint]") {
  const EncryptionKey key = EncryptionKey::from_bytes(raw_key_bytes());
  const std::string plaintext = pattern_bytes(1000);
  const std::string envelope = encrypt_bytes(key, plaintext, "step-42");
  const std::string what = "/ckpt/step-42/shard-0.bin";
  const std::string auth_failed =
      what + ": authentication failed (wrong key or the file was modified)";

  const std::size_t n = envelope.size();
  const std::vector<std::size_t> positions = {
      0,      3,        7,       // magic
      8,      13,       19,      // nonce
      20,     20 + 500, n - 17,  // ciphertext: first, middle, last
      n - 16, n - 8,    n - 1};  // tag
  for (const std::size_t position : positions) {
    for (const unsigned char flip : {0x01, 0x80, 0xff}) {
      CAPTURE(position, static_cast<int>(flip));
      std::string tampered = envelope;
      tampered[position] = static_cast<char>(tampered[position] ^ flip);
      const std::string message =
          message_of<CheckpointError>([&] { decrypt_bytes(key, tampered, "step-42", what); });
      CHECK(contains(message, what));
      CHECK(message.find('\n') == std::string::npos);
      if (position < 8) {
        CHECK(contains(message, what + ": not an encrypted file ("));
      } else {
        CHECK(contains(message, auth_failed));
      }
    }
  }

  ::setenv("DST_CRYPTO_TEST_WRONG_KEY", kOtherKeyHex.c_str(), 1);
  const EncryptionKey wrong = EncryptionKey::from_env("DST_CRYPTO_TEST_WRONG_KEY");
  ::unsetenv("DST_CRYPTO_TEST_WRONG_KEY");
  CHECK(contains(
      message_of<CheckpointError>([&] { decrypt_bytes(wrong, envelope, "step-42", what); }),
      auth_failed));
  CHECK(
      contains(message_of<CheckpointError>([&] { decrypt_bytes(key, envelope, "step-43", what); }),
               auth_failed));
  CHECK(contains(message_of<CheckpointError>([&] { decrypt_bytes(key, envelope, "", what); }),
                 auth_failed));
  const std::string no_ad = encrypt_bytes(key, plaintext, "");
  CHECK(contains(message_of<CheckpointError>([&] { decrypt_bytes(key, no_ad, "x", what); }),
                 auth_failed));

  // Truncation: too short for an envelope, or missing tag bytes.
  for (const std::size_t length :
       {std::size_t{0}, std::size_t{5}, std::size_t{8}, std::size_t{20}, kEnvelopeOverhead - 1}) {
    CAPTURE(length);
    const std::string message = message_of<CheckpointError>(
        [&] { decrypt_bytes(key, envelope.substr(0, length), "step-42", what); });
    CHECK(contains(message, what + ": not an encrypted file ("));
  }
  for (const std::size_t cut : {std::size_t{1}, std::size_t{16}, std::size_t{500}}) {
    CAPTURE(cut);
    CHECK(contains(message_of<CheckpointError>(
                       [&] { decrypt_bytes(key, envelope.substr(0, n - cut), "step-42", what); }),
                   auth_failed));
  }
  CHECK(contains(
      message_of<CheckpointError>([&] { decrypt_bytes(key, envelope + "x", "step-42", what); }),
      auth_failed));
  CHECK(
      contains(message_of<CheckpointError>([&] { decrypt_bytes(key, plaintext, "step-42", what); }),
               what + ": not an encrypted file ("));
}

TEST_CASE("crypto: file helpers round trip and detect a modified file", "[checkpoint]") {
  const EncryptionKey key = EncryptionKey::from_bytes(raw_key_bytes());
  const fs::path dir = test_dir() / "files";
  fs::remove_all(dir);
  fs::create_directories(dir);
  const std::string path = (dir / "model.h5").string();
  const std::string plaintext = pattern_bytes((std::size_t{1} << 20) + 777);
  write_file(path, plaintext);

  CHECK(read_file_bytes(path) == plaintext);
  CHECK_FALSE(file_is_encrypted(path));
  const std::string plain_digest = sha256_file_hex(path);

  encrypt_file_in_place(key, path, "model.h5");
  CHECK(file_is_encrypted(path));
  CHECK(fs::file_size(path) == plaintext.size() + kEnvelopeOverhead);
  CHECK(sha256_file_hex(path) != plain_digest);
  for (const auto& entry : fs::directory_iterator(dir))
    CHECK(entry.path().filename() == "model.h5");  // no temporary left behind
  CHECK(read_and_decrypt_file(key, path, "model.h5") == plaintext);

  // Encrypting twice is refused and leaves the file as it was.
  const std::string sealed = read_file_bytes(path);
  CHECK(contains(message_of<CheckpointError>([&] { encrypt_file_in_place(key, path, "model.h5"); }),
                 path));
  CHECK(read_file_bytes(path) == sealed);

  // One changed byte on disk.
  std::string tampered = sealed;
  tampered[tampered.size() / 2] = static_cast<char>(tampered[tampered.size() / 2] ^ 0x10);
  write_file(path, tampered);
  CHECK(contains(message_of<CheckpointError>([&] { read_and_decrypt_file(key, path, "model.h5"); }),
                 path + ": authentication failed (wrong key or the file was modified)"));

  // A plain file read as encrypted, a short file, and missing files.
  const std::string short_path = (dir / "short.bin").string();
  write_file(short_path, "DST");
  CHECK_FALSE(file_is_encrypted(short_path));
  CHECK(contains(
      message_of<CheckpointError>([&] { read_and_decrypt_file(key, short_path, "model.h5"); }),
      short_path + ": not an encrypted file ("));
  const std::string missing = (dir / "missing.bin").string();
  CHECK(contains(message_of<IoError>([&] { read_file_bytes(missing); }), missing));
  CHECK(contains(message_of<IoError>([&] { file_is_encrypted(missing); }), missing));
  CHECK(contains(message_of<IoError>([&] { read_and_decrypt_file(key, missing, ""); }), missing));
  CHECK(contains(message_of<IoError>([&] { encrypt_file_in_place(key, missing, ""); }), missing));
  CHECK_FALSE(fs::exists(missing));

  fs::remove_all(dir);
}

TEST_CASE("encrypted exports: staged, every file sealed, read back through in-memory files",
          "[checkpoint]") {
  const std::filesystem::path dir = std::filesystem::temp_directory_path() /
                                    ("dst_encrypted_export_" + std::to_string(::getpid()));
  std::filesystem::remove_all(dir);
  const std::map<std::string, std::string> files = {
      {"config.json", "{\"hidden_size\": 8}"}, {"model.safetensors", std::string(5000, '\x07')}};
  const EncryptionKey key = EncryptionKey::from_bytes(std::string(32, 'k'));
  std::string staged;
  {
    const ExportStaging staging;
    staged = staging.path();
    CHECK((std::filesystem::status(staged).permissions() & std::filesystem::perms::others_all) ==
          std::filesystem::perms::none);  // private
    for (const auto& [name, content] : files) std::ofstream(staged + "/" + name) << content;
    CHECK_FALSE(folder_is_encrypted(staged));
    staging.seal_into(key, (dir / "export").string());
  }
  CHECK_FALSE(std::filesystem::exists(staged));  // the plaintext staging folder is gone
  CHECK(folder_is_encrypted((dir / "export").string()));
  for (const auto& [name, content] : files)
    CHECK(read_file_bytes((dir / "export" / name).string()).find(content) == std::string::npos);
  std::string links;
  {
    const DecryptedFolder opened((dir / "export").string(), key);
    links = opened.path();
    for (const auto& [name, content] : files) {
      CHECK(read_file_bytes((std::filesystem::path(links) / name).string()) == content);
      CHECK(std::filesystem::is_symlink(std::filesystem::path(links) / name));  // no plaintext
    }
  }
  CHECK_FALSE(std::filesystem::exists(links));  // the links go with the object
  // Swapped files or another key: the file is named, nothing is left behind.
  std::filesystem::rename(dir / "export" / "config.json", dir / "export" / "other.json");
  CHECK_THROWS_WITH(DecryptedFolder((dir / "export").string(), key),
                    Catch::Contains("other.json: authentication failed"));
  std::filesystem::rename(dir / "export" / "other.json", dir / "export" / "config.json");
  CHECK_THROWS_WITH(
      DecryptedFolder((dir / "export").string(), EncryptionKey::from_bytes(std::string(32, 'x'))),
      Catch::Contains("authentication failed"));
  std::filesystem::remove_all(dir);
}
