// lowbit's packed intN decoders on arbitrary block bytes (any scale, zero and codes, NaN and infinities included):
// every width, group and mode, through the format's decode, the row decoder the prefill path uses and the GEMV.
#include <cstring>

#include "formats/format.h"
#include "formats/intn.h"
#include "fuzz/fuzz_util.h"
#include "ops/ops.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 2) return 0;
  const int bits = 2 + data[0] % 7, group = 32 << (data[1] % 3);
  const bool asym = data[0] & 0x80;
  const lowbit::formats::IntNFormat& f =
      lowbit::formats::intn_format("int" + std::to_string(bits) + "g" + std::to_string(group) + (asym ? "a" : "s"));
  data += 2;
  size -= 2;
  // Rows of cols values: one or two blocks, the last possibly partial.
  const int64_t cols = 1 + static_cast<int64_t>(size % static_cast<size_t>(2 * group));
  const size_t rb = lowbit::formats::row_bytes(f, cols);
  const int64_t rows = std::max<int64_t>(1, static_cast<int64_t>(size / rb));
  std::vector<std::byte> bytes(rb * static_cast<size_t>(rows));
  std::memcpy(bytes.data(), data, std::min(size, bytes.size()));
  std::vector<float> row(static_cast<size_t>(cols));
  for (int64_t r = 0; r < rows; ++r)
    lowbit::formats::decode_row(f, bytes.data() + r * rb, std::span<float>(row.data(), row.size()));
  lowbit::ops::WeightView w{lowbit::DType::I8, rows, cols, bytes.data(), rb};
  w.intn = &f;
  std::vector<float> x(static_cast<size_t>(cols), 0.5f), y(static_cast<size_t>(rows));
  lowbit::ops::get_row(w, 0, row.data());
  lowbit::ops::matmul(w, x.data(), 1, y.data());
  return 0;
}
