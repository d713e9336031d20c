#include "quant/gptaq/cross_stats.h"

#include <cblas.h>

#include <string>

#include "lowbit/error.h"
#include "lowbit/threads.h"

namespace lowbit::quant {

CrossAccumulator::CrossAccumulator(int64_t cols) : cols_(cols) {
  if (cols <= 0) fail("CrossAccumulator", "cols", "must be positive");
  sum_.assign(static_cast<size_t>(cols * cols), 0.0);
}

void CrossAccumulator::add(const float* X_fp, const float* X_q, int64_t n) {
  if (n <= 0) return;
  const size_t m = static_cast<size_t>(n * cols_);
  d_.resize(m);
  xq_.resize(m);
  // In double, D is exact: two nearby floats differ by a value double holds exactly.
  for (size_t i = 0; i < m; ++i) {
    xq_[i] = X_q[i];
    d_[i] = static_cast<double>(X_fp[i]) - xq_[i];
  }
  // sum += D^T X~ (cols x cols).
  // In fixed chunks of output rows, so the sums do not depend on the thread count (lowbit/threads.h).
  const auto c = static_cast<blasint>(cols_);
  parallel_fixed_chunks(cols_, 64, [&](int64_t i0, int64_t i1) {
    cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, static_cast<blasint>(i1 - i0), c, static_cast<blasint>(n), 1.0,
                d_.data() + i0, c, xq_.data(), c, 1.0, sum_.data() + i0 * cols_, c);
  });
  n_ += n;
}

std::vector<double> CrossAccumulator::cross() const {
  std::vector<double> C(sum_.size(), 0.0);
  if (n_ == 0) return C;
  const double k = 2.0 / static_cast<double>(n_);
  for (size_t i = 0; i < C.size(); ++i) C[i] = k * sum_[i];
  return C;
}

void CrossAccumulator::attach(LayerStats& stats) const {
  if (stats.cols != cols_)
    fail("CrossAccumulator", "stats.cols",
         "expected " + std::to_string(cols_) + " (the cross term's), got " + std::to_string(stats.cols));
  if (stats.n_samples != n_)
    fail("CrossAccumulator", "stats.n_samples",
         "expected " + std::to_string(n_) + " (H and the cross term must see the same quantized-model rows), got " +
             std::to_string(stats.n_samples));
  stats.cross = cross();
}

}  // namespace lowbit::quant
