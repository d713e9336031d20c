#include "quant/budget/measure.h"

#include <unistd.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

#include "lowbit/error.h"
#include "lowbit/threads.h"

namespace lowbit::quant::budget {

std::string default_cache_path(const std::string& key) {
  namespace fs = std::filesystem;
  fs::path dir;
  if (const char* d = std::getenv("LOWBIT_CACHE_DIR"); d && *d) dir = d;
  else if (const char* x = std::getenv("XDG_CACHE_HOME"); x && *x) dir = fs::path(x) / "lowbit";
  else if (const char* h = std::getenv("HOME"); h && *h) dir = fs::path(h) / ".cache" / "lowbit";
  else dir = fs::temp_directory_path() / "lowbit";
  return (dir / ("measure-" + key + ".json")).string();
}

std::optional<Measurement> load_measurement(const std::string& path, const std::string& key) {
  std::ifstream in(path);
  if (!in) return std::nullopt;
  try {
    const nlohmann::json j = nlohmann::json::parse(in);
    if (j.at("key").get<std::string>() != key) return std::nullopt;
    Measurement m;
    m.key = key;
    m.seconds = j.at("seconds").get<double>();
    m.solve_seconds = j.at("solve_seconds").get<double>();
    m.probe_seconds = j.at("probe_seconds").get<double>();
    m.probe_windows = j.at("probe_windows").get<int>();
    m.probe_len = j.at("probe_len").get<int>();
    for (const auto& jt : j.at("tensors")) {
      TensorMeasure t;
      t.name = jt.at("name").get<std::string>();
      t.shape = jt.at("shape").get<std::vector<int64_t>>();
      t.direct = jt.at("direct").get<bool>();
      t.reference = jt.at("reference").get<std::string>();
      t.reference_kld = jt.at("reference_kld").get<double>();
      t.coefficient = jt.at("coefficient").get<double>();
      for (const auto& jc : jt.at("candidates"))
        t.candidates.push_back({jc.at("format").get<std::string>(), jc.at("bytes").get<uint64_t>(),
                                jc.at("error").get<double>()});
      if (t.candidates.empty()) return std::nullopt;
      m.tensors.push_back(std::move(t));
    }
    return m;
  } catch (const nlohmann::json::exception&) {
    return std::nullopt;  // damaged or of another version: measured again
  }
}

void save_measurement(const std::string& path, const Measurement& m) {
  namespace fs = std::filesystem;
  nlohmann::json j = {{"key", m.key}, {"seconds", m.seconds}, {"solve_seconds", m.solve_seconds},
                      {"probe_seconds", m.probe_seconds}, {"probe_windows", m.probe_windows},
                      {"probe_len", m.probe_len}, {"tensors", nlohmann::json::array()}};
  for (const auto& t : m.tensors) {
    nlohmann::json jt = {{"name", t.name}, {"shape", t.shape}, {"direct", t.direct}, {"reference", t.reference},
                         {"reference_kld", t.reference_kld}, {"coefficient", t.coefficient},
                         {"candidates", nlohmann::json::array()}};
    for (const auto& c : t.candidates)
      jt["candidates"].push_back({{"format", c.format}, {"bytes", c.bytes}, {"error", c.error}});
    j["tensors"].push_back(std::move(jt));
  }
  const fs::path p(path);
  std::error_code ec;
  if (p.has_parent_path()) fs::create_directories(p.parent_path(), ec);
  const std::string tmp = path + ".tmp." + std::to_string(::getpid());
  {
    std::ofstream out(tmp);
    out << j.dump(1) << "\n";
    if (!out.flush()) {
      fs::remove(tmp, ec);
      fail(path, "measurement cache", "cannot write " + tmp);
    }
  }
  fs::rename(tmp, p, ec);
  if (ec) {
    fs::remove(tmp, ec);
    fail(path, "measurement cache", "cannot rename " + tmp + " into place");
  }
}

namespace {

// Sum over rows of KL(base || q) for logits rows (n x vocab) against the base's log-probabilities, in double.
double kld_sum(const float* base_logp, const float* logits, int64_t n, int64_t vocab) {
  std::vector<double> part(static_cast<size_t>(n), 0.0);
  parallel_fixed_chunks(n, 16, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const float* z = logits + r * vocab;
      const float* lb = base_logp + r * vocab;
      double mx = z[0];
      for (int64_t v = 1; v < vocab; ++v) mx = std::max(mx, static_cast<double>(z[v]));
      double s = 0;
      for (int64_t v = 0; v < vocab; ++v) s += std::exp(static_cast<double>(z[v]) - mx);
      const double lse = mx + std::log(s);
      double kl = 0;
      for (int64_t v = 0; v < vocab; ++v) {
        const double b = lb[v];
        kl += std::exp(b) * (b - (static_cast<double>(z[v]) - lse));
      }
      part[static_cast<size_t>(r)] = kl;
    }
  });
  double total = 0;
  for (double k : part) total += k;
  return total;
}

}  // namespace

KldProbe::KldProbe(std::shared_ptr<const ModelFile> file, std::vector<std::vector<int32_t>> windows)
    : file_(file), windows_(std::move(windows)), len_(static_cast<int>(windows_.at(0).size())), model_(file, len_) {
  const ModelConfig& c = file_->config;
  const size_t rows = windows_.size() * static_cast<size_t>(len_);
  h_.resize(rows * static_cast<size_t>(c.dim));
  for (size_t s = 0; s < windows_.size(); ++s) model_.embed(windows_[s], h_.data() + s * len_ * c.dim);
  // The base log-probabilities: the full-precision model from the embeddings to the head.
  std::vector<float> h = h_;
  for (int l = 0; l < c.n_layers; ++l) model_.forward_layer(l, h.data(), n_windows(), len_, {});
  base_logp_.resize(rows * static_cast<size_t>(c.n_vocab));
  model_.logits(h.data(), static_cast<int64_t>(rows), base_logp_.data());
  const int64_t vocab = c.n_vocab;
  for (size_t r = 0; r < rows; ++r) {
    float* z = base_logp_.data() + r * vocab;
    double mx = z[0], s = 0;
    for (int64_t v = 1; v < vocab; ++v) mx = std::max(mx, static_cast<double>(z[v]));
    for (int64_t v = 0; v < vocab; ++v) s += std::exp(static_cast<double>(z[v]) - mx);
    const double lse = mx + std::log(s);
    for (int64_t v = 0; v < vocab; ++v) z[v] = static_cast<float>(static_cast<double>(z[v]) - lse);
  }
}

void KldProbe::advance() {
  model_.forward_layer(layer_, h_.data(), n_windows(), len_, {});
  ++layer_;
}

double KldProbe::kld_of_hidden(Model& m, std::vector<float>& h, int from_layer) {
  const ModelConfig& c = file_->config;
  for (int l = from_layer; l < c.n_layers; ++l) m.forward_layer(l, h.data(), n_windows(), len_, {});
  const int64_t rows = static_cast<int64_t>(n_windows()) * len_;
  // The head a window at a time: logits of every row at once would be rows x vocab floats.
  std::vector<float> logits(static_cast<size_t>(len_) * c.n_vocab);
  double total = 0;
  for (int s = 0; s < n_windows(); ++s) {
    m.logits(h.data() + static_cast<size_t>(s) * len_ * c.dim, len_, logits.data());
    total += kld_sum(base_logp_.data() + static_cast<size_t>(s) * len_ * c.n_vocab, logits.data(), len_, c.n_vocab);
  }
  return total / static_cast<double>(rows);
}

double KldProbe::kld_from_here() {
  std::vector<float> h = h_;
  return kld_of_hidden(model_, h, layer_);
}

double KldProbe::kld_from_start() { return kld_of(model_); }

double KldProbe::kld_of(Model& other) {
  const ModelConfig& c = file_->config;
  if (other.config().n_vocab != c.n_vocab || other.config().dim != c.dim)
    fail(other.file().path, "model", "does not match the probe's model (vocabulary or width)");
  std::vector<float> h(h_.size());
  for (size_t s = 0; s < windows_.size(); ++s) other.embed(windows_[s], h.data() + s * len_ * c.dim);
  return kld_of_hidden(other, h, 0);
}

}  // namespace lowbit::quant::budget
