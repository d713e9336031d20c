// lowbit formats (floor 1): how quantized weights are stored. An algorithm (quant/) chooses values; a format
// stores them. Each format is one file with: fitting a block's parameters, rounding to the nearest
// representable value, encode, decode (the scalar reference) and a dot product on the encoded bytes.
//
// Blocks run along a row (the input dimension of a linear layer): a row of n weights is ceil(n / block()) blocks
// of block_bytes() bytes each, laid out one after another. When n is not a multiple of block() the last block is
// partial: its missing weights are encoded as zeros with zero importance (so they do not steer the fit) and are
// never decoded -- any row length can be stored (e.g. a 172-wide FFN with 32-weight blocks).
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace lowbit::formats {

// A block's fitted parameters: what a format needs to round and encode the block's weights.
struct BlockParams {
  float scale = 0.0f;  // step between adjacent levels
  float zero = 0.0f;   // asymmetric: the level (in [0, 2^bits - 1]) that represents 0.0
  // Formats with sub-blocks or codebooks may use these.
  std::vector<float> sub_scales;
  std::vector<float> sub_mins;
  // Codes a fit chose that the parameters above cannot reproduce, for encode to keep (llama.cpp's weighted K-quant
  // fits keep their search's codes in a sub-block whose step comes out 0); empty: encode derives every code.
  std::vector<uint8_t> codes;
};

class Format {
 public:
  virtual ~Format() = default;
  virtual std::string name() const = 0;          // e.g. "int4g64a" (bits, group, asymmetric)
  virtual int block() const = 0;                 // weights per block
  virtual size_t block_bytes() const = 0;
  double bits_per_weight() const { return 8.0 * static_cast<double>(block_bytes()) / block(); }

  // Fits a block's parameters from its weights; importance (may be empty) weights the squared error.
  virtual BlockParams fit(std::span<const float> w, std::span<const float> importance) const = 0;
  // Fits every block of a row of any length (w: the row, importance: empty or one value per weight; out:
  // row_blocks() params). The default fits block by block (fit_block); a format whose weighted search looks at
  // the whole row overrides it (llama.cpp's importance-weighted q4_0 / q4_1 / q5_0 / q5_1 scale their error
  // weights by the row's mean square). Quantizers that see whole rows at once (rtn) fit through this.
  virtual void fit_row(std::span<const float> w, std::span<const float> importance, std::span<BlockParams> out) const;
  // The representable value nearest to w under p (for weight index i within the block).
  virtual float round(float w, const BlockParams& p, int index_in_block) const = 0;
  // Encodes one block (w.size() == block()) using p; the stored values are round(w[i], p, i).
  virtual void encode(std::span<const float> w, const BlockParams& p, std::byte* out) const = 0;
  // Decodes one block: out.size() == block().
  virtual void decode(const std::byte* in, std::span<float> out) const = 0;
  // Dot product of one encoded block with block() activations (scalar reference).
  virtual float dot(const std::byte* in, const float* x) const = 0;

  // Vector formats (llama.cpp's i-quants) choose the values of vector_size() consecutive weights together; scalar
  // formats return 1. round_vector re-chooses the vector starting at weight `first` of a block fitted as p, for the
  // current weights w (vector_size() of them; importance empty or one per weight), keeping p's scales: GPTQ calls it
  // at each vector's first column, after the earlier columns' errors have been fed forward.
  virtual int vector_size() const { return 1; }
  virtual void round_vector(std::span<const float> w, std::span<const float> importance, int first,
                            BlockParams& p) const {
    (void)w, (void)importance, (void)first, (void)p;
  }
};

// Partial-block helpers: w / out hold 1..block() weights (the tail of a row); shorter spans are padded as above.
// With a full block they are exactly fit / encode / decode / dot.
BlockParams fit_block(const Format& f, std::span<const float> w, std::span<const float> importance);
void encode_block(const Format& f, std::span<const float> w, const BlockParams& p, std::byte* out);
void decode_block(const Format& f, const std::byte* in, std::span<float> out);
float dot_block(const Format& f, const std::byte* in, std::span<const float> x);

// Row helpers built on the block calls, for any row length n >= 0.
int64_t row_blocks(const Format& f, int64_t n);  // ceil(n / block())
size_t row_bytes(const Format& f, int64_t n);
void encode_row(const Format& f, std::span<const float> w, std::span<const float> importance, std::byte* out);
void decode_row(const Format& f, const std::byte* in, std::span<float> out);
float dot_row(const Format& f, const std::byte* in, std::span<const float> x);

// The format named `name` ("int4g64a", "int3g128s", ...), or a clear lowbit::Error listing what exists.
std::unique_ptr<Format> make_format(std::string_view name);

}  // namespace lowbit::formats
