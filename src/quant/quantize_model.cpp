#include "quant/quantize_model.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <array>
#include <chrono>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <map>
#include <mutex>
#include <optional>
#include <regex>

#include "core/checksum.h"
#include "core/half.h"
#include "formats/format.h"
#include "formats/ggml.h"
#include "io/gguf.h"
#include "io/gguf_metadata.h"
#include "io/gguf_writer.h"
#include "io/imatrix.h"
#include "io/packed.h"
#include "lowbit/error.h"
#include "lowbit/model.h"
#include "lowbit/threads.h"
#include "ops/ops.h"
#include "io/arch.h"
#include "quant/block_transform.h"
#include "quant/gguf_presets.h"
#include "quant/methods.h"
#include "quant/gptaq/cross_stats.h"
#include "quant/resume.h"
#include "quant/budget/allocate.h"
#include "quant/budget/measure.h"

namespace lowbit::quant {

namespace {

bool is_matrix_weight(const TensorInfo& t) {
  return (t.shape.size() == 2 || t.shape.size() == 3) && t.name.size() > 7 && t.name.compare(t.name.size() - 7, 7, ".weight") == 0;
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

// A per-tensor type as the plan stores it: llama.cpp types by their canonical name (q4_K for Q4_K), f16 / bf16 / f32,
// or a lowbit format; anything else is one error line naming the option.
std::string canonical_type(const std::string& src, const std::string& option, const std::string& name) {
  if (auto d = dtype_from_name(name)) {
    if (*d == DType::F16 || *d == DType::BF16 || *d == DType::F32 || formats::ggml_encodable(*d))
      return std::string(dtype_name(*d));
    fail(src, option, "'" + name + "' is a llama.cpp type lowbit cannot encode yet");
  }
  try {
    formats::make_format(name);
  } catch (const Error&) {
    fail(src, option, "'" + name + "' is neither a llama.cpp type (q4_K, Q8_0, ...), f16/bf16/f32 nor a lowbit format");
  }
  return name;
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
  int layer = -1;   // a block tensor produced by the calibrated run (quantized linear or a tensor it may edit)
  int role = -1;    // its row in the role table
  bool calibrated_linear = false;  // a block linear quantized with calibration statistics
  const std::vector<int64_t>* perm = nullptr;  // output row order (Q/K rows re-paired for the output's RoPE)
  const std::vector<float>* importance = nullptr;  // cols: its entry of the importance matrix file, if any
};

// Installs f32 values as tensor t's weights in m; the buffer must outlive their use.
void install_f32(Model& m, const TensorInfo& t, const std::vector<float>& values) {
  TensorInfo dq = t;
  dq.dtype = DType::F32;
  dq.data = reinterpret_cast<const std::byte*>(values.data());
  dq.nbytes = values.size() * sizeof(float);
  m.replace_weight(dq);
}

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

// Per-site statistics accumulated while the calibration windows run through a block: H and mean|x| of the
// quantized model's inputs, and (asymmetric solvers) the cross term of the full-precision model's inputs.
struct SiteAccumulator {
  explicit SiteAccumulator(int64_t cols, bool cross) : hessian(cols), abs_sum(static_cast<size_t>(cols), 0.0) {
    if (cross) this->cross = std::make_unique<CrossAccumulator>(cols);
  }
  void add(const float* x, const float* x_fp, int64_t rows) {
    hessian.add(x, rows);
    const size_t c = abs_sum.size();
    for (int64_t r = 0; r < rows; ++r)
      for (size_t j = 0; j < c; ++j) abs_sum[j] += std::fabs(x[static_cast<size_t>(r) * c + j]);
    if (cross) cross->add(x_fp, x, rows);
    n += rows;
  }
  SiteStats stats() const {
    SiteStats s;
    s.hessian = hessian.stats();
    if (cross) cross->attach(s.hessian);
    s.mean_abs.resize(abs_sum.size());
    for (size_t j = 0; j < abs_sum.size(); ++j) s.mean_abs[j] = n > 0 ? abs_sum[j] / static_cast<double>(n) : 0.0;
    return s;
  }
  HessianAccumulator hessian;
  std::vector<double> abs_sum;
  std::unique_ptr<CrossAccumulator> cross;
  int64_t n = 0;
};

// What the budget planner's measurement pass sees of a calibrated run (quant/budget/measure.h): the block's
// transformed full-precision values, and each block linear's weights, statistics and quantization as the run made
// it. A run with an observer only measures: nothing is saved or kept for writing.
class RunObserver {
 public:
  virtual ~RunObserver() = default;
  // Tensor i of block l has these full-precision values from now on (a block transform edited it).
  virtual void block_values(int l, size_t i, const std::vector<float>& values) = 0;
  // Block linear i (weights W) quantized by the run's solver into q under stats.
  virtual void linear(int l, size_t i, const std::vector<float>& W, const LayerStats& stats, const QuantResult& q) = 0;
};

// Layer-by-layer calibrated quantization: produces each block's tensors when the writer first asks for one.
// Per block: the block's tensors are widened to an f32 working copy; block transforms (AWQ) edit it from the
// statistics of every site's input and it is swapped into the model; then the solver quantizes the linears,
// site by site in graph order (true-sequential: each site's inputs are captured after the linears before it
// were swapped for their quantized decoding) or all from one capture; finally the windows run through the
// quantized block. Asymmetric solvers (GPTAQ) also run the windows through a second, full-precision (but
// transformed) copy of the model, whose inputs pair with the quantized model's.
class CalibratedRun {
 public:
  CalibratedRun(std::shared_ptr<const ModelFile> model, const std::vector<Plan>& plans, const MethodPlan& method,
                const QuantOptions& qopts, bool true_sequential, const std::vector<std::vector<int32_t>>& windows,
                std::vector<TensorReport>& reports, ResumeStore* store, RunObserver* observer = nullptr)
      : file_(model), plans_(plans), reports_(reports), store_(store), observer_(observer), roles_(io::arch_roles(model->config)),
        model_(model, static_cast<int>(windows[0].size())) {
    solver_ = method.solver->solver(qopts);
    solver_name_ = method.solver->name;
    for (const MethodEntry* e : method.block_transforms) transforms_.push_back(e->block(qopts));
    true_sequential_ = true_sequential && solver_name_ != "rtn";
    len_ = static_cast<int>(windows[0].size());
    dim_ = model->config.dim;
    x_.resize(windows.size() * static_cast<size_t>(len_) * dim_);
    for (size_t s = 0; s < windows.size(); ++s) model_.embed(windows[s], x_.data() + s * len_ * dim_);
    if (method.needs_fp_inputs) {
      model_fp_ = std::make_unique<Model>(model, len_);
      x_fp_ = x_;
    }
    for (size_t i = 0; i < plans_.size(); ++i)
      if (plans_[i].layer >= 0) index_[{plans_[i].layer, plans_[i].role}] = i;
  }

  // Runs the blocks up to layer l.
  void ensure(int l) {
    while (done_layers_ <= l) run_layer(done_layers_++);
  }
  // Encoded bytes of block linear i.
  std::vector<std::byte> take_encoded(size_t i) {
    ensure(plans_[i].layer);
    auto it = encoded_.find(i);
    std::vector<std::byte> out = std::move(it->second);
    encoded_.erase(it);
    return out;
  }
  // The f32 values of kept block tensor i when a transform edited the block (else nullopt: the source's bytes).
  std::optional<std::vector<float>> take_edited(size_t i) {
    ensure(plans_[i].layer);
    auto it = edited_.find(i);
    if (it == edited_.end()) return std::nullopt;
    std::vector<float> out = std::move(it->second);
    edited_.erase(it);
    return out;
  }

 private:
  size_t n_seq() const { return x_.size() / (static_cast<size_t>(len_) * dim_); }

  BlockWork load_block(int l) const {
    BlockWork w;
    w.config = &file_->config;
    w.roles = &roles_;
    w.layer = l;
    w.values.resize(roles_.block.size());
    w.formats.resize(roles_.block.size());
    for (size_t r = 0; r < roles_.block.size(); ++r) {
      auto it = index_.find({l, static_cast<int>(r)});
      if (it == index_.end()) continue;
      const TensorInfo& t = file_->tensors[it->second];
      if (t.shape.size() >= 2) {
        w.values[r] = widen(t);
      } else {
        w.values[r].resize(static_cast<size_t>(t.numel()));
        ops::widen_vector(t, w.values[r].data());
      }
      if (roles_.block[r].kind == io::TensorKind::Linear) w.formats[r] = plans_[it->second].fmt;
    }
    return w;
  }

  // Statistics of the inputs of `sites` (graph order; the last one is where the block stops) under the models'
  // current weights, over every window: through the block passes given (true-sequential: each site continues from
  // the previous one), else through fresh ones. Sequences go in chunks so the full-precision inputs held for
  // pairing stay bounded.
  void capture(int l, const std::vector<io::Site>& sites, std::array<SiteStats, io::kSites>& out,
               BlockPass* pass = nullptr, BlockPass* pass_fp = nullptr) {
    std::optional<BlockPass> own, own_fp;
    if (!pass) pass = &own.emplace(model_, l, x_.data(), static_cast<int>(n_seq()), len_);
    if (model_fp_ && !pass_fp) pass_fp = &own_fp.emplace(*model_fp_, l, x_fp_.data(), static_cast<int>(n_seq()), len_);
    const ModelConfig& c = file_->config;
    std::array<std::unique_ptr<SiteAccumulator>, io::kSites> acc;
    int64_t widest = 0;
    for (io::Site s : sites) {
      const int64_t cols = io::dim_size(c, roles_.sites[static_cast<int>(s)].width);
      acc[static_cast<int>(s)] = std::make_unique<SiteAccumulator>(cols, model_fp_ != nullptr);
      widest += cols;
    }
    const io::Site last = sites.back();
    const size_t total = n_seq();
    const size_t chunk = model_fp_ ? std::max<size_t>(1, (size_t{64} << 20) / (static_cast<size_t>(len_) * widest)) : total;
    std::array<std::vector<float>, io::kSites> fp;  // the full-precision inputs of this chunk, per site
    std::array<size_t, io::kSites> fp_row{};
    for (size_t s0 = 0; s0 < total; s0 += chunk) {
      const int n = static_cast<int>(std::min(chunk, total - s0));
      if (model_fp_) {
        for (auto& v : fp) v.clear();
        pass_fp->run_to(static_cast<LinearInput>(last), static_cast<int>(s0), n,
                                [&](int, LinearInput which, const float* in, int64_t rows, int64_t cols) {
                                  if (acc[static_cast<int>(which)])
                                    fp[static_cast<int>(which)].insert(fp[static_cast<int>(which)].end(), in, in + rows * cols);
                                });
        fp_row.fill(0);
      }
      pass->run_to(static_cast<LinearInput>(last), static_cast<int>(s0), n,
                          [&](int, LinearInput which, const float* in, int64_t rows, int64_t cols) {
                            const int k = static_cast<int>(which);
                            if (!acc[k]) return;
                            const float* pair = model_fp_ ? fp[k].data() + fp_row[k] * cols : nullptr;
                            acc[k]->add(in, pair, rows);
                            fp_row[k] += static_cast<size_t>(rows);
                          });
    }
    for (io::Site s : sites) out[static_cast<int>(s)] = acc[static_cast<int>(s)]->stats();
  }

  std::vector<io::Site> all_sites() const {
    std::vector<io::Site> s;
    for (const auto& r : roles_.sites) s.push_back(r.site);
    return s;
  }

  // The model computes with these values of block tensor `role` from now on (buffers live until the next block).
  void install(Model& m, int l, size_t role, const std::vector<float>& values) {
    auto it = index_.find({l, static_cast<int>(role)});
    const TensorInfo& t = file_->tensors[it->second];
    auto buf = std::make_shared<std::vector<float>>(values);
    install_f32(m, t, *buf);
    buffers_.push_back(buf);
  }

  void quantize_linear(int l, size_t role, const BlockWork& w, SiteStats& st) {
    const size_t i = index_.at({l, static_cast<int>(role)});
    const TensorInfo& t = file_->tensors[i];
    const std::vector<float>& W = w.values[role];
    // The imatrix entry of this linear (the site's other linears have their own entries, or none).
    if (plans_[i].importance) st.hessian.importance = *plans_[i].importance;
    QuantResult q = quantize_tensor(*solver_, file_->path, t, W, *plans_[i].fmt, &st.hessian);
    if (observer_) observer_->linear(l, i, W, st.hessian, q);
    st.hessian.importance.clear();
    TensorReport& r = reports_[i];
    r.rel_error = rel_weight_error(W, q.dequant);
    const double err = layer_error(W.data(), q.dequant.data(), t.rows(), t.cols(), st.hessian);
    const std::vector<float> zero(W.size(), 0.0f);
    const double ref = layer_error(W.data(), zero.data(), t.rows(), t.cols(), st.hessian);
    r.rel_output_error = ref > 0 ? std::sqrt(err / ref) : 0.0;
    if (store_) store_->save(i, t.name, q.data, r.rel_error, r.rel_output_error);
    if (!observer_) encoded_[i] = std::move(q.data);
    install(model_, l, role, q.dequant);
    release_source(*file_, t);
  }

  void run_layer(int l) {
    buffers_.clear();  // blocks < l never run again
    BlockWork w = load_block(l);
    // A block a previous run finished (--resume): its saved tensors, decoded, stand in for quantizing it again.
    std::map<size_t, SavedTensor> saved;
    bool all_saved = true;
    for (const auto& [key, i] : index_) {
      if (key.first != l || !plans_[i].calibrated_linear || !all_saved) continue;
      auto st = store_ ? store_->load(i, file_->tensors[i].name) : std::nullopt;
      if (st) saved.emplace(i, std::move(*st));
      else all_saved = false;
    }
    if (!transforms_.empty()) {
      capture(l, all_sites(), w.sites);
      for (const auto& t : transforms_) t->apply(w, solver_name_);
      for (size_t r = 0; r < w.values.size(); ++r) {
        if (w.values[r].empty()) continue;
        install(model_, l, r, w.values[r]);
        if (model_fp_) install(*model_fp_, l, r, w.values[r]);
        const size_t i = index_.at({l, static_cast<int>(r)});
        if (!plans_[i].calibrated_linear && !observer_) edited_[i] = w.values[r];
        if (observer_) observer_->block_values(l, i, w.values[r]);
      }
    }
    if (all_saved) {
      for (auto& [i, st] : saved) {
        const TensorInfo& t = file_->tensors[i];
        reports_[i].rel_error = st.rel_error;
        reports_[i].rel_output_error = st.rel_output_error;
        install(model_, l, static_cast<size_t>(plans_[i].role), decode_blocks(*plans_[i].fmt, st.bytes, t.rows(), t.cols()));
        encoded_[i] = std::move(st.bytes);
        release_source(*file_, t);
      }
      return advance(l);
    }
    auto quantize_site = [&](const io::SiteRole& site) {
      for (std::string_view lin : site.linears) {
        const size_t r = w.index(lin);
        if (w.formats[r] && plans_[index_.at({l, static_cast<int>(r)})].calibrated_linear)
          quantize_linear(l, r, w, w.sites[static_cast<int>(site.site)]);
      }
    };
    auto has_work = [&](const io::SiteRole& site) {
      for (std::string_view lin : site.linears) {
        auto it = index_.find({l, static_cast<int>(w.index(lin))});
        if (it != index_.end() && plans_[it->second].calibrated_linear) return true;
      }
      return false;
    };
    if (true_sequential_) {
      // One pass through the block per model: each site's input is computed from where the previous one stopped,
      // with the linears before it already quantized.
      BlockPass pass(model_, l, x_.data(), static_cast<int>(n_seq()), len_);
      std::optional<BlockPass> pass_fp;
      if (model_fp_) pass_fp.emplace(*model_fp_, l, x_fp_.data(), static_cast<int>(n_seq()), len_);
      for (const io::SiteRole& site : roles_.sites) {
        if (!has_work(site)) continue;
        capture(l, {site.site}, w.sites, &pass, pass_fp ? &*pass_fp : nullptr);
        quantize_site(site);
      }
      pass.finish(x_.data());
      if (pass_fp) pass_fp->finish(x_fp_.data());
      return;
    }
    capture(l, all_sites(), w.sites);
    for (const io::SiteRole& site : roles_.sites) quantize_site(site);
    advance(l);
  }

  // The windows go through block l: the quantized model's and the full-precision one's.
  void advance(int l) {
    model_.forward_layer(l, x_.data(), static_cast<int>(n_seq()), len_, {});
    if (model_fp_) model_fp_->forward_layer(l, x_fp_.data(), static_cast<int>(n_seq()), len_, {});
  }

  std::shared_ptr<const ModelFile> file_;
  const std::vector<Plan>& plans_;
  std::vector<TensorReport>& reports_;
  ResumeStore* store_;        // null: nothing saved (a measurement pass)
  RunObserver* observer_;
  const io::ArchRoles& roles_;
  Model model_;                       // the quantized model so far (blocks < done_layers_ quantized)
  std::unique_ptr<Model> model_fp_;   // the full-precision (transformed) model, for asymmetric solvers
  std::unique_ptr<Quantizer> solver_;
  std::string solver_name_;
  std::vector<std::unique_ptr<BlockTransform>> transforms_;
  bool true_sequential_ = true;
  int len_ = 0, dim_ = 0, done_layers_ = 0;
  std::vector<float> x_, x_fp_;       // n_seq x len x dim activations entering the next block
  std::map<std::pair<int, int>, size_t> index_;  // (layer, role) -> tensor index
  std::map<size_t, std::vector<std::byte>> encoded_;
  std::map<size_t, std::vector<float>> edited_;
  std::vector<std::shared_ptr<std::vector<float>>> buffers_;  // values the models compute with for this block
};
}  // namespace

// Everything the output bytes depend on: lowbit's version, the source (path and checksum), every option and the
// calibration windows. Progress saved under another fingerprint is never reused.
static std::string run_fingerprint(const std::string& src, const std::string& source_checksum, const QuantizeModelOptions& o,
                                   const std::string& method, const std::string& imatrix_checksum) {
  nlohmann::json j = {{"version", LOWBIT_VERSION}, {"source", src}, {"source_fnv1a64", source_checksum},
                      {"method", method}, {"format", o.format}, {"keep", o.keep},
                      {"keep_dtype", dtype_name(o.keep_dtype)}, {"overrides", o.overrides},
                      {"calib_source", o.calib_source}, {"use_importance", o.qopts.use_importance},
                      {"percdamp", o.qopts.percdamp}, {"block_size", o.qopts.block_size},
                      {"act_order", o.qopts.act_order}, {"static_groups", o.qopts.static_groups},
                      {"allow_requantize", o.allow_requantize}, {"true_sequential", o.true_sequential},
                      {"transforms_only", o.transforms_only},
                      {"gptaq_alpha", o.qopts.gptaq_alpha}, {"awq_grid", o.qopts.awq_grid}, {"awq_alpha", o.qopts.awq_alpha}, {"awq_clip", o.qopts.awq_clip},
                      {"rotate_seed", o.qopts.rotate_seed}, {"rotate_heads", o.qopts.rotate_heads},
                      {"pure", o.pure}, {"imatrix", o.imatrix}, {"imatrix_fnv1a64", imatrix_checksum}};
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

namespace {

// What the stages share: the parsed options, the (transformed) source, every tensor's plan and the report.
struct Job {
  Job(std::string source, const QuantizeModelOptions& opts) : src(std::move(source)), o(opts) {}
  std::string src;
  const QuantizeModelOptions& o;
  bool calibrated = false;
  MethodPlan method;
  std::optional<GgufPreset> preset;           // "gguf:<PRESET>": llama-quantize's per-tensor mixture
  std::shared_ptr<const ModelFile> model;     // after the model transforms
  std::vector<int64_t> q_perm, k_perm;        // empty: rows stay in source order
  std::vector<float> rope_factors;            // llama3 scaling from a HF config, written as rope_freqs.weight
  std::string source_checksum;
  std::vector<Plan> plans;
  std::optional<io::Imatrix> imatrix;         // --imatrix: llama.cpp's importance matrix
  QuantizeReport rep;
  std::vector<std::pair<std::regex, std::string>> tensor_types;  // --tensor-type, compiled; types canonical
  std::string token_embedding_type, output_tensor_type;          // canonical, or empty
};

// Stage 1, options: the method, the formats and the calibration windows, checked before any work.
void check_options(Job& job) {
  const QuantizeModelOptions& o = job.o;
  const std::string& src = job.src;
  const bool calibrated = job.calibrated;
  MethodPlan& method = job.method;
  std::optional<GgufPreset>& preset = job.preset;
  // Plan stage: the method, the formats and every tensor's fate, all checked before any work.
  method = parse_method(o.method.empty() ? default_method(o.format, calibrated) : o.method);
  if (!calibrated && (method.needs_calibration || o.qopts.use_importance))
    fail(src, "--method", "'" + method.text + "'" + (o.qopts.use_importance ? " with importance" : "") +
                              " needs calibration statistics: pass --calib FILE");
  if (!o.imatrix.empty()) {
    if (o.qopts.use_importance)
      fail(o.imatrix, "--imatrix", "and --importance both give the fits an importance: pass one of them");
    // An imatrix holds statistics of the source model's inputs: a transform that changes them (rotations, AWQ's
    // scales) would make it describe other inputs than the ones quantized.
    if (!method.model_transforms.empty() || !method.block_transforms.empty())
      fail(o.imatrix, "--imatrix", "describes the untransformed model's inputs: it cannot be combined with '" +
                                       method.text + "' (use rtn, gptq or gptaq)");
    job.imatrix = io::load_imatrix(o.imatrix);  // a malformed file fails here, before any work
  }
  // "gguf:<PRESET>": llama-quantize's per-tensor mixture (quant/gguf_presets.h); else one format for every linear.
  if (o.format.rfind("gguf:", 0) == 0) {
    preset = gguf_preset(o.format.substr(5));
    if (!preset) {
      std::string names;
      for (const auto& n : gguf_preset_names()) names += (names.empty() ? "" : ", ") + n;
      fail(src, "--format", "unknown llama.cpp preset '" + o.format.substr(5) + "' (expected gguf: followed by one of " +
                                names + ")");
    }
    // The 1- and 2-bit i-quant mixtures: llama-quantize refuses them without importance data, and so does lowbit.
    if (preset->very_low_bit && !job.imatrix && !o.qopts.use_importance)
      fail(src, "--format", "gguf:" + preset->name + " needs importance data (--imatrix FILE, or --importance with --calib), "
                            "as llama-quantize requires");
  } else {
    formats::make_format(o.format);  // reject a bad name before any work
  }
  for (const auto& ov : o.overrides) formats::make_format(ov.second);
  for (const auto& [pattern, type] : o.tensor_types) {
    try {
      job.tensor_types.emplace_back(std::regex(pattern), canonical_type(src, "--tensor-type " + pattern, type));
    } catch (const std::regex_error& e) {
      fail(src, "--tensor-type", "'" + pattern + "' is not a regular expression (" + e.what() + ")");
    }
  }
  if (!o.token_embedding_type.empty())
    job.token_embedding_type = canonical_type(src, "--token-embedding-type", o.token_embedding_type);
  if (!o.output_tensor_type.empty())
    job.output_tensor_type = canonical_type(src, "--output-tensor-type", o.output_tensor_type);
  if (o.keep_dtype != DType::F16 && o.keep_dtype != DType::BF16 && o.keep_dtype != DType::F32)
    fail(src, "keep dtype", "expected f16, bf16 or f32");
  if (calibrated)
    for (const auto& w : o.calib)
      if (w.size() != o.calib[0].size() || w.size() < 2) fail(o.calib_source, "calibration", "windows must share one length >= 2");

}

// Stage 2, source: the model opened, its metadata carried into the writer, its checksum taken (for --resume), then
// the model transforms (rotations) applied: the later stages quantize the transformed model.
void open_source(Job& job, io::GgufWriter& w) {
  const QuantizeModelOptions& o = job.o;
  const std::string& src = job.src;
  const bool calibrated = job.calibrated;
  const MethodPlan& method = job.method;
  auto& model = job.model;
  auto& q_perm = job.q_perm;
  auto& k_perm = job.k_perm;
  auto& rope_factors = job.rope_factors;
  std::string& source_checksum = job.source_checksum;
  model = load_model(src);
  for (const auto& t : model->tensors)
    if (!t.packed.empty()) fail(src, "tensor '" + t.name + "'", "is already quantized (" + t.packed + ")");
  // Calibrated quantization needs each expert's statistics from the tokens routed to it, which the pipeline does not
  // collect yet (issue 17): refuse rather than calibrate the experts on the wrong inputs.
  if (model->config.n_experts > 0 && (calibrated || !method.model_transforms.empty() || !method.block_transforms.empty()))
    fail(src, "--calib", "mixture-of-experts models are quantized without calibration for now (rtn, gguf: presets); "
                         "per-expert calibration is not implemented yet");
  const ModelConfig src_cfg = model->config;
  if (model->format == "gguf") {  // every key carries over
    auto gguf = io::GgufFile::open(src);
    for (const auto& [key, value] : gguf->kv()) w.set(key, value);
  } else {  // HF directory or llama2.c checkpoint: written as the equivalent GGUF
    io::set_config_metadata(w, src_cfg);
    io::set_tokenizer_metadata(w, model->tokenizer, src_cfg.n_vocab);
    const RopeStyle out_style = io::gguf_rope_style(io::gguf_arch_of(src_cfg));
    if (src_cfg.rope_style != out_style) {
      q_perm = rope_row_perm(src_cfg.n_heads, src_cfg.head_dim, src_cfg.rope_dim, src_cfg.rope_style, out_style);
      k_perm = rope_row_perm(src_cfg.n_kv_heads, src_cfg.head_dim, src_cfg.rope_dim, src_cfg.rope_style, out_style);
    }
    if (src_cfg.rope_scaling.type == "llama3") {
      ModelConfig plain = src_cfg;
      plain.rope_scaling = RopeScaling{};
      const std::vector<float> base = rope_inv_freq(plain, *model), scaled = rope_inv_freq(src_cfg, *model);
      for (size_t i = 0; i < base.size(); ++i) rope_factors.push_back(base[i] / scaled[i]);
    }
  }
  w.set_string("lowbit.version", LOWBIT_VERSION);
  w.set_string("lowbit.quantize.method", method.text);
  w.set_string("lowbit.quantize.format", o.format);
  w.set_string("lowbit.quantize.source", src);
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
  // Model transforms (rotations): the rest of the pipeline quantizes the transformed model.
  for (const MethodEntry* e : method.model_transforms) model = e->model(*model, o.qopts);
  if (calibrated) {
    w.set_string("lowbit.quantize.calib_source", o.calib_source);
    w.set_u32("lowbit.quantize.calib_samples", static_cast<uint32_t>(o.calib.size()));
    w.set_u32("lowbit.quantize.calib_len", static_cast<uint32_t>(o.calib[0].size()));
  }

}

// The importance matrix's entries matched to the matrices by name, checked against their input widths before any
// work, and recorded in the output as llama-quantize records them (its quantize.imatrix.* keys).
void attach_imatrix(Job& job, io::GgufWriter& w) {
  const io::Imatrix& im = *job.imatrix;
  size_t used = 0;
  for (size_t i = 0; i < job.plans.size(); ++i) {
    const TensorInfo& t = job.model->tensors[i];
    if (!is_matrix_weight(t)) continue;
    auto it = im.entries.find(t.name);
    if (it == im.entries.end()) continue;
    if (static_cast<int64_t>(it->second.size()) != t.cols()) {
      // llama-quantize lets token_embd pass (older imatrix files carry a mismatched one); any other mismatch means
      // the file was made on another model.
      if (t.name == "token_embd.weight") {
        job.rep.tensors[i].note = "imatrix entry of " + std::to_string(it->second.size()) + " values ignored (" +
                                  std::to_string(t.cols()) + " columns)";
        continue;
      }
      fail(im.path, "entry '" + t.name + "'",
           std::to_string(it->second.size()) + " values, but the tensor " + t.shape_str() + " in " + job.src +
               " has " + std::to_string(t.cols()) + " input columns (an imatrix of another model?)");
    }
    Plan& p = job.plans[i];
    if (p.keep) continue;  // not quantized: nothing to weight
    p.importance = &it->second;
    job.rep.tensors[i].imatrix = true;
    ++used;
  }
  if (used == 0)
    fail(im.path, "entries", "none of its " + std::to_string(im.entries.size()) +
                                 " entries names a matrix quantized from " + job.src + " (an imatrix of another model?)");
  QuantizeReport::Imatrix r;
  r.file = im.path;
  r.format = im.format;
  r.entries = im.entries.size();
  r.used = used;
  r.datasets = im.datasets;
  r.chunks = im.chunk_count;
  job.rep.imatrix = r;
  w.set_string("quantize.imatrix.file", im.path);
  if (!im.datasets.empty()) w.set_string("quantize.imatrix.dataset", im.datasets[0]);
  w.set_i32("quantize.imatrix.entries_count", static_cast<int32_t>(im.entries.size()));
  if (im.chunk_count > 0) w.set_i32("quantize.imatrix.chunks_count", static_cast<int32_t>(im.chunk_count));
}

// Stage 3, plan: every tensor's fate (kept in which dtype, or quantized into which format, by the calibrated run
// or alone), and llama.cpp's file-level keys.
void plan_tensors(Job& job, io::GgufWriter& w) {
  const QuantizeModelOptions& o = job.o;
  const std::string& src = job.src;
  const bool calibrated = job.calibrated;
  const MethodPlan& method = job.method;
  const auto& preset = job.preset;
  const auto& model = job.model;
  const auto& q_perm = job.q_perm;
  const auto& k_perm = job.k_perm;
  auto& plans = job.plans;
  QuantizeReport& rep = job.rep;
  const ModelConfig& cfg = model->config;
  const io::ArchRoles& roles = io::arch_roles(cfg);
  // Decide every tensor's fate first.
  const size_t total = model->tensors.size();
  plans.resize(total);
  rep.tensors.resize(total);
  for (size_t i = 0; i < total; ++i) {
    const TensorInfo& t = model->tensors[i];
    Plan& p = plans[i];
    TensorReport& r = rep.tensors[i];
    r.name = t.name;
    r.shape = t.shape;
    const auto ref = io::parse_block_tensor(roles, t.name);
    if (!q_perm.empty() && ref) {  // Q/K weights and biases of every block
      if (ref->role->role == "attn_q") p.perm = &q_perm;
      if (ref->role->role == "attn_k") p.perm = &k_perm;
    }
    if (calibrated && ref) {  // produced by the calibrated run, which may edit it
      p.layer = ref->layer;
      p.role = static_cast<int>(ref->role - roles.block.data());
    }
    if (p.perm && static_cast<int64_t>(p.perm->size()) != (t.shape.size() == 1 ? t.numel() : t.rows()))
      fail(src, "tensor '" + t.name + "'", t.shape_str() + " does not match the config's heads x head_dim (" +
                                               std::to_string(p.perm->size()) + " rows)");
    std::string fname = o.format;
    if (preset && t.shape.size() >= 2) {
      PresetModelInfo mi;
      mi.n_experts = cfg.n_experts;
      mi.n_layers = cfg.n_layers;
      mi.n_gqa = cfg.n_kv_heads > 0 ? cfg.n_heads / cfg.n_kv_heads : 1;
      mi.tied_embeddings = cfg.tied_embeddings;
      mi.is_70b = cfg.n_layers == 80 && mi.n_gqa > 1;
      mi.has_imatrix = job.imatrix.has_value() || o.qopts.use_importance;
      fname = o.pure ? std::string(dtype_name(preset->base))
                     : std::string(dtype_name(preset_tensor_type(*preset, t.name, t.cols(), mi, /*fallback=*/false)));
    }
    for (const auto& [pat, f] : o.overrides)
      if (matches(t.name, pat)) fname = f;
    // Explicit types (llama-quantize's order: the embedding's and the head's own options first, then the first
    // --tensor-type pattern that matches, which --pure ignores as llama-quantize does).
    bool explicit_type = false;
    if (t.shape.size() >= 2) {
      if (auto planned = o.planned_types.find(t.name); planned != o.planned_types.end()) {
        fname = planned->second;
        explicit_type = true;
      } else if (t.name == "token_embd.weight" && !job.token_embedding_type.empty()) {
        fname = job.token_embedding_type;
        explicit_type = true;
      } else if (t.name == "output.weight" && !job.output_tensor_type.empty()) {
        fname = job.output_tensor_type;
        explicit_type = true;
      } else if (!o.pure) {
        for (const auto& [re, type] : job.tensor_types)
          if (std::regex_search(t.name, re)) {
            fname = type;
            explicit_type = true;
            break;
          }
      }
    }
    // A llama.cpp type needs whole blocks per row: llama-quantize's fallback otherwise (F16: kept).
    if (auto gt = dtype_from_name(fname); gt && formats::ggml_encodable(*gt) && t.shape.size() >= 2) {
      const DType fb = fallback_type(*gt, t.cols());
      if (fb != *gt) {
        r.note = std::to_string(t.cols()) + " values per row do not fill " + fname + " blocks: " +
                 std::string(dtype_name(fb));
        fname = std::string(dtype_name(fb));
      }
    }
    const bool float_src = t.dtype == DType::F32 || t.dtype == DType::F16 || t.dtype == DType::BF16;
    const bool requant = o.allow_requantize && dtype_info(t.dtype).block > 1 && formats::ggml_decodable(t.dtype);
    // The MoE router stays in float, as llama-quantize keeps ffn_gate_inp.
    const bool never_quantized = ref && !ref->role->quantized;
    p.keep = !is_matrix_weight(t) || (!float_src && !requant) || never_quantized;
    if (is_matrix_weight(t) && !float_src && !requant)
      r.note = "already " + std::string(dtype_name(t.dtype)) + ": copied (--allow-requantize quantizes it again)";
    for (const auto& k : o.keep)
      if (matches(t.name, k) && !explicit_type) p.keep = true;
    // f16: a preset's fallback for rows no block type fits; f16 / bf16 / f32 given explicitly: stored so.
    const bool to_f16 = fname == "f16";
    const std::optional<DType> as_float = fname == "f16" ? std::optional(DType::F16)
                                          : fname == "bf16" ? std::optional(DType::BF16)
                                          : fname == "f32" ? std::optional(DType::F32)
                                                           : std::nullopt;
    if (as_float && !p.keep) {
      p.keep = true;
      p.keep_dtype = *as_float;
    }
    if (!p.keep) {
      p.fmt = formats::make_format(fname);
      if (auto* g = dynamic_cast<const formats::GgmlFormat*>(p.fmt.get())) p.ggml = g->dtype();
      if (o.transforms_only) {  // the transforms still see the format they would target
        p.keep = true;
        p.keep_dtype = DType::F32;
        r.stored = "f32";
        r.bits_per_weight = 32;
        p.calibrated_linear = false;
        continue;
      }
    }
    if (p.keep) {
      const DType want = o.transforms_only ? DType::F32 : as_float && explicit_type ? *as_float : to_f16 ? DType::F16 : o.keep_dtype;
      const bool convert = !never_quantized && t.shape.size() >= 2 && t.dtype != want &&
                           (t.dtype == DType::F32 || t.dtype == DType::F16 || t.dtype == DType::BF16);
      p.keep_dtype = convert ? want : t.dtype;
      // Norms and biases a transform may edit keep the precision of the edit.
      if (t.shape.size() == 1 && ref && !method.block_transforms.empty()) p.keep_dtype = DType::F32;
      r.stored = std::string(dtype_name(p.keep_dtype));
      const DTypeInfo di = dtype_info(p.keep_dtype);
      r.bits_per_weight = 8.0 * di.block_bytes / di.block;
      continue;
    }
    r.stored = fname;
    r.bits_per_weight = 8.0 * static_cast<double>(formats::row_bytes(*p.fmt, t.cols())) / static_cast<double>(t.cols());
    p.calibrated_linear = p.layer >= 0 && ref->role->kind == io::TensorKind::Linear;
  }
  if (job.imatrix) attach_imatrix(job, w);

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

}

// The report's totals from the plan: parameters, tensor bytes (each tensor's stored size), bits per weight.
void tally_sizes(Job& job) {
  QuantizeReport& rep = job.rep;
  rep.params = 0;
  rep.bytes = 0;
  for (size_t i = 0; i < job.plans.size(); ++i) {
    const TensorInfo& t = job.model->tensors[i];
    rep.params += t.numel();
    rep.bytes += static_cast<uint64_t>(std::llround(rep.tensors[i].bits_per_weight * static_cast<double>(t.numel()) / 8.0));
  }
  rep.bits_per_weight = rep.params > 0 ? 8.0 * static_cast<double>(rep.bytes) / static_cast<double>(rep.params) : 0;
}

// Stages 4 and 5, statistics + quantize and write: the writer pulls each tensor in file order (outside the blocks
// first, then block by block); a block's first request runs the calibrated run through it (CalibratedRun).
void write_tensors(Job& job, io::GgufWriter& w, const std::string& out) {
  const QuantizeModelOptions& o = job.o;
  const std::string& src = job.src;
  const bool calibrated = job.calibrated;
  const MethodPlan& method = job.method;
  const auto& model = job.model;
  const auto& plans = job.plans;
  const auto& rope_factors = job.rope_factors;
  QuantizeReport& rep = job.rep;
  const ModelConfig& cfg = model->config;
  const size_t total = plans.size();
  ResumeStore store(out,
                    run_fingerprint(src, job.source_checksum, o, method.text,
                                    job.imatrix ? hex64(job.imatrix->checksum) : std::string()),
                    o.resume);
  rep.resumed_tensors = store.resumed();
  std::unique_ptr<CalibratedRun> run;
  if (calibrated)
    run = std::make_unique<CalibratedRun>(model, plans, method, o.qopts, o.true_sequential, o.calib, rep.tensors, &store);
  auto rtn = make_quantizer("rtn");
  const auto solver = make_quantizer(method.solver->name, o.qopts);

  // File order: tensors outside the blocks, then block by block, so calibrated blocks are produced in order.
  std::vector<size_t> order(total);
  for (size_t i = 0; i < total; ++i) order[i] = i;
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    return io::layer_of_name(model->tensors[a].name) < io::layer_of_name(model->tensors[b].name);
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
    int l = io::layer_of_name(name);
    if (l >= cfg.n_layers) l = -1;
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
      w.add_tensor(t.name, p.keep_dtype, t.shape, [tp, &p, i, &run, &tick, &model](const io::GgufWriter::Sink& sink) mutable {
        // A tensor a block transform edited is written from its new f32 values.
        std::optional<std::vector<float>> edited;
        TensorInfo edited_info;
        if (p.layer >= 0 && run) edited = run->take_edited(i);
        if (edited) {
          edited_info = *tp;
          edited_info.dtype = DType::F32;
          edited_info.data = reinterpret_cast<const std::byte*>(edited->data());
          edited_info.nbytes = edited->size() * sizeof(float);
          tp = &edited_info;
        }
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
      std::vector<int64_t> logical = t.shape;  // [rows, cols] or [experts, rows, cols]
      w.set(io::packed_shape_key(t.name), io::GgufWriter::array(io::GgufType::U64, logical));
    }
    TensorReport* r = &rep.tensors[i];
    const Quantizer* alone = calibrated ? rtn.get() : solver.get();
    w.add_tensor(t.name, native ? p.ggml : DType::I8,
                 native ? t.shape : std::vector<int64_t>{rows, static_cast<int64_t>(rb)},
                 [tp, &p, i, r, rb, alone, &run, &tick, &model, &src, &store](const io::GgufWriter::Sink& sink) {
                   std::vector<std::byte> bytes;
                   if (p.calibrated_linear) {
                     bytes = run->take_encoded(i);
                   } else if (auto saved = store.load(i, tp->name)) {  // finished by a previous run (--resume)
                     r->rel_error = saved->rel_error;
                     bytes = std::move(saved->bytes);
                     release_source(*model, *tp);
                   } else {  // widened and quantized only now: one tensor resident
                     std::vector<float> W = widen(*tp);
                     release_source(*model, *tp);
                     LayerStats imp;  // the tensor's imatrix entry, if any (no H: rtn needs none)
                     if (p.importance) {
                       imp.cols = tp->cols();
                       imp.importance = *p.importance;
                     }
                     QuantResult q = quantize_tensor(*alone, src, *tp, W, *p.fmt, p.importance ? &imp : nullptr);
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
  tally_sizes(job);
}

// ---- Size budgets (--target-size / --target-bpw): measure, allocate, then quantize with the chosen types ----

// The default candidates of a family. 256-wide K-types, i-quants and iq4_xs where a tensor's rows fill them, else the 32-wide
// llama.cpp types (the ones llama-quantize falls back to); q8_0 and f16 either way.
// The i-quants (GPTQ re-chooses their vectors, Format::round_vector) took synth256's 689,824-byte budget from mean
// KLD 0.0431 to 0.0335 (docs/results.md, issue 15).
const std::vector<std::string> kGgufWide = {"iq2_xs", "iq2_s", "q2_K",   "iq3_xxs", "iq3_s", "q3_K",
                                            "q4_K",   "iq4_xs", "q5_K", "q6_K",    "q8_0",  "f16"};
const std::vector<std::string> kGgufNarrow = {"q4_0", "iq4_nl", "q4_1", "q5_0", "q5_1", "q8_0", "f16"};
const std::vector<std::string> kLowbit = {"int2g64a", "int3g64a", "int4g64a", "int5g64a", "int6g64a", "int8g64a", "f16"};

bool fits_rows(const std::string& type, int64_t cols) {
  if (type == "f16") return true;
  if (auto d = dtype_from_name(type); d && formats::ggml_encodable(*d)) return fallback_type(*d, cols) == *d;
  return true;  // lowbit formats pad a partial last group
}

bool is_gguf_type(const std::string& type) {
  if (type == "f16") return true;
  auto d = dtype_from_name(type);
  return d && formats::ggml_encodable(*d);
}

// The candidates of one matrix with `cols` input columns: the given ones (canonical names), else the family's
// ("gguf", "lowbit" or "any").
std::vector<std::string> matrix_candidates(const std::string& family, const std::vector<std::string>& given, int64_t cols) {
  std::vector<std::string> from;
  if (!given.empty()) {
    from = given;
  } else {
    if (family != "lowbit") {
      bool wide = false;
      for (const auto& c : kGgufWide) wide = wide || (c != "f16" && c != "q8_0" && fits_rows(c, cols));
      from = wide ? kGgufWide : kGgufNarrow;
    }
    if (family != "gguf")
      for (const auto& c : kLowbit)
        if (std::find(from.begin(), from.end(), c) == from.end()) from.push_back(c);
  }
  std::vector<std::string> out;
  for (const auto& c : from)
    if (fits_rows(c, cols)) out.push_back(c);
  return out;
}

uint64_t stored_bytes(const std::string& type, int64_t rows, int64_t cols) {
  if (type == "f16") return static_cast<uint64_t>(rows * cols) * 2;
  return formats::row_bytes(*formats::make_format(type), cols) * static_cast<uint64_t>(rows);
}

double bits_of(const std::string& type, int64_t cols) {
  return 8.0 * static_cast<double>(stored_bytes(type, 1, cols)) / static_cast<double>(cols);
}

// GGUF bytes of one metadata entry: key, type, value.
uint64_t kv_bytes(const std::string& key, uint64_t value_bytes) { return 8 + key.size() + 4 + value_bytes; }

// Bytes a tensor adds to the file in `type` beyond its data: lowbit's packed formats carry two metadata keys.
uint64_t meta_bytes(const std::string& name, const std::string& type) {
  if (is_gguf_type(type)) return 0;
  return kv_bytes(io::packed_format_key(name), 8 + type.size()) + kv_bytes(io::packed_shape_key(name), 4 + 8 + 16);
}

uint64_t align32(uint64_t n) { return (n + 31) / 32 * 32; }

std::string group_of(const io::ArchRoles& roles, const std::string& name) {
  if (auto ref = io::parse_block_tensor(roles, name)) return std::string(ref->role->role);
  return name.size() > 7 ? name.substr(0, name.size() - 7) : name;
}

// Adds the wall time of its scope to a total.
struct Stopwatch {
  explicit Stopwatch(double& total) : total_(total), t0_(std::chrono::steady_clock::now()) {}
  ~Stopwatch() { total_ += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0_).count(); }
  double& total_;
  std::chrono::steady_clock::time_point t0_;
};

// The measurement pass: a calibrated run of the method at each tensor's reference format, in which every block
// linear is also quantized into each other candidate under the same statistics (its output error measured), and
// put alone into the full-precision probe model (its KLD: the sensitivity coefficient).
class MeasurePass : public RunObserver {
 public:
  double solve_seconds = 0, probe_seconds = 0;  // where the pass's time went

  MeasurePass(const Job& job, const std::map<size_t, std::vector<std::string>>& candidates, budget::KldProbe& probe,
              std::map<size_t, budget::TensorMeasure>& out, std::function<void(const std::string&)> tick)
      : job_(job), candidates_(candidates), probe_(probe), out_(out), tick_(std::move(tick)) {
    solver_ = job.method.solver->solver(job.o.qopts);
  }
  void block_values(int, size_t i, const std::vector<float>& values) override {
    auto buf = std::make_shared<std::vector<float>>(values);
    install_f32(probe_.model(), job_.model->tensors[i], *buf);
    fp_[i] = buf;
  }
  void linear(int, size_t i, const std::vector<float>& W, const LayerStats& stats, const QuantResult& q) override {
    const TensorInfo& t = job_.model->tensors[i];
    const std::string& ref = job_.o.planned_types.at(t.name);
    budget::TensorMeasure m;
    m.name = t.name;
    m.shape = t.shape;
    m.reference = ref;
    double ref_error = 0;
    for (const std::string& c : candidates_.at(i)) {
      budget::CandidateMeasure cm{c, stored_bytes(c, t.rows(), t.cols()), 0.0};
      if (c == ref) {
        cm.error = ref_error = layer_error(W.data(), q.dequant.data(), t.rows(), t.cols(), stats);
      } else if (c != "f16") {
        const Stopwatch sw(solve_seconds);
        const QuantResult qc = quantize_tensor(*solver_, job_.src, t, W, *formats::make_format(c), &stats);
        cm.error = layer_error(W.data(), qc.dequant.data(), t.rows(), t.cols(), stats);
      }
      m.candidates.push_back(cm);
    }
    {  // The sensitivity: this quantization alone in the full-precision model.
      const Stopwatch sw(probe_seconds);
      install_f32(probe_.model(), t, q.dequant);
      m.reference_kld = probe_.kld_from_here();
      restore(i);
    }
    m.coefficient = ref_error > 0 ? m.reference_kld / ref_error : 0.0;
    out_[i] = std::move(m);
    tick_(t.name);
  }
  // The embedding and the head: each candidate's KLD directly (quantized as the run would: rtn, with the tensor's
  // imatrix entry if any). The probe stands after the last block.
  void direct(size_t i) {
    const TensorInfo& t = job_.model->tensors[i];
    const Plan& p = job_.plans[i];
    const std::vector<float> W = widen(t);
    LayerStats imp;
    if (p.importance) {
      imp.cols = t.cols();
      imp.importance = *p.importance;
    }
    const auto rtn = make_quantizer("rtn");
    budget::TensorMeasure m;
    m.name = t.name;
    m.shape = t.shape;
    m.direct = true;
    m.coefficient = 1;
    const bool head_only = t.name != "token_embd.weight";
    for (const std::string& c : candidates_.at(i)) {
      budget::CandidateMeasure cm{c, stored_bytes(c, t.rows(), t.cols()), 0.0};
      if (c != "f16") {
        std::optional<Stopwatch> sw(std::in_place, solve_seconds);
        const QuantResult q = quantize_tensor(*rtn, job_.src, t, W, *formats::make_format(c), p.importance ? &imp : nullptr);
        sw.emplace(probe_seconds);
        install_f32(probe_.model(), t, q.dequant);
        cm.error = head_only ? probe_.kld_from_here() : probe_.kld_from_start();
        restore(i);
      }
      m.candidates.push_back(cm);
    }
    out_[i] = std::move(m);
    tick_(t.name);
  }

 private:
  void restore(size_t i) {
    auto it = fp_.find(i);
    if (it != fp_.end()) install_f32(probe_.model(), job_.model->tensors[i], *it->second);
    else probe_.model().replace_weight(job_.model->tensors[i]);
  }
  const Job& job_;
  const std::map<size_t, std::vector<std::string>>& candidates_;
  budget::KldProbe& probe_;
  std::map<size_t, budget::TensorMeasure>& out_;
  std::function<void(const std::string&)> tick_;
  std::unique_ptr<Quantizer> solver_;
  std::map<size_t, std::shared_ptr<std::vector<float>>> fp_;  // transformed full-precision values
};

std::string measure_key(const Job& job, const std::map<size_t, std::vector<std::string>>& candidates, int probe_windows) {
  const QuantizeModelOptions& o = job.o;
  nlohmann::json j = {{"run", run_fingerprint(job.src, job.source_checksum, o, job.method.text,
                                              job.imatrix ? hex64(job.imatrix->checksum) : std::string())},
                      {"probe_windows", probe_windows}, {"measure_version", 2}};
  for (const auto& [i, c] : candidates) j["candidates"][job.model->tensors[i].name] = c;
  const std::string text = j.dump();
  return hex64(fnv1a64(reinterpret_cast<const std::byte*>(text.data()), text.size()));
}

QuantizeReport quantize_to_budget(const std::string& src, const std::string& out, const QuantizeModelOptions& o) {
  using Clock = std::chrono::steady_clock;
  const auto t0 = Clock::now();
  const bool by_size = o.target_bytes > 0;
  const std::string option = by_size ? "--target-size" : "--target-bpw";
  if (by_size && o.target_bpw > 0) fail(src, "--target-size", "and --target-bpw both set a budget: pass one of them");
  if (!by_size && !(o.target_bpw > 0 && o.target_bpw <= 32))
    fail(src, "--target-bpw", "expected bits per weight in (0, 32]");
  if (o.format != "gguf" && o.format != "lowbit" && o.format != "any")
    fail(src, "--format", "'" + o.format + "' with " + option + ": expected gguf, lowbit or any (the types to choose among)");
  if (o.calib.empty()) fail(src, option, "measures each candidate on calibration text: pass --calib FILE");
  if (!o.tensor_types.empty() || !o.token_embedding_type.empty() || !o.output_tensor_type.empty() || o.pure ||
      !o.overrides.empty())
    fail(src, option, "chooses every type itself: it cannot be combined with --tensor-type, --token-embedding-type, "
                      "--output-tensor-type, --bits-for or --pure (use --keep and --candidates)");
  if (o.probe_windows < 1) fail(src, "--probe-windows", "expected at least 1");

  // Job A, the measurement: every candidate matrix at its reference format (the candidate nearest 4.5 bits).
  QuantizeModelOptions oa = o;
  for (auto& c : oa.candidates) c = canonical_type(src, "--candidates", c);  // as the plan stores types: Q4_K -> q4_K
  oa.format = o.format == "lowbit" ? "int4g64a" : "q4_K";
  oa.dry_run = true;
  Job ja{src, oa};
  ja.calibrated = true;
  check_options(ja);
  io::GgufWriter wa;
  open_source(ja, wa);
  std::map<size_t, std::vector<std::string>> candidates;
  for (size_t i = 0; i < ja.model->tensors.size(); ++i) {
    const TensorInfo& t = ja.model->tensors[i];
    if (!is_matrix_weight(t) || !(t.dtype == DType::F32 || t.dtype == DType::F16 || t.dtype == DType::BF16)) continue;
    bool kept = false;
    for (const auto& k : o.keep) kept = kept || matches(t.name, k);
    if (kept) continue;
    std::vector<std::string> c = matrix_candidates(o.format, oa.candidates, t.cols());
    if (c.empty()) fail(src, "--candidates", "none fits the rows of '" + t.name + "' (" + std::to_string(t.cols()) + " columns)");
    std::string ref;
    for (const auto& f : c)
      if (f != "f16" && (ref.empty() || std::fabs(bits_of(f, t.cols()) - 4.5) < std::fabs(bits_of(ref, t.cols()) - 4.5))) ref = f;
    oa.planned_types[t.name] = ref.empty() ? "f16" : ref;
    candidates[i] = std::move(c);
  }
  if (candidates.empty()) fail(src, option, "no matrix is left to choose a type for (all kept)");
  plan_tensors(ja, wa);  // what o.keep matches is kept in keep_dtype, the rest is planned

  // The budget's fixed part. Whole file: the metadata and tensor infos as job A has them (plus slack for the keys a type
  // changes), the kept tensors, then each candidate's data padded to the alignment and its own metadata.
  std::map<std::string, size_t> index;
  for (size_t i = 0; i < ja.model->tensors.size(); ++i) index[ja.model->tensors[i].name] = i;
  uint64_t fixed = 0;
  int64_t params = 0;
  for (size_t i = 0; i < ja.model->tensors.size(); ++i) {
    const TensorInfo& t = ja.model->tensors[i];
    params += t.numel();
    if (by_size) fixed += 8 + t.name.size() + 4 + 8 * t.shape.size() + 4 + 8;
    if (candidates.count(i)) continue;
    const uint64_t n = io::GgufWriter::tensor_bytes(ja.plans[i].keep_dtype, t.shape, t.name);
    fixed += by_size ? align32(n) : n;
  }
  if (by_size) {
    fixed += wa.file_size() + 128;  // kv (wa holds no tensors yet), header alignment; 128: keys a type may add
    if (!ja.rope_factors.empty())
      fixed += 8 + 17 + 4 + 8 + 4 + 8 + align32(ja.rope_factors.size() * sizeof(float));
  }
  const uint64_t target = by_size ? o.target_bytes
                                  : static_cast<uint64_t>(std::floor(o.target_bpw * static_cast<double>(params) / 8.0));
  // The cost of each candidate, and a budget below the smallest plan refused before any measuring.
  auto cost_of = [&](const std::string& name, const std::string& format, uint64_t bytes) {
    return by_size ? align32(bytes) + meta_bytes(name, format) : bytes;
  };
  {
    uint64_t smallest = fixed;
    for (const auto& [i, c] : candidates) {
      const TensorInfo& t = ja.model->tensors[i];
      uint64_t least = UINT64_MAX;
      for (const auto& f : c) least = std::min(least, cost_of(t.name, f, stored_bytes(f, t.rows(), t.cols())));
      smallest += least;
    }
    if (target < smallest)
      fail(src, option, std::to_string(target) + " bytes is below the smallest plan the candidates allow (" +
                            std::to_string(smallest) + " bytes: every tensor in its smallest candidate)");
  }

  QuantizeReport::Budget b;
  b.whole_file = by_size;
  b.probe_windows = std::min<int>(o.probe_windows, static_cast<int>(o.calib.size()));
  b.probe_len = static_cast<int>(o.calib[0].size());
  const std::string key = measure_key(ja, candidates, b.probe_windows);
  b.cache = o.measure_cache.empty() ? budget::default_cache_path(key) : o.measure_cache;
  std::optional<budget::Measurement> measured = budget::load_measurement(b.cache, key);
  std::vector<std::vector<int32_t>> probe_windows(o.calib.begin(), o.calib.begin() + b.probe_windows);
  b.cache_hit = measured.has_value();
  if (!measured) {
    const auto tm = Clock::now();
    budget::KldProbe probe(ja.model, probe_windows);
    std::map<size_t, budget::TensorMeasure> per;
    size_t done = 0;
    auto tick = [&](const std::string& name) {
      if (o.progress) o.progress(++done, candidates.size(), "measure " + name);
    };
    MeasurePass pass(ja, candidates, probe, per, tick);
    {
      CalibratedRun run(ja.model, ja.plans, ja.method, oa.qopts, oa.true_sequential, oa.calib, ja.rep.tensors, nullptr, &pass);
      for (int l = 0; l < ja.model->config.n_layers; ++l) {
        run.ensure(l);
        probe.advance();
      }
    }
    for (const auto& [i, c] : candidates)
      if (!per.count(i)) pass.direct(i);  // the embedding, the head (and any matrix outside the blocks)
    budget::Measurement m;
    m.key = key;
    m.probe_windows = b.probe_windows;
    m.probe_len = b.probe_len;
    for (auto& [i, tmeas] : per) m.tensors.push_back(std::move(tmeas));
    m.seconds = std::chrono::duration<double>(Clock::now() - tm).count();
    m.solve_seconds = pass.solve_seconds;
    m.probe_seconds = pass.probe_seconds;
    budget::save_measurement(b.cache, m);
    measured = std::move(m);
  }
  b.measure_seconds = measured->seconds;
  b.measure_solve_seconds = measured->solve_seconds;
  b.measure_probe_seconds = measured->probe_seconds;
  const auto tp = Clock::now();

  // The allocation.
  std::vector<budget::Item> items;
  for (const auto& m : measured->tensors) {
    if (!index.count(m.name)) fail(b.cache, "tensor '" + m.name + "'", "is not in " + src + " (a stale cache file?)");
    budget::Item it{m.name, {}};
    for (size_t c = 0; c < m.candidates.size(); ++c)
      it.candidates.push_back({m.candidates[c].format, cost_of(m.name, m.candidates[c].format, m.candidates[c].bytes),
                               m.damage(c)});
    items.push_back(std::move(it));
  }
  const budget::Allocation alloc = budget::allocate(items, target - fixed);
  b.target_bytes = target;
  b.granularity = alloc.granularity;
  b.items = items.size();
  b.predicted_kld = alloc.damage;
  b.planned_bytes = fixed + alloc.bytes;  // an upper bound; the written file's exact size replaces it
  b.plan_seconds = std::chrono::duration<double>(Clock::now() - tp).count();

  // Job B: the real run with the chosen types.
  QuantizeModelOptions ob = o;
  ob.format = oa.format;
  ob.keep = oa.keep;
  ob.target_bytes = 0;
  ob.target_bpw = 0;
  std::map<std::string, double> predicted;
  for (size_t k = 0; k < items.size(); ++k) {
    ob.planned_types[items[k].name] = items[k].candidates[alloc.choice[k]].format;
    predicted[items[k].name] = items[k].candidates[alloc.choice[k]].damage;
  }
  QuantizeReport rep = quantize_model(src, out, ob);
  if (by_size && !o.dry_run) {
    std::error_code ec;
    const uint64_t size = std::filesystem::file_size(out, ec);
    if (!ec) b.planned_bytes = size;
  } else if (!by_size) {
    b.planned_bytes = rep.bytes;
  }
  const io::ArchRoles& roles = io::arch_roles(ja.model->config);
  std::map<std::string, QuantizeReport::Budget::Group> groups;
  for (auto& r : rep.tensors) {
    auto it = predicted.find(r.name);
    if (it == predicted.end()) continue;
    r.predicted_kld = it->second;
    auto& g = groups[group_of(roles, r.name)];
    g.role = group_of(roles, r.name);
    const int64_t n = ja.model->tensors[index.at(r.name)].numel();
    g.params += n;
    g.bytes += static_cast<uint64_t>(std::llround(r.bits_per_weight * static_cast<double>(n) / 8.0));
    g.predicted_kld += it->second;
    g.formats[r.stored]++;
  }
  // Measured: the written file on the probe windows, and each role's tensors alone (as written) in the
  // full-precision model (not with block transforms, whose edits of the neighbouring norms the file holds).
  if (!o.dry_run) {
    budget::KldProbe probe(ja.model, probe_windows);
    auto qfile = load_model(out);
    Model qm(qfile, b.probe_len);
    b.measured_kld = probe.kld_of(qm);
    if (ja.method.block_transforms.empty()) {
      for (auto& [role, g] : groups) {
        std::vector<std::vector<float>> bufs;
        std::vector<size_t> members;
        for (const auto& [name, d] : predicted) {
          if (group_of(roles, name) != role) continue;
          const size_t i = index.at(name);
          const TensorInfo& t = ja.model->tensors[i];
          const ops::WeightView v = ops::view_of(qfile->get(name));
          std::vector<float> vals(static_cast<size_t>(t.numel()));
          // The file's rows are in its own order (Q/K re-paired for a GGUF from another source): back to the source's.
          const std::vector<int64_t>* perm = ja.plans[i].perm;
          for (int64_t r = 0; r < v.rows; ++r)
            ops::get_row(v, r, vals.data() + (perm ? (*perm)[static_cast<size_t>(r)] : r) * v.cols);
          bufs.push_back(std::move(vals));
          install_f32(probe.model(), t, bufs.back());
          members.push_back(i);
        }
        g.measured_kld = probe.kld_from_start();
        for (size_t i : members) probe.model().replace_weight(ja.model->tensors[i]);
      }
    }
  }
  for (auto& [role, g] : groups) b.groups.push_back(g);
  rep.budget = b;
  rep.seconds = std::chrono::duration<double>(Clock::now() - t0).count();
  return rep;
}

}  // namespace

QuantizeReport quantize_model(const std::string& src, const std::string& out, const QuantizeModelOptions& o) {
  const auto t0 = std::chrono::steady_clock::now();
  // The same bytes for any thread count: batched matmuls in fixed panels while quantizing (lowbit/threads.h).
  struct DeterministicBlas {
    DeterministicBlas() { set_deterministic_blas(true); }
    ~DeterministicBlas() { set_deterministic_blas(false); }
  } deterministic;
  if (o.target_bytes > 0 || o.target_bpw > 0) return quantize_to_budget(src, out, o);
  Job job{src, o};
  job.calibrated = !o.calib.empty();
  check_options(job);
  io::GgufWriter w;
  open_source(job, w);
  plan_tensors(job, w);
  if (o.dry_run) {
    tally_sizes(job);
  } else {
    write_tensors(job, w, out);
  }
  job.rep.method = job.method.text;
  job.rep.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return job.rep;
}

}  // namespace lowbit::quant
