// Quantizer registry, Hessian accumulation and the layer error measure.
#include "quant/quantizer.h"

#include <cblas.h>

#include <cmath>
#include <functional>

#include "lowbit/error.h"

namespace lowbit::quant {

std::unique_ptr<Quantizer> make_rtn_quantizer(const QuantOptions& opts);
std::unique_ptr<Quantizer> make_gptq_quantizer(const QuantOptions& opts);
std::unique_ptr<Quantizer> make_gptaq_quantizer(const QuantOptions& opts);

namespace {
struct Entry {
  const char* name;
  std::unique_ptr<Quantizer> (*make)(const QuantOptions&);
};
// One line per method.
constexpr Entry kRegistry[] = {
    {"rtn", make_rtn_quantizer},
    {"gptq", make_gptq_quantizer},
    {"gptaq", make_gptaq_quantizer},
};
}  // namespace

std::vector<std::string> quantizer_names() {
  std::vector<std::string> out;
  for (const auto& e : kRegistry) out.emplace_back(e.name);
  return out;
}

std::unique_ptr<Quantizer> make_quantizer(std::string_view name, const QuantOptions& opts) {
  for (const auto& e : kRegistry)
    if (name == e.name) return e.make(opts);
  std::string known;
  for (const auto& e : kRegistry) known += (known.empty() ? "" : ", ") + std::string(e.name);
  fail("quantizer", std::string(name), "unknown quantization method (known: " + known + ")");
}

HessianAccumulator::HessianAccumulator(int64_t cols) : cols_(cols) {
  if (cols <= 0) fail("HessianAccumulator", "cols", "must be positive");
  sum_.assign(static_cast<size_t>(cols * cols), 0.0);
}

void HessianAccumulator::add(const float* X, int64_t n) {
  if (n <= 0) return;
  scratch_.resize(static_cast<size_t>(n * cols_));
  for (size_t i = 0; i < scratch_.size(); ++i) scratch_[i] = X[i];
  // sum += X^T X (cols x cols), upper triangle of the row-major result.
  cblas_dsyrk(CblasRowMajor, CblasUpper, CblasTrans, static_cast<blasint>(cols_), static_cast<blasint>(n), 1.0,
              scratch_.data(), static_cast<blasint>(cols_), 1.0, sum_.data(), static_cast<blasint>(cols_));
  n_ += n;
}

LayerStats HessianAccumulator::stats() const {
  LayerStats s;
  s.cols = cols_;
  s.n_samples = n_;
  const size_t c = static_cast<size_t>(cols_);
  s.H.assign(c * c, 0.0);
  s.act_sq_mean.assign(c, 0.0);
  if (n_ == 0) return s;
  const double k = 2.0 / static_cast<double>(n_);
  for (size_t i = 0; i < c; ++i) {
    for (size_t j = i; j < c; ++j) {
      const double v = k * sum_[i * c + j];
      s.H[i * c + j] = v;
      s.H[j * c + i] = v;
    }
    s.act_sq_mean[i] = sum_[i * c + i] / static_cast<double>(n_);
  }
  return s;
}

double layer_error(const float* W, const float* Q, int64_t rows, int64_t cols, const LayerStats& stats) {
  if (stats.cols != cols || static_cast<int64_t>(stats.H.size()) != cols * cols)
    fail("layer_error", "stats.cols", "does not match the weight matrix");
  const size_t c = static_cast<size_t>(cols);
  std::vector<double> d(c), hd(c);
  double total = 0.0;
  for (int64_t r = 0; r < rows; ++r) {
    for (size_t j = 0; j < c; ++j) d[j] = static_cast<double>(W[r * cols + j]) - Q[r * cols + j];
    cblas_dsymv(CblasRowMajor, CblasUpper, static_cast<blasint>(c), 1.0, stats.H.data(), static_cast<blasint>(c),
                d.data(), 1, 0.0, hd.data(), 1);
    for (size_t j = 0; j < c; ++j) total += d[j] * hd[j];
  }
  return total;
}

namespace detail {
size_t checked_row_bytes(const formats::Format& fmt, int64_t rows, int64_t cols, const char* who) {
  if (rows < 0 || cols <= 0)
    fail(who, "shape", "expected rows >= 0 and cols >= 1, got " + std::to_string(rows) + " x " + std::to_string(cols));
  return formats::row_bytes(fmt, cols);
}

void check_finite(const float* W, int64_t rows, int64_t cols, const char* who) {
  // Checked up front: the quantizers' parallel loops must not throw (an exception cannot leave an OpenMP region).
  const int64_t n = rows * cols;
  for (int64_t k = 0; k < n; ++k)
    if (!std::isfinite(W[k]))
      fail(who, "weights", "non-finite weight " + std::to_string(W[k]) + " at row " + std::to_string(k / cols) +
                               ", column " + std::to_string(k % cols));
}
}  // namespace detail

}  // namespace lowbit::quant
