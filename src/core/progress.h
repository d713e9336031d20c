// A one-line progress bar on stderr for anything that takes more than a few seconds.
// Silent when stderr is not a terminal unless forced; never writes to stdout (so --json stays clean).
#pragma once
#include <chrono>
#include <cstdint>
#include <string>

namespace lowbit {

class ProgressBar {
 public:
  ProgressBar(std::string label, int64_t total, bool enabled = true);
  ~ProgressBar();
  void update(int64_t done, const std::string& suffix = "");
  void finish(const std::string& suffix = "");

 private:
  std::string label_;
  int64_t total_;
  bool enabled_;
  bool finished_ = false;
  std::chrono::steady_clock::time_point start_, last_;
};

}  // namespace lowbit
