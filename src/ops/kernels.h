// Internal entry points of the SIMD kernels (ops/kernels.cpp) that are not part of the public ops API.
#pragma once
#include <cstddef>
#include <cstdint>
#include <vector>

#include "ops/ops.h"

namespace lowbit::ops::detail {

// Rotates the first rope_dim dims of each head using precomputed tables (see ops.cpp: rope()).
//  Interleaved: cos_t[j] = cos(theta_{j/2}), sin_t[j] = (j even ? -1 : +1) * sin(theta_{j/2}), j < rope_dim.
//  HalfSplit:   cos_t[i] = cos(theta_i), sin_t[i] = sin(theta_i), i < rope_dim / 2.
void rope_tables(float* x, int n_heads, int head_dim, int rope_dim, const float* cos_t, const float* sin_t,
                 RopeStyle style);

// Single-threaded streaming sum of n floats: the read loop behind measure_read_bandwidth.
float stream_sum(const float* p, size_t n);

// Sum over a buffer split across `threads` OpenMP threads (each reads one contiguous chunk).
float parallel_stream_sum(const float* p, size_t n, int threads);

// Activations quantized for one packed-intN GEMV (ops/intn_kernels.cpp): per weight block of `block` values,
// integer codes q (zero past n, in the order the target's kernel reads codes), the scale d (x ~= d * q) and sum(q).
constexpr int kActMax = 127 * 256;  // int16 activations: |q| <= kActMax, d = max|x| / kActMax
struct IntNActs {
  int64_t n = 0, blocks = 0;
  int block = 0, bits = 0;
  int act_max = kActMax;            // this layout's |q| bound (intn_act_max)
  std::vector<int16_t> q;           // portable kernels: q itself
  std::vector<int8_t> qh, ql;       // AVX3_DL: q = 256 * qh + ql (2/4-bit: 64 / 16 * qh + ql), both int8
  // The target's code-to-slot tables for the format last used (rebuilt when target / bits / block change).
  int layout_bits = 0, layout_block = 0;
  int64_t layout_target = 0;
  std::vector<int> pos, gpos;
  std::vector<float> d;
  std::vector<int32_t> qsum;
};
// The activation code bound the current target's kernel uses for `bits`-bit weights (d = max|x| / bound per
// block): kActMax, or 127 * 16 / 127 * 64 for the AVX3_DL 4-bit / 2-bit kernels (ops/intn_kernels.cpp).
int intn_act_max(int bits);
void quantize_acts_intn(const formats::IntNFormat& f, const float* x, int64_t n, IntNActs& a);
// One packed row decoded to n floats: the same values as formats::decode_row, SIMD where the target allows.
void decode_intn_row(const formats::IntNFormat& f, const std::byte* row, int64_t n, float* out);
// y[r - r0] for rows [r0, r1) of the packed w, single-threaded.
void gemv_intn_rows(const WeightView& w, const IntNActs& a, int64_t r0, int64_t r1, float* y);

}  // namespace lowbit::ops::detail
