// Byte units used across moetune. GB is 1e9 bytes (datasheets, bandwidths); GiB is 2^30 (memory).
#pragma once

namespace moetune {

inline constexpr double kGiB = 1024.0 * 1024.0 * 1024.0;
inline constexpr double kGB = 1e9;

}  // namespace moetune
