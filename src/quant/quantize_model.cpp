#include "quant/quantize_model.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <array>
#include <chrono>
#include <cmath>
#include <cstring>
#include <map>
#include <mutex>
#include <optional>

#include "core/checksum.h"
#include "core/half.h"
#include "formats/format.h"
#include "formats/ggml.h"
#include "io/gguf.h"
#include "io/gguf_metadata.h"
#include "io/gguf_writer.h"
#include "io/packed.h"
#include "lowbit/error.h"
#include "lowbit/model.h"
#include "ops/ops.h"
#include "quant/gguf_presets.h"
#include "quant/resume.h"

namespace lowbit::quant {

namespace {

bool is_matrix_weight(const TensorInfo& t) {
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

// Layer index and role of "blk.<l>.<role>.weight", or -1.
int layer_of(const std::string& name, std::string* role) {
  int l = -1;
  char r[64] = {0};
  if (std::sscanf(name.c_str(), "blk.%d.%63[a-z_].weight", &l, r) != 2) return -1;
  if (role) *role = r;
  return l;
}

// Which captured input feeds a block's linear layer.
int input_of(const std::string& role) {
  if (role == "attn_q" || role == "attn_k" || role == "attn_v") return static_cast<int>(LinearInput::Attention);
  if (role == "attn_output") return static_cast<int>(LinearInput::AttentionOutput);
  if (role == "ffn_gate" || role == "ffn_up") return static_cast<int>(LinearInput::Ffn);
  if (role == "ffn_down") return static_cast<int>(LinearInput::FfnDown);
  return -1;
}

std::vector<float> widen(const TensorInfo& t) {
  std::vector<float> W(static_cast<size_t>(t.numel()));
  const ops::WeightView v = ops::view_of(t);
  for (int64_t r = 0; r < v.rows; ++r) ops::get_row(v, r, W.data() + r * v.cols);
  return W;
}

double rel_weight_error(const std::vector<float>& W, const std::vector<float>& Q) {
  double num = 0, den = 0;
  for (size_t k = 0; k < W.size(); ++k) {
    const double d = static_cast<double>(W[k]) - Q[k];
    num += d * d;
    den += static_cast<double>(W[k]) * W[k];
  }
  return den > 0 ? std::sqrt(num / den) : 0.0;
}

// Runs a quantizer on one tensor; its errors (a non-finite weight, a singular Hessian, ...) name the tensor.
QuantResult quantize_tensor(const Quantizer& q, const std::string& src, const TensorInfo& t, const std::vector<float>& W,
                            const formats::Format& fmt, const LayerStats* st) {
  try {
    return q.quantize(W.data(), t.rows(), t.cols(), fmt, st);
  } catch (const Error& e) {
    fail(src, "tensor '" + t.name + "'", std::string(q.name()) + " " + fmt.name() + " failed: " + e.message());
  }
}

// Drops a source tensor's pages from the resident set once it has been consumed (see MappedFile::release).
void release_source(const ModelFile& m, const TensorInfo& t) {
  for (const auto& map : m.mappings) map->release(t.data, t.nbytes);
}

// Output row r of a Q/K projection comes from source row perm[r]: RoPE's pairing is baked into the row order.
// HalfSplit pairs (i, i + d/2) of each head, Interleaved (2i, 2i + 1); rows past rope_dim are not rotated.
std::vector<int64_t> rope_row_perm(int n_heads, int head_dim, int rope_dim, RopeStyle from, RopeStyle to) {
  std::vector<int64_t> perm(static_cast<size_t>(n_heads) * head_dim);
  for (int64_t k = 0; k < static_cast<int64_t>(perm.size()); ++k) perm[k] = k;
  if (from == to) return perm;
  const int half = rope_dim / 2;
  for (int h = 0; h < n_heads; ++h) {
    const int64_t b = static_cast<int64_t>(h) * head_dim;
    for (int i = 0; i < half; ++i) {
      const int64_t inter0 = b + 2 * i, inter1 = b + 2 * i + 1, split0 = b + i, split1 = b + i + half;
      if (to == RopeStyle::Interleaved) {
        perm[inter0] = split0, perm[inter1] = split1;
      } else {
        perm[split0] = inter0, perm[split1] = inter1;
      }
    }
  }
  return perm;
}

// What to do with one tensor.
struct Plan {
  bool keep = true;
  DType keep_dtype = DType::F32;
  std::shared_ptr<formats::Format> fmt;
  DType ggml = DType::F32;  // fmt is a llama.cpp block type: stored as that GGUF type (else lowbit's packed I8)
  int layer = -1;
  int input = -1;  // LinearInput of a block linear quantized with calibration
  const std::vector<int64_t>* perm = nullptr;  // output row order (Q/K rows re-paired for the output's RoPE)
};

// The f32 weights encoded in bytes, block by block exactly as the quantizers decode them (formats::decode_block),
// so a resumed run swaps in the same values the original run did.
std::vector<float> decode_blocks(const formats::Format& fmt, const std::vector<std::byte>& bytes, int64_t rows,
                                 int64_t cols) {
  std::vector<float> out(static_cast<size_t>(rows * cols));
  const int64_t b = fmt.block(), nblocks = formats::row_blocks(fmt, cols);
  const size_t rb = formats::row_bytes(fmt, cols), bb = fmt.block_bytes();
  if (bytes.size() != rb * static_cast<size_t>(rows)) fail("", "saved tensor", "size does not match its format");
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t k = 0; k < nblocks; ++k) {
      const size_t len = static_cast<size_t>(std::min(b, cols - k * b));
      formats::decode_block(fmt, bytes.data() + static_cast<size_t>(r) * rb + static_cast<size_t>(k) * bb,
                            std::span<float>(out.data() + r * cols + k * b, len));
    }
  return out;
}

// Layer-by-layer calibrated quantization: produces each block's encoded tensors when the writer first asks.
class CalibratedRun {
 public:
  CalibratedRun(std::shared_ptr<const ModelFile> model, const std::vector<Plan>& plans, const Quantizer& q,
                const std::vector<std::vector<int32_t>>& windows, std::vector<TensorReport>& reports, ResumeStore& store)
      : file_(model), plans_(plans), quantizer_(q), reports_(reports), store_(store),
        model_(model, static_cast<int>(windows[0].size())) {
    len_ = static_cast<int>(windows[0].size());
    dim_ = model->config.dim;
    x_.resize(windows.size() * static_cast<size_t>(len_) * dim_);
    for (size_t s = 0; s < windows.size(); ++s) model_.embed(windows[s], x_.data() + s * len_ * dim_);
  }

  // Encoded bytes of tensor i (a block linear); runs blocks up to its layer first.
  std::vector<std::byte> take(size_t i) {
    const int l = plans_[i].layer;
    while (done_layers_ <= l) run_layer(done_layers_++);
    auto it = encoded_.find(i);
    std::vector<std::byte> out = std::move(it->second);
    encoded_.erase(it);
    return out;
  }

 private:
  void run_layer(int l) {
    // A block a previous run finished (--resume): its saved tensors, decoded, stand in for quantizing it again.
    std::map<size_t, SavedTensor> saved;
    bool all_saved = true;
    for (size_t i = 0; i < plans_.size() && all_saved; ++i) {
      if (plans_[i].layer != l || plans_[i].keep) continue;
      auto st = store_.load(i, file_->tensors[i].name);
      if (st) saved.emplace(i, std::move(*st));
      else all_saved = false;
    }
    if (all_saved) return replay_layer(l, saved);
    const ModelConfig& c = file_->config;
    const std::array<int64_t, 4> cols = {c.dim, static_cast<int64_t>(c.n_heads) * c.head_dim, c.dim, c.ffn_dim};
    std::vector<HessianAccumulator> acc;
    for (int64_t k : cols) acc.emplace_back(k);
    const int n_seq = static_cast<int>(x_.size() / (static_cast<size_t>(len_) * dim_));
    Model::CaptureFn capture = [&](int, LinearInput which, const float* in, int64_t rows, int64_t) {
      acc[static_cast<int>(which)].add(in, rows);
    };
    // capture on the unmodified block, inputs from quantized blocks < l; all sequences in one batched call
    model_.capture_site(l, x_.data(), n_seq, len_, LinearInput::FfnDown, capture);
    std::array<LayerStats, 4> stats;
    for (int k = 0; k < 4; ++k) stats[k] = acc[k].stats();
    decoded_.clear();
    for (size_t i = 0; i < plans_.size(); ++i) {
      const Plan& p = plans_[i];
      if (p.layer != l || p.keep) continue;
      const TensorInfo& t = file_->tensors[i];
      std::vector<float> W = widen(t);
      const LayerStats& st = stats[p.input];
      QuantResult q = quantize_tensor(quantizer_, file_->path, t, W, *p.fmt, &st);
      TensorReport& r = reports_[i];
      r.rel_error = rel_weight_error(W, q.dequant);
      const double err = layer_error(W.data(), q.dequant.data(), t.rows(), t.cols(), st);
      const std::vector<float> zero(W.size(), 0.0f);
      const double ref = layer_error(W.data(), zero.data(), t.rows(), t.cols(), st);
      r.rel_output_error = ref > 0 ? std::sqrt(err / ref) : 0.0;
      store_.save(i, t.name, q.data, r.rel_error, r.rel_output_error);
      encoded_[i] = std::move(q.data);
      swap_in(t, std::move(q.dequant));
    }
    advance(l);
  }

  // The model computes with t's decoded weights from now on; the source's pages are dropped.
  void swap_in(const TensorInfo& t, std::vector<float> decoded) {
    auto buf = std::make_shared<std::vector<float>>(std::move(decoded));
    TensorInfo dq = t;
    dq.dtype = DType::F32;
    dq.data = reinterpret_cast<const std::byte*>(buf->data());
    dq.nbytes = buf->size() * sizeof(float);
    model_.replace_weight(dq);
    release_source(*file_, t);
    decoded_.push_back(buf);
  }

  // The windows go through the (quantized) block l: the next block sees what it outputs.
  void advance(int l) {
    const size_t step = static_cast<size_t>(len_) * dim_;
    model_.forward_layer(l, x_.data(), static_cast<int>(x_.size() / step), len_, {});
  }

  // Block l from saved tensors: the same decoded weights swapped in and the same forward pass as run_layer.
  void replay_layer(int l, std::map<size_t, SavedTensor>& saved) {
    decoded_.clear();
    for (auto& [i, st] : saved) {
      const TensorInfo& t = file_->tensors[i];
      reports_[i].rel_error = st.rel_error;
      reports_[i].rel_output_error = st.rel_output_error;
      std::vector<float> decoded = decode_blocks(*plans_[i].fmt, st.bytes, t.rows(), t.cols());
      encoded_[i] = std::move(st.bytes);
      swap_in(t, std::move(decoded));
    }
    advance(l);
  }

  std::shared_ptr<const ModelFile> file_;
  const std::vector<Plan>& plans_;
  const Quantizer& quantizer_;
  std::vector<TensorReport>& reports_;
  ResumeStore& store_;
  Model model_;
  int len_ = 0, dim_ = 0, done_layers_ = 0;
  std::vector<float> x_;  // n_seq x len x dim activations entering the next block
  std::map<size_t, std::vector<std::byte>> encoded_;
  std::vector<std::shared_ptr<std::vector<float>>> decoded_;  // the current block's decoded weights
};

}  // namespace

// Everything the output bytes depend on: lowbit's version, the source (path and checksum), every option and the
// calibration windows. Progress saved under another fingerprint is never reused.
static std::string run_fingerprint(const std::string& src, const std::string& source_checksum, const QuantizeModelOptions& o) {
  nlohmann::json j = {{"version", LOWBIT_VERSION}, {"source", src}, {"source_fnv1a64", source_checksum},
                      {"method", o.method}, {"format", o.format}, {"keep", o.keep},
                      {"keep_dtype", dtype_name(o.keep_dtype)}, {"overrides", o.overrides},
                      {"calib_source", o.calib_source}, {"use_importance", o.qopts.use_importance},
                      {"percdamp", o.qopts.percdamp}, {"block_size", o.qopts.block_size},
                      {"act_order", o.qopts.act_order}, {"static_groups", o.qopts.static_groups},
                      {"allow_requantize", o.allow_requantize}};
  uint64_t h = fnv1a64(nullptr, 0);
  for (const auto& win : o.calib) {
    const uint64_t n = win.size();
    h = fnv1a64(reinterpret_cast<const std::byte*>(&n), sizeof n, h);
    h = fnv1a64(reinterpret_cast<const std::byte*>(win.data()), win.size() * sizeof(int32_t), h);
  }
  j["calib_fnv1a64"] = hex64(h);
  const std::string text = j.dump();
  return hex64(fnv1a64(reinterpret_cast<const std::byte*>(text.data()), text.size()));
}

QuantizeReport quantize_model(const std::string& src, const std::string& out, const QuantizeModelOptions& o) {
  const auto t0 = std::chrono::steady_clock::now();
  auto quantizer = make_quantizer(o.method, o.qopts);
  const bool calibrated = !o.calib.empty();
  if (!calibrated && (o.method != "rtn" || o.qopts.use_importance))
    fail(src, "--method", "'" + o.method + "'" + (o.qopts.use_importance ? " with importance" : "") +
                              " needs calibration statistics: pass --calib FILE");
  // "gguf:<PRESET>": llama-quantize's per-tensor mixture (quant/gguf_presets.h); else one format for every linear.
  std::optional<GgufPreset> preset;
  if (o.format.rfind("gguf:", 0) == 0) {
    preset = gguf_preset(o.format.substr(5));
    if (!preset) {
      std::string names;
      for (const auto& n : gguf_preset_names()) names += (names.empty() ? "" : ", ") + n;
      fail(src, "--format", "unknown llama.cpp preset '" + o.format.substr(5) + "' (expected gguf: followed by one of " +
                                names + ")");
    }
  } else {
    formats::make_format(o.format);  // reject a bad name before any work
  }
  for (const auto& ov : o.overrides) formats::make_format(ov.second);
  if (o.keep_dtype != DType::F16 && o.keep_dtype != DType::BF16 && o.keep_dtype != DType::F32)
    fail(src, "keep dtype", "expected f16, bf16 or f32");
  if (calibrated)
    for (const auto& w : o.calib)
      if (w.size() != o.calib[0].size() || w.size() < 2) fail(o.calib_source, "calibration", "windows must share one length >= 2");

  auto model = load_model(src);
  for (const auto& t : model->tensors)
    if (!t.packed.empty()) fail(src, "tensor '" + t.name + "'", "is already quantized (" + t.packed + ")");
  const ModelConfig& cfg = model->config;

  io::GgufWriter w;
  std::vector<int64_t> q_perm, k_perm;  // empty: rows stay in source order
  std::vector<float> rope_factors;      // llama3 scaling from a HF config, written as rope_freqs.weight
  if (model->format == "gguf") {  // every key carries over
    auto gguf = io::GgufFile::open(src);
    for (const auto& [key, value] : gguf->kv()) w.set(key, value);
  } else {  // HF directory or llama2.c checkpoint: written as the equivalent GGUF
    io::set_config_metadata(w, cfg);
    io::set_tokenizer_metadata(w, model->tokenizer, cfg.n_vocab);
    const RopeStyle out_style = io::gguf_rope_style(io::gguf_arch_of(cfg));
    if (cfg.rope_style != out_style) {
      q_perm = rope_row_perm(cfg.n_heads, cfg.head_dim, cfg.rope_dim, cfg.rope_style, out_style);
      k_perm = rope_row_perm(cfg.n_kv_heads, cfg.head_dim, cfg.rope_dim, cfg.rope_style, out_style);
    }
    if (cfg.rope_scaling.type == "llama3") {
      ModelConfig plain = cfg;
      plain.rope_scaling = RopeScaling{};
      const std::vector<float> base = rope_inv_freq(plain, *model), scaled = rope_inv_freq(cfg, *model);
      for (size_t i = 0; i < base.size(); ++i) rope_factors.push_back(base[i] / scaled[i]);
    }
  }
  w.set_string("lowbit.version", LOWBIT_VERSION);
  w.set_string("lowbit.quantize.method", o.method);
  w.set_string("lowbit.quantize.format", o.format);
  w.set_string("lowbit.quantize.source", src);
  std::string source_checksum;
  {  // checksum of the weight files in 64 MiB steps, dropping each step's pages so hashing does not pull them in
    uint64_t h = fnv1a64(nullptr, 0);
    for (const auto& mf : model->mappings)
      for (uint64_t off = 0; off < mf->size(); off += (64ull << 20)) {
        const uint64_t n = std::min<uint64_t>(64ull << 20, mf->size() - off);
        h = fnv1a64(mf->data() + off, static_cast<size_t>(n), h);
        mf->release(mf->data() + off, n);
      }
    source_checksum = hex64(h);
    w.set_string("lowbit.quantize.source_fnv1a64", source_checksum);
  }
  if (calibrated) {
    w.set_string("lowbit.quantize.calib_source", o.calib_source);
    w.set_u32("lowbit.quantize.calib_samples", static_cast<uint32_t>(o.calib.size()));
    w.set_u32("lowbit.quantize.calib_len", static_cast<uint32_t>(o.calib[0].size()));
  }

  // Decide every tensor's fate first.
  const size_t total = model->tensors.size();
  std::vector<Plan> plans(total);
  QuantizeReport rep;
  rep.tensors.resize(total);
  for (size_t i = 0; i < total; ++i) {
    const TensorInfo& t = model->tensors[i];
    Plan& p = plans[i];
    TensorReport& r = rep.tensors[i];
    r.name = t.name;
    r.shape = t.shape;
    if (!q_perm.empty()) {  // Q/K weights and biases of every block
      int l = -1;
      char role[64] = {0}, kind[16] = {0};
      if (std::sscanf(t.name.c_str(), "blk.%d.%63[a-z_].%15s", &l, role, kind) == 3 &&
          (std::strcmp(kind, "weight") == 0 || std::strcmp(kind, "bias") == 0)) {
        if (std::strcmp(role, "attn_q") == 0) p.perm = &q_perm;
        if (std::strcmp(role, "attn_k") == 0) p.perm = &k_perm;
      }
    }
    if (p.perm && static_cast<int64_t>(p.perm->size()) != (t.shape.size() == 1 ? t.numel() : t.rows()))
      fail(src, "tensor '" + t.name + "'", t.shape_str() + " does not match the config's heads x head_dim (" +
                                               std::to_string(p.perm->size()) + " rows)");
    std::string fname = o.format;
    if (preset && t.shape.size() == 2) {
      PresetModelInfo mi;
      mi.n_layers = cfg.n_layers;
      mi.n_gqa = cfg.n_kv_heads > 0 ? cfg.n_heads / cfg.n_kv_heads : 1;
      mi.tied_embeddings = cfg.tied_embeddings;
      fname = std::string(dtype_name(preset_tensor_type(*preset, t.name, t.cols(), mi, /*fallback=*/false)));
    }
    for (const auto& [pat, f] : o.overrides)
      if (matches(t.name, pat)) fname = f;
    // A llama.cpp type needs whole blocks per row: llama-quantize's fallback otherwise (F16: kept).
    if (auto gt = dtype_from_name(fname); gt && formats::ggml_encodable(*gt) && t.shape.size() == 2) {
      const DType fb = fallback_type(*gt, t.cols());
      if (fb != *gt) {
        r.note = std::to_string(t.cols()) + " values per row do not fill " + fname + " blocks: " +
                 std::string(dtype_name(fb));
        fname = std::string(dtype_name(fb));
      }
    }
    const bool float_src = t.dtype == DType::F32 || t.dtype == DType::F16 || t.dtype == DType::BF16;
    const bool requant = o.allow_requantize && dtype_info(t.dtype).block > 1 && formats::ggml_decodable(t.dtype);
    p.keep = !is_matrix_weight(t) || (!float_src && !requant);
    if (is_matrix_weight(t) && !float_src && !requant)
      r.note = "already " + std::string(dtype_name(t.dtype)) + ": copied (--allow-requantize quantizes it again)";
    for (const auto& k : o.keep)
      if (matches(t.name, k)) p.keep = true;
    const bool to_f16 = fname == "f16";  // a preset's fallback for rows no block type fits
    if (to_f16 && !p.keep) {
      p.keep = true;
      p.keep_dtype = DType::F16;
    }
    if (!p.keep) {
      p.fmt = formats::make_format(fname);
      if (auto* g = dynamic_cast<const formats::GgmlFormat*>(p.fmt.get())) p.ggml = g->dtype();
    }
    if (p.keep) {
      const DType want = to_f16 ? DType::F16 : o.keep_dtype;
      const bool convert = t.shape.size() == 2 && t.dtype != want &&
                           (t.dtype == DType::F32 || t.dtype == DType::F16 || t.dtype == DType::BF16);
      p.keep_dtype = convert ? want : t.dtype;
      r.stored = std::string(dtype_name(p.keep_dtype));
      const DTypeInfo di = dtype_info(p.keep_dtype);
      r.bits_per_weight = 8.0 * di.block_bytes / di.block;
      continue;
    }
    r.stored = fname;
    r.bits_per_weight = 8.0 * static_cast<double>(formats::row_bytes(*p.fmt, t.cols())) / static_cast<double>(t.cols());
    std::string role;
    p.layer = layer_of(t.name, &role);
    if (calibrated && p.layer >= 0) p.input = input_of(role);
    if (p.input < 0) p.layer = -1;  // quantized on its own (RTN / the method without stats)
  }

  // llama.cpp's file-level keys when the linears are llama.cpp types (ggml's quantization version 2).
  {
    std::map<DType, int64_t> counts;
    for (size_t i = 0; i < total; ++i)
      if (plans[i].fmt && plans[i].ggml != DType::F32) counts[plans[i].ggml] += model->tensors[i].numel();
    if (preset) {
      w.set_u32("general.file_type", preset->file_type);
    } else if (!counts.empty()) {
      auto most = std::max_element(counts.begin(), counts.end(),
                                   [](const auto& a, const auto& b) { return a.second < b.second; });
      w.set_u32("general.file_type", file_type_of(most->first));
    }
    if (preset || !counts.empty()) w.set_u32("general.quantization_version", 2);
  }

  ResumeStore store(out, run_fingerprint(src, source_checksum, o), o.resume);
  rep.resumed_tensors = store.resumed();
  std::unique_ptr<CalibratedRun> run;
  if (calibrated) run = std::make_unique<CalibratedRun>(model, plans, *quantizer, o.calib, rep.tensors, store);
  auto rtn = make_quantizer("rtn");

  // File order: tensors outside the blocks, then block by block, so calibrated blocks are produced in order.
  std::vector<size_t> order(total);
  for (size_t i = 0; i < total; ++i) order[i] = i;
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    return layer_of(model->tensors[a].name, nullptr) < layer_of(model->tensors[b].name, nullptr);
  });
  std::mutex mu;
  size_t done = 0;
  // Wall time per block: from the end of the previous block's (or the non-block tensors') writing to the end of
  // this block's, the tensors being written block by block.
  using Clock = std::chrono::steady_clock;
  Clock::time_point block_start = Clock::now(), last_tick = block_start;
  int cur_layer = -1;
  rep.layer_seconds.assign(static_cast<size_t>(std::max(cfg.n_layers, 0)), 0.0);
  auto tick = [&](const std::string& name) {
    std::lock_guard<std::mutex> lock(mu);
    int l = -1;
    if (std::sscanf(name.c_str(), "blk.%d.", &l) != 1 || l < 0 || l >= cfg.n_layers) l = -1;
    const Clock::time_point now = Clock::now();
    if (l != cur_layer) block_start = last_tick, cur_layer = l;
    if (l >= 0) rep.layer_seconds[static_cast<size_t>(l)] = std::chrono::duration<double>(now - block_start).count();
    last_tick = now;
    if (o.progress) o.progress(++done, total, name);
  };
  if (!rope_factors.empty()) {
    std::vector<std::byte> bytes(rope_factors.size() * sizeof(float));
    std::memcpy(bytes.data(), rope_factors.data(), bytes.size());
    w.add_tensor("rope_freqs.weight", DType::F32, {static_cast<int64_t>(rope_factors.size())}, std::move(bytes));
  }
  for (size_t i : order) {
    const TensorInfo& t = model->tensors[i];
    const Plan& p = plans[i];
    const TensorInfo* tp = &t;
    if (p.keep) {
      w.add_tensor(t.name, p.keep_dtype, t.shape, [tp, &p, &tick, &model](const io::GgufWriter::Sink& sink) {
        if (p.keep_dtype == tp->dtype && p.perm == nullptr) {
          sink(tp->data, tp->nbytes);
        } else if (tp->shape.size() == 1) {  // a Q/K bias: elements re-paired like the rows
          const size_t e = dtype_info(tp->dtype).block_bytes;
          for (int64_t k : *p.perm) sink(tp->data + static_cast<size_t>(k) * e, e);
        } else {  // row by row (in output order): widen to f32, then narrow to the kept dtype
          const ops::WeightView v = ops::view_of(*tp);
          std::vector<float> row(static_cast<size_t>(v.cols));
          std::vector<uint16_t> half(static_cast<size_t>(v.cols));
          for (int64_t rr = 0; rr < v.rows; ++rr) {
            const int64_t src_row = p.perm ? (*p.perm)[static_cast<size_t>(rr)] : rr;
            if (p.keep_dtype == tp->dtype) {
              sink(v.data + static_cast<size_t>(src_row) * v.row_bytes, tp->nbytes / static_cast<uint64_t>(v.rows));
              continue;
            }
            ops::get_row(v, src_row, row.data());
            if (p.keep_dtype == DType::F32) {
              sink(row.data(), row.size() * sizeof(float));
              continue;
            }
            for (size_t k = 0; k < row.size(); ++k)
              half[k] = p.keep_dtype == DType::F16 ? f32_to_f16(row[k]) : f32_to_bf16(row[k]);
            sink(half.data(), half.size() * sizeof(uint16_t));
          }
        }
        if (p.layer < 0) release_source(*model, *tp);
        tick(tp->name);
      });
      continue;
    }
    const int64_t rows = t.rows(), cols = t.cols();
    const size_t rb = formats::row_bytes(*p.fmt, cols);
    const bool native = p.ggml != DType::F32;  // a llama.cpp type: stored as itself, readable by llama.cpp
    if (!native) {
      w.set_string(io::packed_format_key(t.name), p.fmt->name());
      w.set(io::packed_shape_key(t.name), io::GgufWriter::array(io::GgufType::U64, {rows, cols}));
    }
    TensorReport* r = &rep.tensors[i];
    const Quantizer* alone = calibrated ? rtn.get() : quantizer.get();
    w.add_tensor(t.name, native ? p.ggml : DType::I8,
                 native ? std::vector<int64_t>{rows, cols} : std::vector<int64_t>{rows, static_cast<int64_t>(rb)},
                 [tp, &p, i, r, rb, alone, &run, &tick, &model, &src, &store](const io::GgufWriter::Sink& sink) {
                   std::vector<std::byte> bytes;
                   if (p.layer >= 0) {
                     bytes = run->take(i);
                   } else if (auto saved = store.load(i, tp->name)) {  // finished by a previous run (--resume)
                     r->rel_error = saved->rel_error;
                     bytes = std::move(saved->bytes);
                     release_source(*model, *tp);
                   } else {  // widened and quantized only now: one tensor resident
                     std::vector<float> W = widen(*tp);
                     release_source(*model, *tp);
                     QuantResult q = quantize_tensor(*alone, src, *tp, W, *p.fmt, nullptr);
                     r->rel_error = rel_weight_error(W, q.dequant);
                     bytes = std::move(q.data);
                     store.save(i, tp->name, bytes, r->rel_error, -1);
                   }
                   if (p.perm == nullptr) {
                     sink(bytes.data(), bytes.size());
                   } else {  // rows are independent (blocks run along a row): re-pairing moves whole rows
                     for (int64_t k : *p.perm) sink(bytes.data() + static_cast<size_t>(k) * rb, rb);
                   }
                   tick(tp->name);
                 });
  }
  w.write(out);
  store.finish();
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
