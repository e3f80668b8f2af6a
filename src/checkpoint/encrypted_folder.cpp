#include "deepseek_train/checkpoint/encrypted_folder.h"

#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>

#include "deepseek_train/core/atomic_file.h"
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

// A new private folder under `parent`; empty when it cannot be made there.
std::string private_folder_under(const fs::path& parent, const char* prefix) {
  std::string pattern = (parent / (std::string(prefix) + "XXXXXX")).string();
  return ::mkdtemp(pattern.data()) != nullptr ? pattern : std::string();
}

ExportStaging::ExportStaging() {
  std::error_code ec;
  if (fs::is_directory("/dev/shm", ec)) path_ = private_folder_under("/dev/shm", "dstrain-export-");
  if (path_.empty()) path_ = private_folder_under(fs::temp_directory_path(), "dstrain-export-");
  DST_CHECK(
      !path_.empty(), IoError,
      "cannot create a private staging folder for an encrypted export: " << std::strerror(errno));
}

ExportStaging::~ExportStaging() {
  std::error_code ec;
  fs::remove_all(path_, ec);
}

void ExportStaging::seal_into(const EncryptionKey& key, const std::string& destination) const {
  fs::create_directories(destination);
  for (const fs::path& file : regular_files(path_)) {
    const std::string name = file.filename().string();
    const std::string target = (fs::path(destination) / name).string();
    std::string plaintext = read_file_bytes(file.string());
    const std::string sealed = encrypt_bytes(key, plaintext, name, target);
    std::fill(plaintext.begin(), plaintext.end(), '\0');
    write_file_atomically(target, sealed);
  }
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
      if (fd >= 0) descriptors_.push_back(fd);
      const bool written = fd >= 0 && write_all(fd, plaintext);
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
