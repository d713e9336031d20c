// 64-bit FNV-1a over a byte range: a cheap identity check of a source model recorded in quantized files
// (not a cryptographic hash).
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>

namespace lowbit {

uint64_t fnv1a64(const std::byte* data, size_t n, uint64_t h = 0xcbf29ce484222325ull);
std::string hex64(uint64_t v);

}  // namespace lowbit
