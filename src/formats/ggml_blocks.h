// The byte layout of every llama.cpp block type lowbit encodes, written once: the formats (ggml_legacy.cpp,
// ggml_kquants.cpp, ggml_iq4.cpp), the scalar dot reference (ops/ggml_dot_ref.cpp) and the SIMD kernels
// (ops/ggml_kernels.cpp) take every field's offset from these structs (offsetof), and the sizes are checked here
// against ggml's. fp16 fields are their 16 bits, little-endian as in every GGUF file; the structs are never
// overlaid on unaligned bytes, only used for offsets and sizes. How codes are interleaved inside qs / qh / hmask
// is described with each family (ggml_legacy.cpp, ggml_kquants.cpp).
#pragma once
#include <cstddef>
#include <cstdint>

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

// ggml's block sizes (ggml-common.h): a field added or mis-sized here fails to compile.
static_assert(sizeof(Q4_0) == 18 && sizeof(Q4_1) == 20 && sizeof(Q5_0) == 22 && sizeof(Q5_1) == 24);
static_assert(sizeof(Q8_0) == 34 && sizeof(IQ4_NL) == 18);
static_assert(sizeof(Q2_K) == 84 && sizeof(Q3_K) == 110 && sizeof(Q4_K) == 144 && sizeof(Q5_K) == 176);
static_assert(sizeof(Q6_K) == 210 && sizeof(IQ4_XS) == 136);

}  // namespace lowbit::formats::blocks
