#include "core/temp_files.h"

#include <unistd.h>

#include <atomic>
#include <csignal>
#include <cstring>
#include <mutex>

namespace lowbit {

namespace {

constexpr int kSlots = 16;
constexpr size_t kPathMax = 4096;
// Fixed storage so the handler touches no allocator: a slot is live while its flag is set.
char g_paths[kSlots][kPathMax];
std::atomic<bool> g_live[kSlots];
std::once_flag g_install;
std::mutex g_mu;  // guards slot claiming (never taken in the handler)

void on_signal(int sig) {
  for (int i = 0; i < kSlots; ++i)
    if (g_live[i].load() && g_paths[i][0] != '\0') ::unlink(g_paths[i]);
  const char msg[] = "\nlowbit: interrupted; the partial output was removed\n";
  ssize_t ignored = ::write(2, msg, sizeof msg - 1);
  (void)ignored;
  std::signal(sig, SIG_DFL);
  std::raise(sig);
}

void install() {
  struct sigaction sa {};
  sa.sa_handler = on_signal;
  sigemptyset(&sa.sa_mask);
  for (int sig : {SIGINT, SIGTERM, SIGHUP}) ::sigaction(sig, &sa, nullptr);
}

}  // namespace

TempFileGuard::TempFileGuard(const std::string& path) {
  std::call_once(g_install, install);
  if (path.size() >= kPathMax) return;
  std::lock_guard<std::mutex> lock(g_mu);
  for (int i = 0; i < kSlots; ++i) {
    if (g_live[i].load()) continue;
    std::memcpy(g_paths[i], path.c_str(), path.size() + 1);
    g_live[i].store(true);
    slot_ = i;
    return;
  }
}

TempFileGuard::~TempFileGuard() {
  std::lock_guard<std::mutex> lock(g_mu);
  if (slot_ >= 0) g_live[slot_].store(false);
}

}  // namespace lowbit
