// The interfaces a quantization method can implement besides the matrix-level Quantizer (quantizer.h):
//  - a BlockTransform edits one block's tensors together before its linears are quantized (an equivalence
//    transform such as AWQ's per-channel scales: columns of the linears that share an input, rows of the
//    linear that produces it, RMSNorm weights), reading the statistics of every site's input;
//  - a model transform rewrites the whole model up front (rotations: quant/rotate/rotate.h).
// The pipeline (quantize_model.cpp) owns the statistics and the order; the role table (io/arch.h) says which
// linears share an input and what produces it.
#pragma once
#include <array>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "formats/format.h"
#include "io/arch.h"
#include "lowbit/model_file.h"
#include "quant/quantizer.h"

namespace lowbit::quant {

// Statistics of one site's input (rows = tokens), under the block's current weights.
struct SiteStats {
  LayerStats hessian;              // H = 2/N X^T X
  std::vector<double> mean_abs;    // [cols] mean |x_j|
};

// The f32 working copy of block `layer`: every tensor of the role table present in the model, the format each
// linear will be stored in (null: kept unquantized) and the statistics of each site's input.
struct BlockWork {
  const ModelConfig* config = nullptr;
  const io::ArchRoles* roles = nullptr;
  int layer = -1;
  std::vector<std::vector<float>> values;                        // [roles->block.size()]; empty: not in the model
  std::vector<std::shared_ptr<const formats::Format>> formats;   // [roles->block.size()]; null: not quantized
  std::array<SiteStats, io::kSites> sites;

  size_t index(std::string_view role, std::string_view suffix = "weight") const;
  std::vector<float>& at(std::string_view role, std::string_view suffix = "weight") {
    return values[index(role, suffix)];
  }
  int64_t rows(size_t i) const { return io::dim_size(*config, roles->block[i].rows); }
  int64_t cols(size_t i) const { return io::dim_size(*config, roles->block[i].cols); }
};

class BlockTransform {
 public:
  virtual ~BlockTransform() = default;
  virtual std::string name() const = 0;
  // Edits w.values so that the block computes the same function (up to float rounding) while its linears
  // quantize better. solver: the method that will quantize the linears afterwards ("rtn", "gptq", ...).
  virtual void apply(BlockWork& w, std::string_view solver) const = 0;
};

}  // namespace lowbit::quant
