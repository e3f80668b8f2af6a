#include "deepseek_train/core/atomic_file.h"

#include <fcntl.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>

#include "deepseek_train/core/error.h"

namespace dst {

std::string temporary_path_for(const std::string& path) {
  return path + ".tmp." + std::to_string(::getpid());
}

void create_parent_directories(const std::string& path) {
  const std::filesystem::path parent = std::filesystem::path(path).parent_path();
  if (parent.empty()) return;
  std::error_code ec;
  std::filesystem::create_directories(parent, ec);
  DST_CHECK(!ec, IoError, "cannot create directory '" << parent.string() << "': " << ec.message());
}

void commit_temporary(const std::string& temporary, const std::string& path) {
  const int fd = ::open(temporary.c_str(), O_RDONLY);
  const bool synced = fd >= 0 && ::fsync(fd) == 0;
  if (fd >= 0) ::close(fd);
  if (!synced || std::rename(temporary.c_str(), path.c_str()) != 0) {
    std::remove(temporary.c_str());
    DST_THROW(IoError,
              "cannot write '" << path << "' (flushing or renaming '" << temporary << "' failed)");
  }
}

void write_atomically(const std::string& path,
                      const std::function<void(const std::string&)>& write) {
  create_parent_directories(path);
  const std::string temporary = temporary_path_for(path);
  try {
    write(temporary);
  } catch (...) {
    std::remove(temporary.c_str());
    throw;
  }
  commit_temporary(temporary, path);
}

void write_file_atomically(const std::string& path, const std::string& contents) {
  write_atomically(path, [&](const std::string& temporary) {
    std::ofstream out(temporary, std::ios::binary | std::ios::trunc);
    out << contents;
    out.close();
    DST_CHECK(!out.fail(), IoError, "cannot write '" << temporary << "' (for '" << path << "')");
  });
}

}  // namespace dst
