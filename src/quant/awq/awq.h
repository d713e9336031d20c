// AWQ (Lin et al. 2023, activation-aware weight quantization): the method "awq".
//
// Scales. For every site (a set of linears sharing one input x, io/arch.h) a per-input-channel scale
// s = mean|x|^alpha / sqrt(max * min) is searched over alpha in {0, 1/G, ..., (G-1)/G}; each candidate is scored
// by the output error of the site's quantized linears on the calibration inputs,
//   sum_k || (Q(W_k diag(s)) diag(s)^-1 - W_k) X^T ||^2 = sum_k sum_rows e^T H e  (H = 2/N X^T X, up to 2/N),
// Q being round-to-nearest in each linear's own format. The best s is folded: W_k <- W_k diag(s) and the
// producer divided by s (the RMSNorm weight, the value rows feeding attention's output, or ffn_up's rows), so
// the block computes the same function. With grouped-query attention a value row feeds every query head of its
// group, so the attention-output scales are shared within each KV group (mean|x| averaged over the group).
// alpha = 0 is s = 1: the search never does worse than plain RTN on its own measure.
//
// Clipping. Then, when the linears will be rounded to nearest (solver "rtn"), each block of each row of every
// linear except q/k (whose error shows only through attention scores) searches a clipping range
// max|w| * (1 - i/G), i = 0 .. G/2, minimising the block's output error e_b^T H_bb e_b, and its weights are
// clamped to the best one (AutoAWQ's auto_clip). With GPTQ / GPTAQ the clamping is skipped: their error
// feedback already moves weights, and clamping the target they feed back against only hurts there.
#pragma once
#include <memory>
#include <vector>

#include "quant/block_transform.h"

namespace lowbit::quant {

std::unique_ptr<BlockTransform> make_awq_transform(const QuantOptions& q);

namespace awq {
// Input-channel scales for alpha from mean|x| (normalised to geometric mean of max and min 1). Exposed for tests.
std::vector<float> scales_for(const std::vector<double>& mean_abs, double alpha);
// sum over rows of e^T H e with e = W - Q (rows x n, row-major; H n x n, row-major float).
double output_error(const float* W, const float* Q, int64_t rows, int64_t n, const std::vector<float>& H);
// The search on one site: returns the chosen alpha index (0 .. grid-1) and the scales, without folding.
struct SiteChoice {
  int alpha_index = 0;
  std::vector<float> scales;
  std::vector<double> losses;  // per alpha
};
SiteChoice search_site(const std::vector<const float*>& W, const std::vector<int64_t>& rows,
                       const std::vector<const formats::Format*>& fmts, int64_t n, const SiteStats& stats,
                       const std::vector<double>& mean_abs, int grid);
}  // namespace awq

}  // namespace lowbit::quant
