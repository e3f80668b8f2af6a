// Library version.
#pragma once

namespace dst {
inline constexpr const char* kVersion = "0.1.0";
}  // namespace dst
