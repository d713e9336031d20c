// lowbit quant (floor 5): matrix-level quantization algorithms. An algorithm decides WHICH representable value
// each weight gets; a formats::Format stores them (fit / round / encode). Any algorithm targets any format.
//
// Weights are row-major (rows x cols): a row is one output channel, cols is the input dimension, and the format's
// blocks run along the row. Every algorithm returns the encoded rows and their dequantized f32 values.
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "formats/format.h"

namespace lowbit::quant {

// Second-order statistics of a linear layer's inputs.
struct LayerStats {
  int64_t cols = 0;
  std::vector<double> H;             // cols x cols, row-major, H = 2/N * sum_x x x^T (symmetric, full)
  std::vector<double> act_sq_mean;   // cols: mean of x_j^2 over the samples (= diag(H) / 2)
  int64_t n_samples = 0;
  // cols x cols row-major: C = 2/N sum_s (x_fp - x_q)_s x_q_s^T, C[i][j] = 2/N sum_s D[s][i] X~[s][j]; empty: symmetric
  // calibration (GPTQ). H above is then the quantized model's inputs' (X~); see gptaq/cross_stats.h.
  std::vector<double> cross;
  // cols: per-column importance given from outside (an importance matrix file, llama.cpp's imatrix, io/imatrix.h):
  // the error weights of the format's fit instead of diag(H), whatever QuantOptions::use_importance says. rtn
  // accepts stats with only this (H empty). Empty: none.
  std::vector<float> importance;
};

// Accumulates H = 2/N * sum x x^T over batches of input rows X (n x cols, row-major). The rows are gathered into
// blocks of kBlockRows; each block's X^T X is a float BLAS product (in fixed panels, so thread-count independent),
// added into a double total. Float keeps the product at SGEMM speed (twice DGEMM's, and no widened copy of the
// batch); summing the blocks in double bounds the rounding by one block's: |error| <= kBlockRows * 2^-24 *
// sum |x_i x_j| (typically ~1e-6 relative). The result depends only on the sequence of rows, not on how add() calls
// split it.
class HessianAccumulator {
 public:
  static constexpr int64_t kBlockRows = 512;

  explicit HessianAccumulator(int64_t cols);
  void add(const float* X, int64_t n);
  int64_t cols() const { return cols_; }
  int64_t n_samples() const { return n_; }
  LayerStats stats() const;  // H and act_sq_mean normalised by the samples seen so far

 private:
  // sum += the float product of `rows` rows at X (upper triangle).
  void add_block(const float* X, int64_t rows, std::vector<double>& sum) const;

  int64_t cols_;
  int64_t n_ = 0;
  std::vector<double> sum_;      // sum x x^T over the full blocks, upper triangle valid (row-major)
  std::vector<float> pending_;   // rows of the current, not yet full block (pending_rows_ x cols)
  int64_t pending_rows_ = 0;
};

struct QuantResult {
  int64_t rows = 0;
  int64_t cols = 0;
  size_t row_bytes = 0;             // bytes of one encoded row
  std::vector<std::byte> data;      // rows * row_bytes: each row is ceil(cols / fmt.block()) blocks, in order
  std::vector<float> dequant;       // rows * cols: the decoded weights (fmt.decode of data)
};

struct QuantOptions {
  // rtn + gptq: pass the activation importance diag(H) (per column) to fmt.fit (LayerStats::importance, when
  // given, is used instead).
  bool use_importance = false;
  // gptq
  double percdamp = 0.01;     // H += percdamp * mean(diag H) * I
  int block_size = 128;       // lazy-batch width (rounded up to a multiple of fmt.block())
  bool act_order = false;     // quantize columns by decreasing diag(H); implies static_groups
  bool static_groups = false; // fit every block's params on the original weights before the pass
  // awq (quant/awq)
  int awq_grid = 20;          // alpha candidates in [0, 1) and clip steps
  bool awq_clip = true;       // clipping search when the solver is rtn
  double awq_alpha = -1;      // >= 0: use s = mean|x|^alpha without searching (tests, ablations)
  // rotate (quant/rotate)
  uint64_t rotate_seed = 0;
  bool rotate_heads = true;   // R2 besides R1
  // gptaq: how far the target moves towards the full-precision model's inputs, X~ + alpha (X - X~), i.e. alpha
  // scales stats.cross. 0.25: the official GPTAQ code's default (fasterquant(alpha=0.25)).
  double gptaq_alpha = 0.25;
};

class Quantizer {
 public:
  virtual ~Quantizer() = default;
  virtual std::string name() const = 0;
  // W: rows x cols row-major, any cols >= 1 (a partial last block is padded; see formats/format.h). stats may be null where the method allows
  // (rtn; or stats with only an importance); gptq needs it (stats->cols == cols), gptaq also stats->cross.
  virtual QuantResult quantize(const float* W, int64_t rows, int64_t cols, const formats::Format& fmt,
                               const LayerStats* stats) const = 0;
};

// "rtn", "gptq" or "gptaq", or a lowbit::Error naming the methods that exist.
std::unique_ptr<Quantizer> make_quantizer(std::string_view name, const QuantOptions& opts = {});
std::vector<std::string> quantizer_names();

// sum over rows of (w - q)^T H (w - q) = 2/N * ||W X^T - Q X^T||^2: the layer output error under the stats.
double layer_error(const float* W, const float* Q, int64_t rows, int64_t cols, const LayerStats& stats);

namespace detail {
// Shared by the algorithms: bytes of one encoded row; validates cols against the block size.
size_t checked_row_bytes(const formats::Format& fmt, int64_t rows, int64_t cols, const char* who);
// Throws lowbit::Error naming the first NaN/Inf weight.
void check_finite(const float* W, int64_t rows, int64_t cols, const char* who);
}  // namespace detail

}  // namespace lowbit::quant
