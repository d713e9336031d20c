// Partial outputs that must not survive an interrupted run. While a temp file is registered, SIGINT, SIGTERM
// and SIGHUP remove it, print one line and end the process with the signal. SIGKILL cannot be caught, so the
// writers avoid needing this: GgufWriter streams into an unnamed O_TMPFILE file that the kernel discards when
// the process dies (SIGKILL included) and registers a name here only for the instant between giving the finished
// file a name and renaming it into place. Registering "" removes nothing but still prints the line (used while
// the output is an unnamed file). Only a named-temp fallback (a filesystem without O_TMPFILE) can still leave
// "<out>.tmp.<pid>" behind after SIGKILL.
#pragma once
#include <string>

namespace lowbit {

class TempFileGuard {
 public:
  explicit TempFileGuard(const std::string& path);  // registers path (installs the handlers on first use); "" = none
  ~TempFileGuard();                                  // unregisters it
  TempFileGuard(const TempFileGuard&) = delete;
  TempFileGuard& operator=(const TempFileGuard&) = delete;

 private:
  int slot_ = -1;
};

}  // namespace lowbit
