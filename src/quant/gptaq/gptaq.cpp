// GPTAQ (Li et al., ICML 2025, "GPTAQ: Efficient Finetuning-Free Quantization for Asymmetric Calibration", first
// published as GPTQv2): GPTQ whose target is the full-precision model's output rather than the quantized model's.
//
// Objective. X~ (N x cols) are the inputs the partly quantized model gives this linear, X the full-precision model's
// on the same tokens, D = X - X~. With H = 2/N X~^T X~ and C = 2/N D^T X~ (LayerStats::H and ::cross), GPTAQ
// minimises, row by row,
//   J(q) = 2/N ||X~ q^T - X_a w^T||^2 + damp ||q - w||^2,   X_a = X~ + alpha D,
// where damp is GPTQ's (percdamp * mean diag H, with its escalations) and acts as a ridge towards w. alpha in [0, 1]
// moves the target from the quantized model's inputs (alpha = 0: plain GPTQ) to the full-precision model's
// (alpha = 1); it scales C because X_a^T X~ = X~^T X~ + alpha D^T X~.
//
// Closed form. Setting the gradient to zero: q H_d = w (H_d + alpha C) with H_d = H + damp I, so the unconstrained
// solution is  W* = W + alpha W C H_d^-1  and J(q) = (q - w*) H_d (q - w*)^T + const. Hence greedy rounding --
// round column j, then re-solve the least-squares problem for columns j+1.. given the rounded ones -- is exactly
// GPTQ started from W* with the Hessian H: GPTQ's update is that conditional least-squares optimum (OBS). This file
// computes W* = W + ((alpha W C) U^T) U with GPTQ's own factor U (H_d^-1 = U^T U, so the damping is the one the pass
// uses) and runs the unchanged GPTQ pass (gptq_core.h): format blocks fitted on the updated weights at a block's
// first column, act_order / static groups (then fitted on W*) as in GPTQ.
//
// Dead columns (x~_j = 0 on every token, diag H == 0): GPTQ zeroes their weights, which the quantized model never
// sees; their full-precision contribution w_j x_j stays in the target (W C uses the original w_j) and is carried by
// the other columns -- the official code zeroes w_j first and drops it.
//
// What the paper / official code (Intelligent-Computing-Lab-Yale/GPTAQ, gptaq_utils.py) do differently: they keep
// GPTQ's loop on W and fold the asymmetry in with P = alpha * triu_1(C U^T) U: after rounding column i, columns
// k > i also move by + w_i P[i][k]. A column's asymmetry term thus reaches only the columns after it, and only once
// the column itself is rounded: column 0 is rounded from w_0 itself, not from w*_0, and with rounding off the loop
// does not return W* (it returns W (I - P)^-1). Inside a lazy batch w_i is the pre-rounding value, across batches
// the rounded one (their W1 holds Q1 by then), so their result also depends on the batch size. alpha's default 0.25
// is theirs (fasterquant(alpha=0.25); hard-coded 0.25 in their spinquant and vit versions).
#include <cblas.h>

#include <cmath>
#include <memory>
#include <span>
#include <string>

#include "lowbit/error.h"
#include "lowbit/threads.h"
#include "quant/gptq_core.h"
#include "quant/quantizer.h"

namespace lowbit::quant {
namespace {

using detail::MatD;
using detail::MatDMap;

// W += alpha W C H_d^-1 (the least-squares target) with H_d^-1 = U^T U given in pass order (column i of the pass is
// original column perm[i]); C is cols x cols row-major in original order.
void move_to_least_squares(MatDMap& W, const MatDMap& U, std::span<const int64_t> perm, const std::vector<double>& C,
                           double alpha) {
  const int64_t rows = W.rows(), n = W.cols();
  if (rows == 0) return;
  MatD Wp(rows, n), Cp(n, n), T(rows, n);
  for (int64_t i = 0; i < n; ++i) {
    Wp.col(i) = W.col(perm[i]);
    for (int64_t j = 0; j < n; ++j) Cp(i, j) = C[perm[i] * n + perm[j]];
  }
  const auto c = static_cast<blasint>(n);
  // Rows in fixed chunks, so the result does not depend on the thread count (lowbit/threads.h).
  parallel_fixed_chunks(rows, 16, [&](int64_t r0, int64_t r1) {
    const auto r = static_cast<blasint>(r1 - r0);
    double* t = T.data() + r0 * n;
    cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, r, c, c, alpha, Wp.data() + r0 * n, c, Cp.data(), c, 0.0, t,
                c);  // T = alpha Wp Cp
    cblas_dtrmm(CblasRowMajor, CblasRight, CblasUpper, CblasTrans, CblasNonUnit, r, c, 1.0, U.data(), c, t,
                c);  // T = T U^T
    cblas_dtrmm(CblasRowMajor, CblasRight, CblasUpper, CblasNoTrans, CblasNonUnit, r, c, 1.0, U.data(), c, t,
                c);  // T = T U
  });
  for (int64_t i = 0; i < n; ++i) W.col(perm[i]) += T.col(i);
}

class GptaqQuantizer final : public Quantizer {
 public:
  explicit GptaqQuantizer(const QuantOptions& opts) : opts_(opts) {}
  std::string name() const override { return "gptaq"; }

  QuantResult quantize(const float* W, int64_t rows, int64_t cols, const formats::Format& fmt,
                       const LayerStats* stats) const override {
    const double alpha = opts_.gptaq_alpha;
    if (!(alpha >= 0.0 && alpha <= 1.0))
      fail("gptaq", "gptaq_alpha", "must be in [0, 1], got " + std::to_string(alpha));
    if (stats == nullptr)
      fail("gptaq", "stats", "GPTAQ needs calibration statistics: H and the cross term of the full-precision inputs");
    if (stats->cross.empty())
      fail("gptaq", "stats.cross",
           "GPTAQ needs the full-precision model's inputs to this layer (asymmetric calibration): fill it with a "
           "CrossAccumulator");
    if (stats->cols != cols || static_cast<int64_t>(stats->cross.size()) != cols * cols)
      fail("gptaq", "stats.cross",
           "expected " + std::to_string(cols) + " x " + std::to_string(cols) + " values, got " +
               std::to_string(stats->cross.size()) + " (stats.cols " + std::to_string(stats->cols) + ")");
    bool asymmetric = false;
    for (size_t k = 0; k < stats->cross.size(); ++k) {
      const double v = stats->cross[k];
      if (!std::isfinite(v))
        fail("gptaq", "stats.cross",
             "non-finite value at row " + std::to_string(k / static_cast<size_t>(cols)) + ", column " +
                 std::to_string(k % static_cast<size_t>(cols)));
      asymmetric = asymmetric || v != 0.0;
    }
    // alpha = 0 or C = 0: W* = W, and GPTQ's bytes exactly (no round trip through W + 0).
    detail::GptqStartHook start;
    if (alpha != 0.0 && asymmetric)
      start = [&](MatDMap& Wd, const MatDMap& U, std::span<const int64_t> perm) {
        move_to_least_squares(Wd, U, perm, stats->cross, alpha);
      };
    return detail::gptq_solve(W, rows, cols, fmt, stats, opts_, "gptaq", start);
  }

 private:
  QuantOptions opts_;
};

}  // namespace

std::unique_ptr<Quantizer> make_gptaq_quantizer(const QuantOptions& opts) {
  return std::make_unique<GptaqQuantizer>(opts);
}

}  // namespace lowbit::quant
