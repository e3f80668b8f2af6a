#include "deepseek_train/checkpoint/encrypted_folder.h"

#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>

#include "deepseek_train/core/error.h"

namespace dst {

namespace fs = std::filesystem;

namespace {

std::vector<fs::path> regular_files(const fs::path& dir) {
  std::vector<fs::path> files;
  for (const auto& entry : fs::directory_iterator(dir))
    if (entry.is_regular_file()) files.push_back(entry.path());
  return files;
}

// Writes all of `bytes` to `fd`.
bool write_all(int fd, const std::string& bytes) {
  size_t done = 0;
  while (done < bytes.size()) {
    const ssize_t n = ::write(fd, bytes.data() + done, bytes.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    done += static_cast<size_t>(n);
  }
  return true;
}

}  // namespace

void encrypt_export(const EncryptionKey& key, const std::string& path) {
  if (!fs::is_directory(path)) {
    encrypt_file_in_place(key, path, fs::path(path).filename().string());
    return;
  }
  for (const fs::path& file : regular_files(path))
    encrypt_file_in_place(key, file.string(), file.filename().string());
}

bool folder_is_encrypted(const std::string& dir) {
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) return false;
  for (const fs::path& file : regular_files(dir))
    if (file_is_encrypted(file.string())) return true;
  return false;
}

DecryptedFolder::DecryptedFolder(const std::string& dir, const EncryptionKey& key) {
  std::string pattern = (fs::temp_directory_path() / "dstrain-decrypted-XXXXXX").string();
  DST_CHECK(::mkdtemp(pattern.data()) != nullptr, IoError,
            "cannot create a private folder for " << dir << ": " << std::strerror(errno));
  links_ = pattern;
  try {
    for (const fs::path& file : regular_files(dir)) {
      const std::string name = file.filename().string();
      std::string plaintext = read_and_decrypt_file(key, file.string(), name);
      const int fd = ::memfd_create(name.c_str(), MFD_CLOEXEC);
      DST_CHECK(fd >= 0, IoError, file.string() << ": memfd_create: " << std::strerror(errno));
      descriptors_.push_back(fd);
      const bool written = write_all(fd, plaintext);
      std::fill(plaintext.begin(), plaintext.end(), '\0');
      DST_CHECK(written, IoError, file.string() << ": cannot hold the decrypted file in memory");
      fs::create_symlink("/proc/self/fd/" + std::to_string(fd), fs::path(links_) / name);
    }
  } catch (...) {
    release();
    throw;
  }
}

DecryptedFolder::~DecryptedFolder() { release(); }

void DecryptedFolder::release() {
  std::error_code ec;
  if (!links_.empty()) fs::remove_all(links_, ec);
  links_.clear();
  for (int fd : descriptors_) ::close(fd);
  descriptors_.clear();
}

}  // namespace dst
