// Internal to quant/: the GPTQ pass (gptq.cpp), shared by the methods that are GPTQ on moved weights (gptaq/).
#pragma once
#include <Eigen/Dense>
#include <cstdint>
#include <functional>
#include <span>

#include "quant/quantizer.h"

namespace lowbit::quant::detail {

using MatD = Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using MatDMap = Eigen::Map<MatD>;  // the pass's working matrices live in per-thread scratch

// Called once before the pass with the weights it starts from (rows x cols, double, original column order, dead
// columns not yet zeroed) and the upper Cholesky factor U of the damped inverse Hessian in pass order
// ((H + damp I)^-1 = U^T U, the damping the pass really uses, escalations included; pass position i is original
// column perm[i]). It may replace the weights, e.g. with a least-squares target; static groups are fitted on what
// it leaves. Dead columns (diag H == 0) are zeroed after it.
using GptqStartHook = std::function<void(MatDMap& W, const MatDMap& U, std::span<const int64_t> perm)>;

// GPTQ's whole quantize(): validation (errors name `who`), dead columns, damping, act_order / static groups, the
// lazy-batch pass and encode. With an empty `start` it is exactly the "gptq" method.
QuantResult gptq_solve(const float* W, int64_t rows, int64_t cols, const formats::Format& fmt,
                       const LayerStats* stats, const QuantOptions& opts, const char* who,
                       const GptqStartHook& start = {});

}  // namespace lowbit::quant::detail
