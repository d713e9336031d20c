// The model-level quantize pipeline (floor 5): source GGUF -> lowbit packed GGUF, one tensor at a time so only
// one tensor's weights are resident. This first version runs calibration-free methods (rtn); methods that
// need activation statistics (gptq) are refused with a clear message until the calibration pipeline lands.
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "lowbit/dtype.h"
#include "quant/quantizer.h"

namespace lowbit::quant {

struct QuantizeModelOptions {
  std::string method = "rtn";
  std::string format = "int4g64a";       // default format for the linear layers
  QuantOptions qopts;
  // Tensors kept unquantized. Patterns match whole dot-separated parts of a name: "token_embd", "output.weight",
  // "attn_v" (every layer's), "blk.0" (all of layer 0).
  std::vector<std::string> keep = {"token_embd.weight", "output.weight"};
  // Kept 2-D tensors (embeddings, output head) are stored in this dtype (F16, BF16 or F32); 1-D norms stay f32.
  DType keep_dtype = DType::F16;
  // Per-tensor format overrides: (pattern as for keep, format), the last match wins (e.g. {"attn_v", "int6g64a"}).
  std::vector<std::pair<std::string, std::string>> overrides;
  // Called after each tensor: (done, total, name).
  std::function<void(size_t, size_t, const std::string&)> progress;
};

struct TensorReport {
  std::string name;
  std::vector<int64_t> shape;
  std::string stored;       // format name, or the dtype kept
  double bits_per_weight = 0;
  double rel_error = 0;     // ||W - Q||_F / ||W||_F (weight space; 0 for kept tensors)
  std::string note;         // why a tensor was kept, if it was
};

struct QuantizeReport {
  std::vector<TensorReport> tensors;
  uint64_t bytes = 0;       // tensor bytes written
  int64_t params = 0;
  double bits_per_weight = 0;
  double seconds = 0;
};

// Quantizes src (a GGUF model with f32/f16/bf16 tensors) into out, atomically. Throws lowbit::Error.
QuantizeReport quantize_model(const std::string& src, const std::string& out, const QuantizeModelOptions& o);

}  // namespace lowbit::quant
