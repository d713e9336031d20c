// lowbit formats: the ggml type registry (which types encode / decode) and the row decoder for every type.
#include "formats/ggml.h"

#include <cstring>
#include <map>
#include <mutex>
#include <string>

#include "core/half.h"
#include "lowbit/error.h"

namespace lowbit::formats {

bool ggml_encodable(DType t) {
  switch (t) {
    case DType::Q8_0: case DType::Q4_0: case DType::Q4_1: case DType::Q5_0: case DType::Q5_1:
    case DType::Q2_K: case DType::Q3_K: case DType::Q4_K: case DType::Q5_K: case DType::Q6_K:
    case DType::IQ4_NL: case DType::IQ4_XS: case DType::IQ2_XXS: case DType::IQ2_XS:
    case DType::IQ2_S: case DType::IQ3_XXS: case DType::IQ3_S: case DType::IQ1_S: case DType::IQ1_M:
      return true;
    default:
      return false;
  }
}

std::unique_ptr<GgmlFormat> make_ggml_format(DType t) {
  std::unique_ptr<GgmlFormat> f;
  if (ggml_encodable(t)) {
    if (!f) f = make_ggml_legacy_format(t);
    if (!f) f = make_ggml_kquant_format(t);
    if (!f) f = make_ggml_iq4_format(t);
    if (!f) f = make_ggml_lattice_format(t);
  }
  if (!f)
    fail("", "format", "no encoder for ggml type '" + std::string(dtype_name(t)) +
                           "' (expected q8_0, q4_0, q4_1, q5_0, q5_1, q2_K, q3_K, q4_K, q5_K, q6_K, iq4_nl, iq4_xs, iq2_xxs, iq2_xs, iq2_s, iq3_xxs, iq3_s, iq1_s or iq1_m)");
  return f;
}

const GgmlFormat& ggml_format(DType t) {
  static std::mutex mu;
  static std::map<DType, std::unique_ptr<GgmlFormat>> cache;
  std::lock_guard<std::mutex> lock(mu);
  auto& slot = cache[t];
  if (!slot) slot = make_ggml_format(t);
  return *slot;
}

bool ggml_decodable(DType t) {
  switch (t) {
    case DType::F32: case DType::F16: case DType::BF16: case DType::F64:
    case DType::I8: case DType::I16: case DType::I32: case DType::I64:
    case DType::Q8_1: case DType::Q8_K: case DType::IQ1_S: case DType::IQ1_M: case DType::IQ2_XXS:
    case DType::IQ2_XS: case DType::IQ2_S: case DType::IQ3_XXS: case DType::IQ3_S: case DType::TQ1_0:
    case DType::TQ2_0:
      return true;
    default:
      return ggml_encodable(t);
  }
}

namespace {
template <typename T>
void widen(const std::byte* in, int64_t n, float* out) {
  for (int64_t i = 0; i < n; ++i) {
    T v;
    std::memcpy(&v, in + i * sizeof(T), sizeof(T));
    out[i] = static_cast<float>(v);
  }
}
}  // namespace

void ggml_decode_row(DType t, const std::byte* in, int64_t n, float* out) {
  const DTypeInfo info = dtype_info(t);
  if (info.block_bytes == 0 || n < 0 || n % info.block != 0)
    fail("", "dtype", "cannot decode " + std::to_string(n) + " values of type " + std::string(info.name) +
                          " (expected a multiple of its block of " + std::to_string(info.block) + ")");
  switch (t) {
    case DType::F32: std::memcpy(out, in, static_cast<size_t>(n) * 4); return;
    case DType::F64: widen<double>(in, n, out); return;
    case DType::I8: widen<int8_t>(in, n, out); return;
    case DType::I16: widen<int16_t>(in, n, out); return;
    case DType::I32: widen<int32_t>(in, n, out); return;
    case DType::I64: widen<int64_t>(in, n, out); return;
    case DType::F16:
    case DType::BF16:
      for (int64_t i = 0; i < n; ++i) {
        uint16_t h;
        std::memcpy(&h, in + 2 * i, 2);
        out[i] = t == DType::F16 ? f16_to_f32(h) : bf16_to_f32(h);
      }
      return;
    default:
      break;
  }
  if (ggml_decode_other_row(t, in, n, out)) return;  // before the formats: the i-quant formats decode through it
  if (ggml_encodable(t)) {
    const GgmlFormat& f = ggml_format(t);
    const int64_t nb = n / f.block();
    for (int64_t b = 0; b < nb; ++b)
      f.decode(in + b * f.block_bytes(), std::span<float>(out + b * f.block(), static_cast<size_t>(f.block())));
    return;
  }
  fail("", "dtype", "lowbit cannot decode tensors of type " + std::string(info.name));
}

}  // namespace lowbit::formats
