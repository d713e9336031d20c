#include "quant/quantize_model.h"

#include <chrono>
#include <cmath>
#include <mutex>

#include "core/half.h"
#include "formats/format.h"
#include "io/gguf.h"
#include "io/gguf_writer.h"
#include "io/packed.h"
#include "lowbit/error.h"
#include "ops/ops.h"

namespace lowbit::quant {

namespace {

bool is_linear_weight(const TensorInfo& t) {
  return t.shape.size() == 2 && t.name.size() > 7 && t.name.compare(t.name.size() - 7, 7, ".weight") == 0;
}

// A pattern matches whole dot-separated parts of a name: "attn_v" matches "blk.3.attn_v.weight", "blk.3" matches
// every tensor of layer 3, "output.weight" matches the head but not "blk.0.attn_output.weight".
bool matches(const std::string& name, const std::string& pattern) {
  if (pattern.empty()) return false;
  for (size_t pos = name.find(pattern); pos != std::string::npos; pos = name.find(pattern, pos + 1)) {
    const size_t end = pos + pattern.size();
    if ((pos == 0 || name[pos - 1] == '.') && (end == name.size() || name[end] == '.')) return true;
  }
  return false;
}

}  // namespace

QuantizeReport quantize_model(const std::string& src, const std::string& out, const QuantizeModelOptions& o) {
  const auto t0 = std::chrono::steady_clock::now();
  auto quantizer = make_quantizer(o.method, o.qopts);
  if (o.method != "rtn")
    fail(src, "--method", "'" + o.method + "' needs calibration statistics; this quantize pipeline runs rtn only so far");
  formats::make_format(o.format);  // reject a bad name before any work
  if (o.keep_dtype != DType::F16 && o.keep_dtype != DType::BF16 && o.keep_dtype != DType::F32)
    fail(src, "keep dtype", "expected f16, bf16 or f32");
  for (const auto& [pat, fname] : o.overrides) formats::make_format(fname);

  auto model = load_model(src);
  if (model->format != "gguf")
    fail(src, "source", "quantize reads GGUF sources for now (found " + model->format + ")");
  for (const auto& t : model->tensors)
    if (!t.packed.empty()) fail(src, "tensor '" + t.name + "'", "is already quantized (" + t.packed + ")");
  auto gguf = io::GgufFile::open(src);

  io::GgufWriter w;
  for (const auto& [key, value] : gguf->kv()) w.set(key, value);
  w.set_string("lowbit.version", LOWBIT_VERSION);
  w.set_string("lowbit.quantize.method", o.method);
  w.set_string("lowbit.quantize.format", o.format);
  w.set_string("lowbit.quantize.source", src);

  QuantizeReport rep;
  rep.tensors.resize(model->tensors.size());
  std::mutex mu;
  size_t done = 0;
  const size_t total = model->tensors.size();
  for (size_t i = 0; i < total; ++i) {
    const TensorInfo& t = model->tensors[i];
    TensorReport& r = rep.tensors[i];
    r.name = t.name;
    r.shape = t.shape;
    std::string fname = o.format;
    for (const auto& [pat, f] : o.overrides)
      if (matches(t.name, pat)) fname = f;
    bool keep = !is_linear_weight(t) || (t.dtype != DType::F32 && t.dtype != DType::F16 && t.dtype != DType::BF16);
    for (const auto& k : o.keep)
      if (matches(t.name, k)) keep = true;
    std::unique_ptr<formats::Format> fmt;
    if (!keep) {
      fmt = formats::make_format(fname);
      if (t.cols() % fmt->block() != 0) {
        keep = true;
        r.note = std::to_string(t.cols()) + " columns are not a multiple of " + fname + "'s block of " +
                 std::to_string(fmt->block());
      }
    }
    if (keep) {
      const bool convert = t.shape.size() == 2 && t.dtype != o.keep_dtype &&
                           (t.dtype == DType::F32 || t.dtype == DType::F16 || t.dtype == DType::BF16);
      const DType dt = convert ? o.keep_dtype : t.dtype;
      r.stored = std::string(dtype_name(dt));
      r.bits_per_weight = 8.0 * dtype_info(dt).block_bytes / dtype_info(dt).block;
      const TensorInfo* tp = &t;
      w.add_tensor(t.name, dt, t.shape, [tp, dt, convert, &mu, &done, &o, total](const io::GgufWriter::Sink& sink) {
        if (!convert) {
          sink(tp->data, tp->nbytes);
        } else {  // row by row: widen to f32, then narrow to the kept dtype
          const ops::WeightView v = ops::view_of(*tp);
          std::vector<float> row(static_cast<size_t>(v.cols));
          std::vector<uint16_t> half(static_cast<size_t>(v.cols));
          for (int64_t rr = 0; rr < v.rows; ++rr) {
            ops::get_row(v, rr, row.data());
            if (dt == DType::F32) {
              sink(row.data(), row.size() * sizeof(float));
              continue;
            }
            for (size_t k = 0; k < row.size(); ++k) half[k] = dt == DType::F16 ? f32_to_f16(row[k]) : f32_to_bf16(row[k]);
            sink(half.data(), half.size() * sizeof(uint16_t));
          }
        }
        std::lock_guard<std::mutex> lock(mu);
        if (o.progress) o.progress(++done, total, tp->name);
      });
      continue;
    }
    const int64_t rows = t.rows(), cols = t.cols();
    const size_t rb = formats::row_bytes(*fmt, cols);
    r.stored = fname;
    r.bits_per_weight = 8.0 * static_cast<double>(rb) / static_cast<double>(cols);
    w.set_string(io::packed_format_key(t.name), fname);
    w.set(io::packed_shape_key(t.name), io::GgufWriter::array(io::GgufType::U64, {rows, cols}));
    // The weights are widened and quantized only when the writer asks for this tensor: one tensor resident.
    const TensorInfo* tp = &t;
    auto fmt_shared = std::shared_ptr<formats::Format>(std::move(fmt));
    w.add_tensor(t.name, DType::I8, {rows, static_cast<int64_t>(rb)},
                 [tp, fmt_shared, rows, cols, &r, &quantizer, &mu, &done, &o, total](const io::GgufWriter::Sink& sink) {
                   std::vector<float> W(static_cast<size_t>(rows * cols));
                   const ops::WeightView v = ops::view_of(*tp);
                   for (int64_t row = 0; row < rows; ++row) ops::get_row(v, row, W.data() + row * cols);
                   QuantResult q = quantizer->quantize(W.data(), rows, cols, *fmt_shared, nullptr);
                   double num = 0, den = 0;
                   for (size_t k = 0; k < W.size(); ++k) {
                     const double d = static_cast<double>(W[k]) - q.dequant[k];
                     num += d * d;
                     den += static_cast<double>(W[k]) * W[k];
                   }
                   r.rel_error = den > 0 ? std::sqrt(num / den) : 0.0;
                   sink(q.data.data(), q.data.size());
                   std::lock_guard<std::mutex> lock(mu);
                   if (o.progress) o.progress(++done, total, tp->name);
                 });
  }
  w.write(out);
  for (size_t i = 0; i < total; ++i) {
    const TensorInfo& t = model->tensors[i];
    rep.params += t.numel();
    rep.bytes += static_cast<uint64_t>(std::llround(rep.tensors[i].bits_per_weight * static_cast<double>(t.numel()) / 8.0));
  }
  rep.bits_per_weight = rep.params > 0 ? 8.0 * static_cast<double>(rep.bytes) / static_cast<double>(rep.params) : 0;
  rep.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return rep;
}

}  // namespace lowbit::quant
