// Partial outputs that must not survive an interrupted run. While a temp file is registered, SIGINT, SIGTERM
// and SIGHUP remove it, print one line and end the process with the signal (SIGKILL cannot be caught: issue 6's
// resumable quantization covers it).
#pragma once
#include <string>

namespace lowbit {

class TempFileGuard {
 public:
  explicit TempFileGuard(const std::string& path);  // registers path (installs the handlers on first use)
  ~TempFileGuard();                                  // unregisters it
  TempFileGuard(const TempFileGuard&) = delete;
  TempFileGuard& operator=(const TempFileGuard&) = delete;

 private:
  int slot_ = -1;
};

}  // namespace lowbit
