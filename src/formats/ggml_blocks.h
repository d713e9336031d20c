// The byte layout of every llama.cpp block type lowbit encodes (and IQ1_S / IQ1_M, which it only decodes), written once: the formats (ggml_legacy.cpp,
// ggml_kquants.cpp, ggml_iq4.cpp), the scalar dot reference (ops/ggml_dot_ref.cpp) and the SIMD kernels
// (ops/ggml_kernels.cpp) take every field's offset from these structs (offsetof), and the sizes are checked here
// against ggml's. fp16 fields are their 16 bits, little-endian as in every GGUF file; the structs are never
// overlaid on unaligned bytes, only used for offsets and sizes. How codes are interleaved inside qs / qh / hmask
// is described with each family (ggml_legacy.cpp, ggml_kquants.cpp).
#pragma once
#include <cstddef>
#include <cstdint>

#include "lowbit/dtype.h"

namespace lowbit::formats::blocks {

// 32-value types.
struct Q4_0 { uint16_t d; uint8_t qs[16]; };
struct Q4_1 { uint16_t d, m; uint8_t qs[16]; };
struct Q5_0 { uint16_t d; uint8_t qh[4]; uint8_t qs[16]; };
struct Q5_1 { uint16_t d, m; uint8_t qh[4]; uint8_t qs[16]; };
struct Q8_0 { uint16_t d; int8_t qs[32]; };
struct IQ4_NL { uint16_t d; uint8_t qs[16]; };

// 256-value super-blocks.
struct Q2_K { uint8_t scales[16]; uint8_t qs[64]; uint16_t d, dmin; };
struct Q3_K { uint8_t hmask[32]; uint8_t qs[64]; uint8_t scales[12]; uint16_t d; };
struct Q4_K { uint16_t d, dmin; uint8_t scales[12]; uint8_t qs[128]; };
struct Q5_K { uint16_t d, dmin; uint8_t scales[12]; uint8_t qh[32]; uint8_t qs[128]; };
struct Q6_K { uint8_t ql[128]; uint8_t qh[64]; int8_t scales[16]; uint16_t d; };
struct IQ4_XS { uint16_t d; uint16_t scales_h; uint8_t scales_l[4]; uint8_t qs[128]; };
// The i-quants (layouts in ggml_decode_other.cpp; their dot products read formats::IqBlockLevels).
struct IQ2_XXS { uint16_t d; uint16_t qs[32]; };
struct IQ2_XS { uint16_t d; uint16_t qs[32]; uint8_t scales[8]; };
struct IQ2_S { uint16_t d; uint8_t qs[64]; uint8_t qh[8]; uint8_t scales[8]; };
struct IQ3_XXS { uint16_t d; uint8_t qs[96]; };
struct IQ3_S { uint16_t d; uint8_t qs[64]; uint8_t qh[8]; uint8_t signs[32]; uint8_t scales[4]; };
struct IQ1_S { uint16_t d; uint8_t qs[32]; uint16_t qh[8]; };
struct IQ1_M { uint8_t qs[32]; uint8_t qh[16]; uint8_t scales[8]; };  // fp16 d in the top nibbles of scales

// ggml's block sizes (ggml-common.h): a field added or mis-sized here fails to compile.
static_assert(sizeof(Q4_0) == 18 && sizeof(Q4_1) == 20 && sizeof(Q5_0) == 22 && sizeof(Q5_1) == 24);
static_assert(sizeof(Q8_0) == 34 && sizeof(IQ4_NL) == 18);
static_assert(sizeof(Q2_K) == 84 && sizeof(Q3_K) == 110 && sizeof(Q4_K) == 144 && sizeof(Q5_K) == 176);
static_assert(sizeof(Q6_K) == 210 && sizeof(IQ4_XS) == 136);
static_assert(sizeof(IQ2_XXS) == 66 && sizeof(IQ2_XS) == 74 && sizeof(IQ2_S) == 82 && sizeof(IQ3_XXS) == 98);
static_assert(sizeof(IQ3_S) == 110 && sizeof(IQ1_S) == 50 && sizeof(IQ1_M) == 56);

// How a block's values decode, in the one form every dot product uses (ops/ggml_dot.h): value i decodes to
//     S_g * (u_i - centre) - M_g
// with u_i an unsigned byte code, and one step S_g (and, where has_min, one min M_g) per scale_group values
// (a K-quant sub-block, or a whole 32-value block). Types with a min have centre 0. Checked against each type's
// decomposition in tests/ops/test_ggml_dot.cpp (GgmlTraits).
struct Traits {
  int values = 0;       // per block
  int bytes = 0;        // per block
  int centre = 0;
  bool has_min = false;
  int scale_group = 0;  // values per S_g / M_g: 16 or 32
};
constexpr Traits traits(DType t) {
  switch (t) {
    case DType::Q8_0: return {32, sizeof(Q8_0), 128, false, 32};
    case DType::Q4_0: return {32, sizeof(Q4_0), 8, false, 32};
    case DType::Q4_1: return {32, sizeof(Q4_1), 0, true, 32};
    case DType::Q5_0: return {32, sizeof(Q5_0), 16, false, 32};
    case DType::Q5_1: return {32, sizeof(Q5_1), 0, true, 32};
    case DType::IQ4_NL: return {32, sizeof(IQ4_NL), 128, false, 32};
    case DType::Q2_K: return {256, sizeof(Q2_K), 0, true, 16};
    case DType::Q3_K: return {256, sizeof(Q3_K), 4, false, 16};
    case DType::Q4_K: return {256, sizeof(Q4_K), 0, true, 32};
    case DType::Q5_K: return {256, sizeof(Q5_K), 0, true, 32};
    case DType::Q6_K: return {256, sizeof(Q6_K), 32, false, 16};
    case DType::IQ4_XS: return {256, sizeof(IQ4_XS), 128, false, 32};
    // The i-quants: u = level + 128 (formats::IqBlockLevels), S_g = step * scale_g.
    case DType::IQ2_XXS: return {256, sizeof(IQ2_XXS), 128, false, 32};
    case DType::IQ2_XS: return {256, sizeof(IQ2_XS), 128, false, 16};
    case DType::IQ2_S: return {256, sizeof(IQ2_S), 128, false, 16};
    case DType::IQ3_XXS: return {256, sizeof(IQ3_XXS), 128, false, 32};
    case DType::IQ3_S: return {256, sizeof(IQ3_S), 128, false, 32};
    case DType::IQ1_S: return {256, sizeof(IQ1_S), 128, false, 32};
    case DType::IQ1_M: return {256, sizeof(IQ1_M), 128, false, 16};
    default: return {};  // values == 0: not a type with a native dot product
  }
}

}  // namespace lowbit::formats::blocks
