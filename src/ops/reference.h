// Portable scalar references for every ops kernel. Tests compare the SIMD/threaded versions against these;
// they favour clarity and accuracy (double accumulators) over speed.
#pragma once
#include <cstdint>

#include "ops/ops.h"

namespace lowbit::ops {

// Element c of row r of w, widened to f32.
float weight_at_ref(const WeightView& w, int64_t r, int64_t c);

void gemv_rows_ref(const WeightView& w, const float* x, int64_t r0, int64_t r1, float* y);
// Packed intN rows with the kernels' arithmetic (activations quantized per weight block, d = max|x| / act_max,
// q = round(x / d); y = sum_blk scale * d * (sum(code * q) - offset * sum(q))), in double, codes read one by one.
// act_max: the kernel's bound, detail::intn_act_max(bits) for the current target (127 * 256 = int16).
void gemv_intn_rows_ref(const WeightView& w, const float* x, int64_t r0, int64_t r1, float* y, int act_max = 127 * 256);
void matmul_ref(const WeightView& w, const float* x, int64_t n_tokens, float* y);
void get_row_ref(const WeightView& w, int64_t r, float* out);

void rmsnorm_ref(float* out, const float* x, const float* weight, int64_t n, float eps);
void softmax_ref(float* x, int64_t n);
void silu_mul_ref(float* gate, const float* up, int64_t n);
void gelu_mul_ref(float* gate, const float* up, int64_t n);
float dot_ref(const float* a, const float* b, int64_t n);
void axpy_ref(float a, const float* x, float* y, int64_t n);
// y[i] -= a * x[i] in double
void sub_scaled_ref(double a, const double* x, double* y, int64_t n);
void f16_to_f32_ref(const uint16_t* in, float* out, int64_t n);
void bf16_to_f32_ref(const uint16_t* in, float* out, int64_t n);
void rope_ref(float* x, int n_heads, int head_dim, int rope_dim, int pos, const float* inv_freq, RopeStyle style);

}  // namespace lowbit::ops
