// Exports encrypted at rest (`dstrain ckpt convert --encrypt-key-file`): every file of an export
// folder sealed on its own (core/crypto.h's AES-256-GCM envelope, associated data its file name,
// so files cannot be swapped), and such a folder opened again for reading with the key. Reading
// decrypts each file into an anonymous in-memory file of this process (memfd) reached through a
// private folder of symbolic links (/proc/self/fd/N), so every reader that takes a path works
// unchanged while the plaintext never touches a file system and vanishes with the process.
// Transformers and llama.cpp need plaintext: exports stay plaintext unless asked.
#pragma once

#include <string>
#include <vector>

#include "deepseek_train/core/crypto.h"

namespace dst {

// Seals every regular file directly in `dir` (a single file: that file) in place.
// CheckpointError when one already is an envelope; IoError naming a file that cannot be
// rewritten.
void encrypt_export(const EncryptionKey& key, const std::string& path);

// Whether `dir` is a folder holding at least one sealed file.
bool folder_is_encrypted(const std::string& dir);

// A folder sealed by encrypt_export, readable through path() for this object's lifetime.
class DecryptedFolder {
 public:
  // CheckpointError naming the file when one does not authenticate (changed, another key's),
  // or when a file of the folder is not sealed.
  DecryptedFolder(const std::string& dir, const EncryptionKey& key);
  ~DecryptedFolder();
  DecryptedFolder(const DecryptedFolder&) = delete;
  DecryptedFolder& operator=(const DecryptedFolder&) = delete;
  // The folder of links to the decrypted files (same file names as `dir`).
  const std::string& path() const { return links_; }

 private:
  void release();  // removes the links and frees the in-memory files
  std::string links_;
  std::vector<int> descriptors_;
};

}  // namespace dst
