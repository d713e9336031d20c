// lowbit: tensor element types. The numeric values are ggml's type ids so GGUF files map directly;
// every type llama.cpp ships is known by name and size even where lowbit cannot compute on it yet.
#pragma once
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string_view>

namespace lowbit {

enum class DType : uint32_t {
  F32 = 0, F16 = 1, Q4_0 = 2, Q4_1 = 3, Q5_0 = 6, Q5_1 = 7, Q8_0 = 8, Q8_1 = 9,
  Q2_K = 10, Q3_K = 11, Q4_K = 12, Q5_K = 13, Q6_K = 14, Q8_K = 15,
  IQ2_XXS = 16, IQ2_XS = 17, IQ3_XXS = 18, IQ1_S = 19, IQ4_NL = 20, IQ3_S = 21, IQ2_S = 22,
  IQ4_XS = 23, I8 = 24, I16 = 25, I32 = 26, I64 = 27, F64 = 28, IQ1_M = 29, BF16 = 30,
  TQ1_0 = 34, TQ2_0 = 35,
};

struct DTypeInfo {
  std::string_view name;   // ggml's spelling: "f32", "q4_K", ...
  uint32_t block;          // elements per block (1 for plain types)
  uint32_t block_bytes;    // bytes per block
};

// Info for a raw type id, or nullopt if the id is not a known type.
std::optional<DTypeInfo> dtype_info(uint32_t id);
DTypeInfo dtype_info(DType t);  // t must be valid
std::string_view dtype_name(DType t);
// Parses a ggml-style name (case-insensitive): "f16", "Q4_K", "bf16".
std::optional<DType> dtype_from_name(std::string_view name);
// Bytes needed for a row of n elements; nullopt if n is not a multiple of the block size.
std::optional<uint64_t> dtype_row_bytes(DType t, uint64_t n);

}  // namespace lowbit
