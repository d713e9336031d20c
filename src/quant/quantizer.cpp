// Hessian accumulation and the layer error measure (the method registry is in methods.cpp).
#include "quant/quantizer.h"

#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <functional>

#include "lowbit/error.h"
#include "lowbit/threads.h"

namespace lowbit::quant {

namespace {
// The float cols x cols product of one block of rows (HessianAccumulator, layer_error), one per thread and kept:
// fresh pages for a 127 MB buffer cost more than the product itself on a VM that faults every page in, and a run
// would otherwise allocate one per block of rows of every site.
std::vector<float>& block_scratch(size_t n) {
  thread_local std::vector<float> block;
  block.resize(n);
  return block;
}

// out = X^T X for X rows x cols (row-major), upper triangle of the row-major cols x cols result (the strict lower one
// is left unspecified). Panels of output rows, one single-threaded SGEMM each (lowbit/threads.h): OpenBLAS's own
// threaded ssyrk splits by thread count, and its last bits then depend on -t (measured on a 2048-wide layer).
void gram_upper(const float* X, int64_t rows, int64_t cols, float* out) {
  const auto c = static_cast<blasint>(cols);
  parallel_fixed_chunks(cols, 128, [&](int64_t i0, int64_t i1) {
    // rows i0..i1 of the result, columns i0..cols: X[:, i0:i1]^T X[:, i0:]
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, static_cast<blasint>(i1 - i0), static_cast<blasint>(cols - i0),
                static_cast<blasint>(rows), 1.0f, X + i0, c, X + i0, c, 0.0f, out + i0 * cols + i0, c);
  });
}
}  // namespace

HessianAccumulator::HessianAccumulator(int64_t cols) : cols_(cols) {
  if (cols <= 0) fail("HessianAccumulator", "cols", "must be positive");
  sum_.assign(static_cast<size_t>(cols * cols), 0.0);
}

void HessianAccumulator::add_block(const float* X, int64_t rows, std::vector<double>& sum) const {
  const auto c = static_cast<size_t>(cols_);
  std::vector<float>& block = block_scratch(c * c);
  gram_upper(X, rows, cols_, block.data());  // block = X^T X, upper triangle
  for (size_t i = 0; i < c; ++i) {
    const float* b = block.data() + i * c;
    double* s = sum.data() + i * c;
    for (size_t j = i; j < c; ++j) s[j] += b[j];
  }
}

void HessianAccumulator::add(const float* X, int64_t n) {
  if (n <= 0) return;
  const auto c = static_cast<size_t>(cols_);
  n_ += n;
  // Top up a partial block first; whole blocks straight from X; the rest waits in pending_.
  if (pending_rows_ > 0) {
    const int64_t take = std::min(n, kBlockRows - pending_rows_);
    pending_.insert(pending_.end(), X, X + static_cast<size_t>(take) * c);
    pending_rows_ += take;
    X += static_cast<size_t>(take) * c;
    n -= take;
    if (pending_rows_ < kBlockRows) return;
    add_block(pending_.data(), pending_rows_, sum_);
    pending_.clear();
    pending_rows_ = 0;
  }
  for (; n >= kBlockRows; n -= kBlockRows, X += static_cast<size_t>(kBlockRows) * c) add_block(X, kBlockRows, sum_);
  if (n > 0) {
    pending_.assign(X, X + static_cast<size_t>(n) * c);
    pending_rows_ = n;
  }
}

LayerStats HessianAccumulator::stats() const {
  LayerStats s;
  s.cols = cols_;
  s.n_samples = n_;
  const size_t c = static_cast<size_t>(cols_);
  s.H.assign(c * c, 0.0);
  s.act_sq_mean.assign(c, 0.0);
  if (n_ == 0) return s;
  // The partial block is added into the result only (into the upper triangle of s.H, mirrored below), so that
  // later add() calls still see the same block boundaries.
  std::copy(sum_.begin(), sum_.end(), s.H.begin());
  if (pending_rows_ > 0) add_block(pending_.data(), pending_rows_, s.H);
  const double k = 2.0 / static_cast<double>(n_);
  for (size_t i = 0; i < c; ++i) {
    s.act_sq_mean[i] = s.H[i * c + i] / static_cast<double>(n_);
    for (size_t j = i; j < c; ++j) {
      const double v = k * s.H[i * c + j];
      s.H[i * c + j] = v;
      s.H[j * c + i] = v;
    }
  }
  return s;
}

double layer_error(const float* W, const float* Q, int64_t rows, int64_t cols, const LayerStats& stats) {
  if (stats.cols != cols || static_cast<int64_t>(stats.H.size()) != cols * cols)
    fail("layer_error", "stats.cols", "does not match the weight matrix");
  // sum_r d_r^T H d_r = <H, D^T D> with D = W - Q. The Gram matrix D^T D is built like the Hessian: one float
  // X^T X product per block of kBlockRows rows, summed in double (rows * cols^2 flops at SGEMM speed, compute-bound), then
  // one pass over H in double. One dsymv per row instead streamed all of H from memory for every row (a 5632-column
  // layer: 254 MB per row), which made this the costliest step of a calibrated run. The scratch is kept per thread:
  // fresh pages for a 254 MB Gram matrix cost more than the product on a VM that faults every page in.
  constexpr int64_t kBlockRows = HessianAccumulator::kBlockRows;
  const size_t c = static_cast<size_t>(cols);
  thread_local std::vector<double> gram;
  thread_local std::vector<float> d;
  gram.assign(c * c, 0.0);
  std::vector<float>& block = block_scratch(c * c);
  d.resize(static_cast<size_t>(std::min(rows, kBlockRows)) * c);
  for (int64_t r0 = 0; r0 < rows; r0 += kBlockRows) {
    const int64_t nr = std::min(kBlockRows, rows - r0);
    const size_t off = static_cast<size_t>(r0) * c;
    for (size_t k = 0; k < static_cast<size_t>(nr) * c; ++k) d[k] = W[off + k] - Q[off + k];
    gram_upper(d.data(), nr, cols, block.data());
    for (size_t i = 0; i < c; ++i)
      for (size_t j = i; j < c; ++j) gram[i * c + j] += block[i * c + j];
  }
  double total = 0.0;
  for (size_t i = 0; i < c; ++i) {
    const double* h = stats.H.data() + i * c;
    const double* g = gram.data() + i * c;
    double off_diag = 0.0;
    for (size_t j = i + 1; j < c; ++j) off_diag += h[j] * g[j];
    total += h[i] * g[i] + 2.0 * off_diag;
  }
  return total;
}

namespace detail {
size_t checked_row_bytes(const formats::Format& fmt, int64_t rows, int64_t cols, const char* who) {
  if (rows < 0 || cols <= 0)
    fail(who, "shape", "expected rows >= 0 and cols >= 1, got " + std::to_string(rows) + " x " + std::to_string(cols));
  return formats::row_bytes(fmt, cols);
}

void check_finite(const float* W, int64_t rows, int64_t cols, const char* who) {
  // Checked up front: the quantizers' parallel loops must not throw (an exception cannot leave an OpenMP region).
  const int64_t n = rows * cols;
  for (int64_t k = 0; k < n; ++k)
    if (!std::isfinite(W[k]))
      fail(who, "weights", "non-finite weight " + std::to_string(W[k]) + " at row " + std::to_string(k / cols) +
                               ", column " + std::to_string(k % cols));
}
}  // namespace detail

}  // namespace lowbit::quant
