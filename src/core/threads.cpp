#include "lowbit/threads.h"

#include <omp.h>

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

}  // namespace lowbit
