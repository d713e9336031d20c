#include "lowbit/threads.h"

#include <omp.h>

#include <algorithm>
#include <fstream>
#include <set>
#include <string>
#include <atomic>
#include <thread>

extern "C" void openblas_set_num_threads(int);

namespace lowbit {

namespace {
int g_threads = 0;
}

int hardware_threads() {
  unsigned n = std::thread::hardware_concurrency();
  return n == 0 ? 1 : static_cast<int>(n);
}

int physical_cores() {
  std::set<std::pair<int, int>> cores;
  for (int cpu = 0; cpu < 4096; ++cpu) {
    const std::string dir = "/sys/devices/system/cpu/cpu" + std::to_string(cpu) + "/topology/";
    std::ifstream core(dir + "core_id"), package(dir + "physical_package_id");
    int c = -1, p = -1;
    if (!(core >> c)) {
      if (cpu >= hardware_threads()) break;
      continue;  // offline or hidden
    }
    package >> p;
    cores.emplace(p, c);
  }
  const int n = static_cast<int>(cores.size());
  return n > 0 ? std::min(n, hardware_threads()) : hardware_threads();
}

void set_num_threads(int n) {
  if (n <= 0) n = hardware_threads();
  g_threads = n;
  omp_set_num_threads(n);
  openblas_set_num_threads(n);
}

int num_threads() {
  if (g_threads <= 0) set_num_threads(0);
  return g_threads;
}

void parallel_fixed_chunks(int64_t n, int64_t chunk, const std::function<void(int64_t, int64_t)>& body) {
  if (n <= 0) return;
  chunk = chunk < 1 ? 1 : chunk;
  const int64_t chunks = (n + chunk - 1) / chunk;
  const int threads = num_threads();
  openblas_set_num_threads(1);
#pragma omp parallel for num_threads(threads) schedule(dynamic, 1)
  for (int64_t c = 0; c < chunks; ++c) body(c * chunk, std::min(n, (c + 1) * chunk));
  openblas_set_num_threads(threads);
}

namespace {
std::atomic<bool> g_deterministic{false};
}

void set_deterministic_blas(bool on) { g_deterministic = on; }
bool deterministic_blas() { return g_deterministic; }

}  // namespace lowbit
