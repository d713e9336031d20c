// Matrix products on llama.cpp's block types (formats/ggml.h) without decoding the weights to floats, the way
// llama.cpp's CPU backend computes them: the activations are quantized to int8 per weight block (Q8_0-style, 32
// values and an fp16 scale, for Q4_0 Q4_1 Q5_0 Q5_1 Q8_0 IQ4_NL; Q8_K-style, 256 values and an f32 scale, for
// Q2_K..Q6_K and IQ4_XS) and each block's dot product is an integer one.
//
// Every supported type is described by one decomposition, used by the scalar reference and the SIMD kernels alike:
// a block of B weights (32 or 256) is B/16 groups of 16; weight i of group g decodes to
//     S_g * (u_i - c) - M_g
// with u_i an unsigned byte code (e.g. the Q4_K nibble, the Q8_0 value + 128, the IQ4 level + 128), c the type's
// centre and S_g / M_g the group's float step and min (from the block's fp16 and integer scales, multiplied as
// ggml's dequantizer multiplies them). With activations x_i ~= da * a_i:
//     dot = sum_g da * (S_g * (sum_i u_i a_i - c * A_g) - M_g * A_g),     A_g = sum over the group of a_i.
#pragma once
#include <cstddef>
#include <cstdint>
#include <new>
#include <vector>

#include "lowbit/dtype.h"
#include "ops/ops.h"

namespace lowbit::ops::detail {

// Cache-line aligned vectors: the kernels read activations 64 bytes at a time, and a vector allocated at malloc's 16
// bytes splits every such load over two cache lines.
template <class T>
struct CacheAligned {
  using value_type = T;
  CacheAligned() = default;
  template <class U>
  CacheAligned(const CacheAligned<U>&) {}
  T* allocate(size_t n) { return static_cast<T*>(::operator new(n * sizeof(T), std::align_val_t{64})); }
  void deallocate(T* p, size_t) { ::operator delete(p, std::align_val_t{64}); }
  template <class U>
  bool operator==(const CacheAligned<U>&) const { return true; }  // C++20 derives !=
};

// Types with a native dot product (every encodable ggml type).
bool ggml_dot_supported(DType t);

// int8 activations for rows of weight type t: n values (a multiple of t's block), per 16-value group the scale
// da (repeated for each group of a block) and A_g = sum of the group's codes.
struct GgmlActs {
  DType wtype = DType::F32;
  int64_t n = 0;
  std::vector<int8_t, CacheAligned<int8_t>> q;  // n
  std::vector<float> dg;      // n / 16: the block's scale, per group
  std::vector<int32_t> ag;    // n / 16: sum of the group's codes
  // The codes of each whole 256-value chunk transposed for the AVX3_DL kernels of the types where
  // ggml_acts_transposed() holds: qt[256 c + 64 k + 4 g + j] = q[256 c + 16 g + 4 k + j] (vector k, 32-bit lane g
  // holds group g's codes 4k..4k+3, so four vpdpbusd into one accumulator give every group's sum in its own lane).
  std::vector<int8_t, CacheAligned<int8_t>> qt;
  // The batched (prefill) kernels' layout, filled when quantize_acts_ggml is asked for it (gemm = true). A unit is
  // the weight type's scale group (formats::blocks::traits: 16 or 32 values) and a super-chunk 16 units; n is
  // padded with zero codes and scales to whole super-chunks. Per super-chunk s:
  //   qg[16 * unit * s + 64 k + 4 j + i] = code 4k + i of unit j (vector k, 32-bit lane j: k < unit / 4),
  //   du[16 s + j] = unit j's scale, and its integer sum A_j as the two terms the kernels add:
  //   ci[16 s + j] = -centre * A_j (types without a min: the centre term in the integer sum),
  //   da[16 s + j] = du * A_j (types with a min: the min term, a float),
  //   as[16 s + j] = A_j (integer zero points: -zero_j * A_j starts the sums).
  int unit = 0;
  int64_t supers = 0;
  std::vector<int8_t, CacheAligned<int8_t>> qg;
  std::vector<float, CacheAligned<float>> du, da;
  std::vector<int32_t, CacheAligned<int32_t>> ci, as;
};
// Whether the AVX3_DL kernel for weight type t reads GgmlActs::qt (its codes are unpacked in that layout).
bool ggml_acts_transposed(DType t);
// Quantizes as llama.cpp does on x86: Q8_0 (d = max|x| / 127 rounded to fp16, q = round-half-even(x * 127 /
// max|x|)) or Q8_K (iscale = -127 / x_m where x_m is the value of largest magnitude, q = min(127,
// nearest(iscale * x)), d = 1 / iscale). gemm: also the layout the batched (prefill) kernels read (qg, du, da, ci,
// as).
void quantize_acts_ggml(DType wtype, const float* x, int64_t n, GgmlActs& a, bool gemm = false);
// The activations of one token of a batch (n_tok > 1 in gemm_ggml_rows) in the layout the current target's batched
// kernel reads: the GEMM layout alone (SIMD, equal to quantize_acts_ggml's) on the AVX-512 VNNI path, else
// quantize_acts_ggml's decode fields. Bad n throws as quantize_acts_ggml does.
void quantize_acts_batched(DType wtype, const float* x, int64_t n, GgmlActs& a);
// Whether this target's gemm_ggml_rows reads batches of weight type t in quantize_acts_batched's layout; false where
// it reads quantize_acts_ggml's decode fields instead (the i-quants not repacked on the AVX-512 VNNI path, which
// run the scalar reference there: they are repacked at load).
bool ggml_batches_read_batched_acts(DType t);

}  // namespace lowbit::ops::detail

namespace lowbit::ops {
// ops.h's repacked weights. Rows in groups of four (the last group padded with zero rows), interleaved per
// super-chunk: group g holds super-chunk 0 of its four rows, then super-chunk 1 of the four, ..., so decode reads
// one sequential stream per group. A super-chunk is super_bytes: codes (bits == 4: vector k < 4 holds unit vectors
// k (low nibbles) and k + 4 (high nibbles); bits == 8: the eight vectors as they are), then the 16 units' S_j (and
// M_j) in one of three headers, each exact (the float products ggml's dequantizers form):
//   Half   S[16] (and M[16]) as fp16: Q4_0 Q4_1 IQ4_NL Q8_0, whose S / M are the blocks' own fp16 fields;
//   Scaled f32 d[2] (and dmin[2]) for the two 256-value blocks, then int8 sc[16] (and m[16]): S_j = d[j / 8] * sc_j,
//          M_j = dmin[j / 8] * m_j (Q4_K; IQ4_XS with sc = ls - 32);
//   Zero   one fp16 S and one uint8 zero per intN block: S[n] then zero[n], n = 16 >> zero_shift (blocks of 32,
//          64 or 128 values); unit j reads entry j >> zero_shift, M_j = S_j * zero_j (symmetric zero = 2^(B-1)).
// lookup: 4-bit codes are indices into levels[16] (code u = levels[index] + 128, by vpshufb): IQ4_NL / IQ4_XS's
// kIq4nlValues, or an i-quant's level set (formats::ggml_iq_level_set) for IQ2_XXS, IQ3_XXS, IQ3_S, IQ1_S, whose
// Scaled header holds each block's step (formats::IqBlockLevels) as d and its integer scales 2 s + 1 as sc.
// The 16-value-unit types (unit == 16: Q2_K, Q3_K, Q6_K, and IQ2_XS, IQ2_S, IQ1_M) have 256-value super-chunks, one
// block each, with four code vectors stored as: Q2_K (bits 2) one 64-byte vector, code k in bits 2k..2k+1 of each
// byte; Q3_K (bits 3) that for the low two bits and four 64-bit masks of the high bit; Q6_K (bits 6) the low
// nibbles two vectors per 64 bytes (k, k + 1) and the high two bits as Q2_K's; the i-quants (bits 4, lookup) two
// vectors per 64 bytes as Q6_K's low nibbles. Header K16: f32 d (and dmin), then the block's 16 scale bytes as the
// kernels need them (Q2_K: its own scales, sc | m << 4; Q3_K: sc - 32; Q6_K: its int8 scales; i-quants: the step
// and the scales 2 s + 1).
// The i-quants' copies hold 4 bits per weight where the files hold 1.56-3.44: their grids' signed levels number
// at most 16, so one table lookup per 64 codes replaces a grid gather per 8.
enum class RepackHeader { Half, Scaled, Zero, K16 };
struct RepackedMatrix {
  DType acts = DType::F32;  // whose activation rules (quantize_acts_batched): the weight type, Q4_1 for intN
  int bits = 4, unit = 32;  // code bits; values per scale (32, or 16 for Q2_K / Q3_K / Q6_K)
  bool lookup = false, has_min = false;
  int8_t levels[16] = {};  // lookup: the level of each 4-bit code
  RepackHeader header = RepackHeader::Half;
  int zero_shift = 0;  // Zero header: log2 of the units per intN block
  int64_t rows = 0, groups = 0, supers = 0;
  size_t super_bytes = 0;
  void* storage = nullptr;  // groups * 4 * supers * super_bytes, 2 MiB aligned
  size_t bytes() const { return static_cast<size_t>(groups) * 4 * static_cast<size_t>(supers) * super_bytes; }
  const uint8_t* super(int64_t r, int64_t s) const {
    return static_cast<const uint8_t*>(storage) +
           ((static_cast<size_t>(r / 4) * static_cast<size_t>(supers) + static_cast<size_t>(s)) * 4 +
            static_cast<size_t>(r % 4)) * super_bytes;
  }
};
}  // namespace lowbit::ops

namespace lowbit::ops::detail {

// Rows [r0, r1) of repacked weights: one token (n_tok == 1, the decode kernel) or a batch (the GEMM).
void gemm_repacked_rows(const WeightView& w, const GgmlActs* acts, int64_t n_tok, int64_t r0, int64_t r1, float* y,
                        int64_t ldy);

// The decomposition of one block of type t: S, M (B/16 each), c, and the B codes.
struct GgmlBlockTerms {
  float S[16], M[16];
  int c = 0;
  uint8_t u[256];
};
int ggml_block_values(DType t);  // B
// codes = false: S, M and c only (u untouched).
void ggml_block_terms(DType t, const std::byte* block, GgmlBlockTerms& out, bool codes = true);

// Scalar reference: dot of one row (a.n weights of type t) with the activations.
float ggml_dot_row_ref(DType t, const std::byte* row, const GgmlActs& a);
// The same over blocks [b0, b1) of the row.
float ggml_dot_blocks_ref(DType t, const std::byte* row, const GgmlActs& a, int64_t b0, int64_t b1);

// The SIMD kernel (dispatched per target; AVX3_DL has native kernels, others use the reference): y[i * ldy + r - r0]
// for rows [r0, r1) and tokens i < n_tok of the activation sets acts[0..n_tok).
void gemm_ggml_rows(const WeightView& w, const GgmlActs* acts, int64_t n_tok, int64_t r0, int64_t r1, float* y,
                    int64_t ldy);

}  // namespace lowbit::ops::detail
