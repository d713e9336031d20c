// lowbit formats: intN -- lowbit's own group-quantized integer format ("the packed file", issue 3).
//
// Name: int{B}g{G}{s|a}, B in 2..8 bits, G in {32, 64, 128} weights per block, s = symmetric, a = asymmetric.
//
// Block layout (little-endian), block_bytes = 2 + (asymmetric ? 2 : 0) + G * B / 8:
//   u16  scale  fp16, the step between adjacent levels (always >= 0)
//   u16  zero   fp16, asymmetric only: the zero point as a level value. fit() always makes it an integer in
//               [0, 2^B - 1] (exact in fp16), so 0.0 is exactly representable; decode accepts any fp16 value.
//   G codes of B bits each, packed LSB-first: code i occupies bits [i*B, i*B + B) of the code bytes, where bit k
//   is bit (k % 8) of byte k / 8 -- so e.g. 3-bit codes straddle byte boundaries.
//
// A code c in [0, 2^B - 1] decodes to  scale * (c - offset)  with offset = zero (asymmetric) or 2^(B-1)
// (symmetric: the levels q = c - 2^(B-1) cover [-2^(B-1), 2^(B-1) - 1], the full two's-complement range).
// The product is one float multiply of the fp16-widened scale by an exact small float, so encode / decode /
// round agree bit for bit.
//
// fit(): min/max (asymmetric: the range [min(w,0), max(w,0)], zero rounded to an integer level; symmetric:
// the smallest scale that reaches both the most negative weight with -2^(B-1) and the most positive with
// 2^(B-1)-1), then optionally an MSE-optimal clipping search: the range is shrunk by factors 1.0 down to
// min_shrink in grid_steps steps and the candidate with the lowest (importance-weighted) squared error after
// rounding -- using the fp16-rounded parameters -- wins. Factor 1.0 (plain min/max) is tried first and only
// beaten by a strictly smaller error, so the search is never worse than min/max on the block it fits.
#pragma once
#include <cstdint>
#include <span>
#include <string>

#include "formats/format.h"

namespace lowbit::formats {

struct IntNFitOptions {
  bool clip_search = true;  // false: plain min/max
  int grid_steps = 40;      // shrink factors tried: 1.0, ..., min_shrink (grid_steps + 1 values)
  float min_shrink = 0.5f;
};

class IntNFormat final : public Format {
 public:
  IntNFormat(int bits, int group, bool asymmetric, IntNFitOptions options = {});

  std::string name() const override;
  int block() const override { return group_; }
  size_t block_bytes() const override;

  BlockParams fit(std::span<const float> w, std::span<const float> importance) const override;
  float round(float w, const BlockParams& p, int index_in_block) const override;
  void encode(std::span<const float> w, const BlockParams& p, std::byte* out) const override;
  void decode(const std::byte* in, std::span<float> out) const override;
  float dot(const std::byte* in, const float* x) const override;

  int bits() const { return bits_; }
  bool asymmetric() const { return asym_; }
  const IntNFitOptions& options() const { return opt_; }

  // The code (0 .. 2^B - 1) that round() picks for w under p (p as fit() returns it: fp16-exact).
  int code_of(float w, const BlockParams& p) const;

 private:
  int bits_, group_;
  bool asym_;
  IntNFitOptions opt_;
};

// Parses "int{B}g{G}{s|a}"; throws lowbit::Error (one line) for anything else.
std::unique_ptr<IntNFormat> make_intn_format(std::string_view name, IntNFitOptions options = {});
// The shared instance for a name (default fit options), for readers that keep a format pointer per tensor.
const IntNFormat& intn_format(std::string_view name);

// One encoded block's fields: a value decodes to scale * (code - offset), offset being the stored zero
// (asymmetric) or 2^(B-1) (symmetric). Writes the block()'s codes (0 .. 2^B - 1), in order, to codes.
struct IntNBlock {
  float scale, offset;
};
IntNBlock intn_unpack_block(const IntNFormat& f, const std::byte* in, uint8_t* codes);
// The header alone: the block's scale and offset, and the bytes before its codes.
IntNBlock intn_block_params(const IntNFormat& f, const std::byte* in);
inline size_t intn_codes_offset(const IntNFormat& f) { return f.asymmetric() ? 4 : 2; }

// Row-level packed decode into f32 (the feed for the fp32 path): n weights stored as ceil(n / block())
// consecutive blocks at `in` (the last may be partial), unpacked eight codes (B bytes) at a time. Same values as
// decode_row.
void intn_decode_row_f32(const IntNFormat& f, const std::byte* in, int64_t n, float* out);

}  // namespace lowbit::formats
