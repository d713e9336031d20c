// lowbit formats: internal helpers shared by the ggml block-type implementations (ggml_legacy.cpp,
// ggml_kquants.cpp). Not part of the formats API.
#pragma once
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>

#include "formats/ggml.h"

namespace lowbit::formats::ggml_detail {

// Little-endian 16-bit fields (fp16 scales) of a block.
inline uint16_t load_u16(const std::byte* p) {
  return static_cast<uint16_t>(static_cast<unsigned>(p[0]) | (static_cast<unsigned>(p[1]) << 8));
}
inline void store_u16(std::byte* p, uint16_t v) {
  p[0] = static_cast<std::byte>(v & 0xff);
  p[1] = static_cast<std::byte>(v >> 8);
}

// The first value of largest magnitude (its sign kept) and that magnitude, as ggml's quantizers find it
// (a strict > scan from 0, so both stay 0 when every value is +-0).
struct LargestMagnitude {
  float value = 0.0f;
  float magnitude = 0.0f;
};
inline LargestMagnitude largest_magnitude(std::span<const float> x) {
  LargestMagnitude r;
  for (float v : x) {
    const float a = std::fabs(v);
    if (a > r.magnitude) {
      r.magnitude = a;
      r.value = v;
    }
  }
  return r;
}

// A block's dot product through its decode: sum_i decode(in)[i] * x[i], accumulated in float in index order.
template <int N, class F>
float dot_by_decode(const F& f, const std::byte* in, const float* x) {
  float v[N];
  f.decode(in, std::span<float>(v, N));
  float acc = 0.0f;
  for (int i = 0; i < N; ++i) acc += v[i] * x[i];
  return acc;
}

// The format of one family's spec table for type t (Spec has a `dtype` member; F is built from a Spec), or nullptr.
template <class F, class Spec, size_t N>
std::unique_ptr<GgmlFormat> make_from_specs(const Spec (&specs)[N], DType t) {
  for (const Spec& s : specs)
    if (s.dtype == t) return std::make_unique<F>(s);
  return nullptr;
}

}  // namespace lowbit::formats::ggml_detail
