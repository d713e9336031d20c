// Round-to-nearest: every block's parameters fitted on its own weights (optionally weighted by an importance per
// column: an imatrix file's, or diag(H)), then each weight rounded independently.
#include <omp.h>

#include <algorithm>
#include <span>

#include "lowbit/error.h"
#include "lowbit/threads.h"
#include "quant/quantizer.h"

namespace lowbit::quant {
namespace {

class RtnQuantizer final : public Quantizer {
 public:
  explicit RtnQuantizer(const QuantOptions& opts) : opts_(opts) {}
  std::string name() const override { return "rtn"; }

  QuantResult quantize(const float* W, int64_t rows, int64_t cols, const formats::Format& fmt,
                       const LayerStats* stats) const override {
    QuantResult res;
    res.rows = rows;
    res.cols = cols;
    res.row_bytes = detail::checked_row_bytes(fmt, rows, cols, "rtn");
    detail::check_finite(W, rows, cols, "rtn");
    // Importance: given per column (an imatrix file), else diag(H) with --importance.
    std::vector<float> importance;
    if (stats != nullptr && !stats->importance.empty()) {
      if (static_cast<int64_t>(stats->importance.size()) != cols)
        fail("rtn", "importance", std::to_string(stats->importance.size()) + " values for " + std::to_string(cols) +
                                      " columns");
      importance = stats->importance;
    } else if (opts_.use_importance && stats != nullptr) {
      if (stats->cols != cols || static_cast<int64_t>(stats->H.size()) != cols * cols)
        fail("rtn", "stats.cols", "does not match the weight matrix");
      importance.resize(static_cast<size_t>(cols));
      for (int64_t j = 0; j < cols; ++j) importance[j] = static_cast<float>(stats->H[j * cols + j]);
    }
    res.data.resize(res.row_bytes * static_cast<size_t>(rows));
    res.dequant.resize(static_cast<size_t>(rows * cols));
    const int64_t b = fmt.block();
    const int64_t nblocks = formats::row_blocks(fmt, cols);
    const size_t bb = fmt.block_bytes();
#pragma omp parallel num_threads(lowbit::num_threads())
    {
      std::vector<formats::BlockParams> params(static_cast<size_t>(nblocks));
#pragma omp for schedule(static)
      for (int64_t r = 0; r < rows; ++r) {
        // The whole row at once: some formats' weighted fits look at the row (formats::Format::fit_row).
        fmt.fit_row(std::span<const float>(W + r * cols, static_cast<size_t>(cols)), importance, params);
        for (int64_t k = 0; k < nblocks; ++k) {
          const size_t len = static_cast<size_t>(std::min(b, cols - k * b));  // the last block may be partial
          std::span<const float> w(W + r * cols + k * b, len);
          std::byte* out = res.data.data() + static_cast<size_t>(r) * res.row_bytes + static_cast<size_t>(k) * bb;
          formats::encode_block(fmt, w, params[static_cast<size_t>(k)], out);
          formats::decode_block(fmt, out, std::span<float>(res.dequant.data() + r * cols + k * b, len));
        }
      }
    }
    return res;
  }

 private:
  QuantOptions opts_;
};

}  // namespace

std::unique_ptr<Quantizer> make_rtn_quantizer(const QuantOptions& opts) { return std::make_unique<RtnQuantizer>(opts); }

}  // namespace lowbit::quant
