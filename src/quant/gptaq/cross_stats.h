// GPTAQ's calibration statistic: the cross term between the inputs the full-precision model and the quantized model
// give one linear layer on the same tokens (asymmetric calibration).
#pragma once
#include <cstdint>
#include <vector>

#include "quant/quantizer.h"

namespace lowbit::quant {

// Accumulates C = 2/N sum_s (x_fp - x_q)_s x_q_s^T (cols x cols, row-major: C[i][j] = 2/N sum_s D[s][i] X~[s][j]
// with D = X_fp - X~), in double (BLAS dgemm), over batches of rows of X_fp and X_q (n x cols each, row-major, row s
// of both from the same token). The layer's H comes from a HessianAccumulator fed the same X_q rows: both use the
// same 2/N normalisation, so attach() puts C next to that H.
class CrossAccumulator {
 public:
  explicit CrossAccumulator(int64_t cols);
  void add(const float* X_fp, const float* X_q, int64_t n);
  int64_t cols() const { return cols_; }
  int64_t n_samples() const { return n_; }
  std::vector<double> cross() const;  // C normalised by the samples seen so far (zeros before any)
  // stats.cross = cross(); stats must be the HessianAccumulator's over the same X_q rows (same cols and n_samples).
  void attach(LayerStats& stats) const;

 private:
  int64_t cols_;
  int64_t n_ = 0;
  std::vector<double> sum_;  // sum_s D_s X~_s^T (row-major, full)
  std::vector<double> d_, xq_;
};

}  // namespace lowbit::quant
