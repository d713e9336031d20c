// Calibration text -> token windows (floor 4). N windows of L tokens drawn, seeded and reproducibly, from the
// non-overlapping L-token slots of the tokenized file, so no calibration token is used twice.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace lowbit::calib {

struct CalibOptions {
  int samples = 128;    // N windows
  int len = 512;        // L tokens per window
  uint64_t seed = 0;
  int32_t bos = -1;     // >= 0: each window starts with BOS (as the model sees text at inference)
};

// Throws lowbit::Error naming `source` when the text holds fewer than N slots of L tokens.
std::vector<std::vector<int32_t>> sample_windows(const std::vector<int32_t>& tokens, const CalibOptions& o,
                                                 const std::string& source);

}  // namespace lowbit::calib
