// lowbit formats: llama.cpp's (ggml's) block types as Formats, so every lowbit algorithm (RTN, importance-weighted,
// GPTQ) can target them and the result is a tensor llama.cpp reads unchanged.
//
// Each encodable type is one GgmlFormat (name() is ggml's spelling: "q8_0", "q4_K", "iq4_nl", ...) whose
//  - fit(w, {}) + encode(w, fit(w, {})) is byte-identical to llama.cpp's own quantizer without an importance
//    matrix (quantize_row_<type>_ref for Q4_0..Q8_0 and Q2_K..Q6_K, the iq4_nl implementation with no weights
//    for IQ4_NL / IQ4_XS), checked tensor for tensor against the files llama-quantize wrote in
//    ../shared/reference/gguf/;
//  - fit(w, importance) is llama.cpp's importance-weighted quantizer (quantize_<type> with an imatrix: the
//    searches with each weight's squared error scaled by importance[i] * sqrt(sigma2 + w[i]^2); q6_K by the raw
//    importance; q8_0 ignores it), byte-identical to llama-quantize --imatrix when fitted row by row through
//    fit_row (the legacy types take sigma2 from the whole row), checked against ../shared/reference/imatrix;
//    importance must be positive-ish (all-zero importance over a block falls back to the plain fit);
//  - round(w, p, i) is the value encode() would store for weight i under p (GPTQ rounds column by column with it),
//    and decode(encode(w, p)) == round(w[i], p, i) bit for bit;
//  - decode is ggml's dequantization (bit-identical to ggml's to_float).
// Rows must be a whole number of blocks (ggml's rule); the partial-block helpers of format.h still work but a
// tensor whose row length is not a multiple of block() cannot be stored in a GGUF of that type.
//
// Block layouts (little-endian, fp16 = IEEE half):
//   q8_0   32 w,  34 B: d fp16 | 32 x int8 q               value d*q
//   q4_0   32 w,  18 B: d fp16 | 16 B nibbles              value d*(q-8); byte j = q[j] | q[j+16] << 4
//   q4_1   32 w,  20 B: d, m fp16 | 16 B nibbles           value d*q + m
//   q5_0   32 w,  22 B: d fp16 | qh u32 | 16 B nibbles     value d*(q-16); bit j of qh = bit 4 of q[j]
//   q5_1   32 w,  24 B: d, m fp16 | qh u32 | 16 B nibbles  value d*q + m
//   q2_K  256 w,  84 B: scales[16] (lo: scale, hi: min) | qs[64] | d, dmin fp16
//   q3_K  256 w, 110 B: hmask[32] | qs[64] | scales[12] (16 x 6-bit) | d fp16
//   q4_K  256 w, 144 B: d, dmin fp16 | scales[12] (8 x 6-bit scale, 8 x 6-bit min) | qs[128]
//   q5_K  256 w, 176 B: d, dmin fp16 | scales[12] | qh[32] | qs[128]
//   q6_K  256 w, 210 B: ql[128] | qh[64] | scales[16] int8 | d fp16
//   iq4_nl 32 w,  18 B: d fp16 | 16 B nibbles              value d*kvalues_iq4nl[q]
//   iq4_xs 256 w, 136 B: d fp16 | scales_h u16 | scales_l[4] | qs[128]
#pragma once
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string_view>
#include <vector>

#include "formats/format.h"
#include "lowbit/dtype.h"

namespace lowbit::formats {

class GgmlFormat : public Format {
 public:
  virtual DType dtype() const = 0;  // the GGUF tensor type this format writes
};

// The encodable ggml types: Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, IQ4_NL, IQ4_XS, IQ2_XXS,
// IQ2_XS, IQ2_S, IQ3_XXS, IQ3_S.
bool ggml_encodable(DType t);
// The format for an encodable type; lowbit::Error naming the type otherwise.
std::unique_ptr<GgmlFormat> make_ggml_format(DType t);
// Shared instance (for readers that keep a pointer per tensor).
const GgmlFormat& ggml_format(DType t);

// Per family (each in its own file; make_ggml_format dispatches): nullptr when t is not that family's.
std::unique_ptr<GgmlFormat> make_ggml_legacy_format(DType t);  // ggml_legacy.cpp: Q8_0 Q4_0 Q4_1 Q5_0 Q5_1
std::unique_ptr<GgmlFormat> make_ggml_kquant_format(DType t);  // ggml_kquants.cpp: Q2_K .. Q6_K
std::unique_ptr<GgmlFormat> make_ggml_iq4_format(DType t);     // ggml_iq4.cpp: IQ4_NL IQ4_XS
std::unique_ptr<GgmlFormat> make_ggml_lattice_format(DType t);  // ggml_iq_lattice.cpp: IQ2_XXS/XS/S IQ3_XXS/S

// Whether lowbit can turn a row of type t into floats: F32, F16, BF16, F64, I8..I32 (as values) and every
// quantized type llama.cpp ships (the encodable ones plus Q8_1, Q8_K, IQ1_S, IQ1_M, IQ2_XXS, IQ2_XS, IQ2_S,
// IQ3_XXS, IQ3_S, TQ1_0, TQ2_0).
bool ggml_decodable(DType t);
// Decodes n values (a whole number of t's blocks) starting at `in`; lowbit::Error for a type it cannot decode.
void ggml_decode_row(DType t, const std::byte* in, int64_t n, float* out);

// The decoders for the types without a format of their own (ggml_decode_other.cpp) and the i-quants (whose formats
// decode through it); false if t is not one of them.
bool ggml_decode_other_row(DType t, const std::byte* in, int64_t n, float* out);
// The 8-weight grid of IQ2_XXS (256 entries), IQ2_XS (512) or IQ2_S (1024) and the 4-weight grid of IQ3_XXS (256) or IQ3_S
// (512), one byte per weight (ggml_iq_grids.inc); empty for other types.
std::span<const uint64_t> ggml_iq2_grid(DType t);
std::span<const uint32_t> ggml_iq3_grid(DType t);
std::span<const uint64_t> ggml_iq1_grid();  // IQ1_S / IQ1_M's 2048 entries, bytes -1, 0, 1 (as int8)

// An i-quant block (IQ1_S, IQ1_M, IQ2_XXS, IQ2_XS, IQ2_S, IQ3_XXS, IQ3_S) in integers: weight i decodes to
// (step * scale[i / 16]) * level[i], exactly the float ggml's dequantizer computes (ggml_decode_other.cpp says why).
// step is the block's fp16 d times 1/8 (IQ2, IQ1), 1/4 (IQ3_XXS) or 1 (IQ3_S); scale = 2 s + 1 (1..31) for the
// block's 4-bit (3-bit for IQ1) scale s; level is the signed grid value (IQ1: 8 * grid +- 1 for its delta).
// The integer kernels (ops/ggml_kernels.cpp) and the scalar dot reference read this form.
struct IqBlockLevels {
  float step = 0.0f;
  uint8_t scale[16] = {};  // per 16 weights (equal in pairs where the type scales 32)
  int8_t level[256] = {};
};
// false if t is not an i-quant.
bool ggml_iq_block_levels(DType t, const std::byte* block, IqBlockLevels& out);
// Every level a block of t can hold, ascending (at most 16: IQ2 +-{8, 25, 43}, IQ3_XXS +-{4 .. 62},
// IQ3_S +-{1 .. 15}, IQ1 {-9, -7, -1, 1, 7, 9}; all within [-63, 63]); count 0 for other types. The repacked
// kernels' lookup table.
struct IqLevelSet {
  int count = 0;
  int8_t level[16] = {};
};
const IqLevelSet& ggml_iq_level_set(DType t);

// 16 non-uniform levels of IQ4_NL / IQ4_XS.
extern const int8_t kIq4nlValues[16];

}  // namespace lowbit::formats
