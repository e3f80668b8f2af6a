// Atomic file writes: content goes to a temporary file beside the destination, is flushed to disk
// and renamed over it, so readers see the old file or the new one, never a half-written one.
#pragma once

#include <functional>
#include <string>

namespace dst {

// A temporary name beside `path` that is unique to this process.
std::string temporary_path_for(const std::string& path);

// fsyncs `temporary` and renames it to `path` (creating no directories). Removes `temporary` and
// throws IoError naming both on failure.
void commit_temporary(const std::string& temporary, const std::string& path);

// Creates the parent directories of `path`; throws IoError naming them on failure.
void create_parent_directories(const std::string& path);

// Writes `contents` to `path` atomically (parent directories created). Throws IoError.
void write_file_atomically(const std::string& path, const std::string& contents);

// Calls `write(temporary_path)` and commits the result atomically; on any exception the temporary
// is removed and the exception propagates (the destination is untouched).
void write_atomically(const std::string& path,
                      const std::function<void(const std::string&)>& write);

}  // namespace dst
