// What the byte-budget planner (--target-size / --target-bpw) knows about each tensor: every candidate format's
// stored size and measured error, and a sensitivity coefficient that turns an error into predicted end-to-end damage
// (KL divergence from the full-precision model). HIGGS (Malinovskii et al. 2024) shows the end-to-end error is close
// to linear in the per-layer errors, so damage(tensor, format) = coefficient x error(tensor, format), summed over the
// tensors, predicts the whole; allocate.h then minimises that sum exactly.
//
// A block linear's error is its output error on the calibration inputs, sum over rows (w - q)^T H (w - q), with the
// method that will run (GPTQ, GPTAQ, ...), measured in quantize_model's calibrated run. Its coefficient is measured
// once: the tensor alone at a reference format inside the otherwise full-precision model, KLD on probe windows,
// divided by that quantization's error. The embedding and the output head are not linears of a block: each of their
// candidates' KLD is measured directly (kind "direct", coefficient 1).
//
// The measurements are cached in one JSON file per (source checksum, calibration, method, candidates, probe) key,
// so a second budget on the same model re-plans without measuring.
#pragma once
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "lowbit/model.h"

namespace lowbit::quant::budget {

struct CandidateMeasure {
  std::string format;  // a llama.cpp type ("q4_K"), a lowbit format ("int4g64a") or "f16"
  uint64_t bytes = 0;  // the tensor's stored bytes in it
  double error = 0;    // linear: output error sum (w - q)^T H (w - q); direct: the KLD with it
};

struct TensorMeasure {
  std::string name;
  std::vector<int64_t> shape;  // rows x cols
  bool direct = false;         // errors are KLDs (embedding, head); else output errors x coefficient
  std::vector<CandidateMeasure> candidates;
  std::string reference;       // linear: the format its coefficient was measured at
  double reference_kld = 0;    // KLD on the probe windows with this tensor alone in the reference format
  double coefficient = 0;      // reference_kld / the reference format's error (direct: 1)
  // Predicted KLD contribution of candidate c.
  double damage(size_t c) const { return direct ? candidates[c].error : coefficient * candidates[c].error; }
};

struct Measurement {
  std::string key;
  std::vector<TensorMeasure> tensors;
  double seconds = 0;       // wall time of the measurement pass, of which:
  double solve_seconds = 0; //   the candidates' quantizations (the method's solver, or rtn for direct tensors)
  double probe_seconds = 0; //   the probe's KLD runs (the sensitivities, the direct tensors' candidates)
  int probe_windows = 0, probe_len = 0;
};

// The cache file for a key: $LOWBIT_CACHE_DIR, else $XDG_CACHE_HOME/lowbit, else ~/.cache/lowbit, "measure-<key>.json".
std::string default_cache_path(const std::string& key);
// The measurement in path if it exists and was made under `key` (a file of another key, or unreadable: nullopt).
std::optional<Measurement> load_measurement(const std::string& path, const std::string& key);
// Writes atomically (temp file + rename), creating the directory.
void save_measurement(const std::string& path, const Measurement& m);

// The full-precision model on the probe windows: its log-probabilities once, then the KLD of the same model with
// some weights replaced (replace_weight on model()). Hidden states entering each block are carried forward
// (advance), so a tensor of block l costs the blocks from l on, not the whole model.
class KldProbe {
 public:
  KldProbe(std::shared_ptr<const ModelFile> file, std::vector<std::vector<int32_t>> windows);
  Model& model() { return model_; }
  int n_windows() const { return static_cast<int>(windows_.size()); }
  int len() const { return len_; }
  // The hidden states now enter block `layer()`; advance() runs that block with the model's current weights.
  int layer() const { return layer_; }
  void advance();
  // Mean KLD (base || model as it is now) over every probe position, running from the current block's input.
  double kld_from_here();
  // The same from the embeddings (a replaced embedding is seen).
  double kld_from_start();
  // The same for another model of the same vocabulary (a quantized file).
  double kld_of(Model& other);

 private:
  double kld_of_hidden(Model& m, std::vector<float>& h, int from_layer);
  std::shared_ptr<const ModelFile> file_;
  std::vector<std::vector<int32_t>> windows_;
  int len_ = 0, layer_ = 0;
  Model model_;
  std::vector<float> h_;         // n_windows x len x dim: the full-precision states entering block layer_
  std::vector<float> base_logp_; // n_windows x len x n_vocab: log-softmax of the full-precision logits
};

}  // namespace lowbit::quant::budget
