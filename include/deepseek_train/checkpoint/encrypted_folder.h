// Exports encrypted at rest (`dstrain ckpt convert --encrypt-key-file`,
// `checkpoint.encrypt_exports`): an export is written into a private staging folder on
// memory-backed storage (/dev/shm when there is one) and each of its files is sealed on its own
// into the destination (core/crypto.h's AES-256-GCM envelope, associated data its file name, so
// files cannot be swapped) — plaintext never reaches the destination's disk. Such a folder is
// opened again for reading with the key: each file is decrypted into an anonymous in-memory file
// of this process (memfd) reached through a private folder of symbolic links (/proc/self/fd/N),
// so every reader that takes a path works unchanged and the plaintext vanishes with the process.
// Transformers and llama.cpp need plaintext: exports stay plaintext unless asked.
#pragma once

#include <string>
#include <vector>

#include "deepseek_train/core/crypto.h"

namespace dst {

// A private (0700) folder where an export is written before sealing; removed with the object.
class ExportStaging {
 public:
  ExportStaging();  // IoError when no folder can be created
  ~ExportStaging();
  ExportStaging(const ExportStaging&) = delete;
  ExportStaging& operator=(const ExportStaging&) = delete;
  const std::string& path() const { return path_; }
  // Seals every regular file of the staging folder into `destination` (created when missing)
  // under the same name, each written atomically. IoError naming a file that cannot be written.
  void seal_into(const EncryptionKey& key, const std::string& destination) const;

 private:
  std::string path_;
};

// Whether `dir` is a folder holding at least one sealed file.
bool folder_is_encrypted(const std::string& dir);

// A sealed folder, readable through path() for this object's lifetime.
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
