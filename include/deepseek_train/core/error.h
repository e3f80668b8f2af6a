// Typed exceptions and DST_CHECK macros. Every failure in the library is thrown as one of these
// (never exit()), carrying the source location so a one-line message can say where it came from.
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>
#include <string_view>

namespace dst {

// Base class of every error the library throws. what() is a single line.
class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& message) : std::runtime_error(message) {}
};

// A recipe, command-line argument or option is wrong. The message names the key.
class ConfigError : public Error {
 public:
  using Error::Error;
};

// A collective failed, timed out, or was called with mismatched arguments.
class CommError : public Error {
 public:
  using Error::Error;
};

// Input data (corpus, tokenizer, dataset) is missing or malformed.
class DataError : public Error {
 public:
  using Error::Error;
};

// A checkpoint or weights file cannot be written or read.
class CheckpointError : public Error {
 public:
  using Error::Error;
};

// A file could not be created, written, flushed or renamed.
class IoError : public Error {
 public:
  using Error::Error;
};

// Training diverged: the loss or the gradients stayed non-finite (train.nonfinite policy).
class NumericsError : public Error {
 public:
  using Error::Error;
};

// An internal invariant was violated (a bug in the library, not in the input).
class InternalError : public Error {
 public:
  using Error::Error;
};

// File content made safe for a one-line error message: control characters escaped as \xNN, cut
// after max_length characters with "...".
std::string printable(std::string_view text, std::size_t max_length = 200);
// A nested message (from a library) kept on one line: newlines become spaces.
std::string one_line(std::string text);

namespace detail {
// Builds "message [file:line]" — source location last so the user-facing part reads first.
std::string with_location(const std::string& message, const char* file, int line);
}  // namespace detail

}  // namespace dst

// DST_THROW(ConfigError, "a " << b): throw a typed error with a streamed message and file:line.
#define DST_THROW(ErrorType, stream_expr)                                         \
  do {                                                                            \
    std::ostringstream dst_msg_stream_;                                           \
    dst_msg_stream_ << stream_expr;                                               \
    throw ::dst::ErrorType(                                                       \
        ::dst::detail::with_location(dst_msg_stream_.str(), __FILE__, __LINE__)); \
  } while (0)

// DST_CHECK(cond, ErrorType, "message " << x): throw ErrorType when cond is false.
#define DST_CHECK(cond, ErrorType, stream_expr)     \
  do {                                              \
    if (!(cond)) DST_THROW(ErrorType, stream_expr); \
  } while (0)

// Internal invariants: a failure is a library bug.
#define DST_ASSERT(cond, stream_expr) \
  DST_CHECK(cond, InternalError, "internal check failed: " #cond ": " << stream_expr)
