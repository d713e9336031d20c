#include "core/progress.h"

#include <unistd.h>

#include <cstdio>

namespace lowbit {

ProgressBar::ProgressBar(std::string label, int64_t total, bool enabled)
    : label_(std::move(label)), total_(total > 0 ? total : 1), enabled_(enabled && ::isatty(2)) {
  start_ = last_ = std::chrono::steady_clock::now();
}

ProgressBar::~ProgressBar() {
  if (enabled_ && !finished_) std::fputc('\n', stderr);
}

void ProgressBar::update(int64_t done, const std::string& suffix) {
  if (!enabled_) return;
  auto now = std::chrono::steady_clock::now();
  if (done < total_ && now - last_ < std::chrono::milliseconds(100)) return;
  last_ = now;
  const int width = 30;
  double frac = static_cast<double>(done) / static_cast<double>(total_);
  if (frac > 1) frac = 1;
  int filled = static_cast<int>(frac * width);
  double secs = std::chrono::duration<double>(now - start_).count();
  double eta = frac > 0 ? secs / frac - secs : 0;
  std::string bar(static_cast<size_t>(filled), '#');
  bar.append(static_cast<size_t>(width - filled), '.');
  std::fprintf(stderr, "\r%s [%s] %lld/%lld %5.1fs eta %5.1fs %s\033[K", label_.c_str(), bar.c_str(),
               static_cast<long long>(done), static_cast<long long>(total_), secs, eta, suffix.c_str());
  std::fflush(stderr);
}

void ProgressBar::finish(const std::string& suffix) {
  if (!enabled_ || finished_) return;
  update(total_, suffix);
  std::fputc('\n', stderr);
  finished_ = true;
}

}  // namespace lowbit
