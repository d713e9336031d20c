// Size-budget plans end to end (QuantizeModelOptions::target_bytes / target_bpw) on synth256: the written file fits
// the budget and fills it, its types are llama.cpp's, the measurements are cached and a second budget re-plans from
// them, the plan beats one type for every matrix at the same size, and bad budgets are one error with nothing
// written. Also the pieces underneath: the KLD probe (zero for the model itself, the carried hidden states give the
// same KLD as a run from the embeddings) and Model::logits (the end of forward()).
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <string>

#include <nlohmann/json.hpp>

#include "calib/calib_data.h"
#include "io/gguf.h"
#include "lowbit/error.h"
#include "lowbit/model.h"
#include "lowbit/tokenizer.h"
#include "quant/budget/measure.h"
#include "quant/quantize_model.h"
#include "test_util.h"
#include "quantize_error.h"

namespace lowbit::quant {
namespace {

namespace fs = std::filesystem;
const char* kSrc = "reference/gguf/synth256-F32.gguf";
const char* kValid = "data/wikitext-2/valid.txt";

std::string tmp(const std::string& name) {
  return (fs::temp_directory_path() / ("lowbit_budget_" + std::to_string(::getpid()) + "_" + name)).string();
}

std::vector<std::vector<int32_t>> windows(int samples, int len) {
  auto tok = make_tokenizer(load_model(test::shared(kSrc))->tokenizer);
  calib::CalibOptions co;
  co.samples = samples;
  co.len = len;
  co.bos = tok->bos();
  return calib::sample_windows(tok->encode(test::read_file(test::shared(kValid)).substr(0, 40000), true), co, "valid.txt");
}

QuantizeModelOptions budget_options(const std::string& cache) {
  QuantizeModelOptions o;
  o.format = "gguf";
  o.keep.clear();
  o.calib = windows(8, 64);
  o.calib_source = "valid.txt";
  o.probe_windows = 4;
  o.measure_cache = cache;
  return o;
}

double file_kld(budget::KldProbe& probe, const std::string& path) {
  auto f = load_model(path);
  Model m(f, probe.len());
  return probe.kld_of(m);
}

TEST(BudgetPlan, FileFitsTheBudgetAndASecondBudgetReplansFromTheCache) {
  LOWBIT_NEED_SHARED(kSrc);
  LOWBIT_NEED_SHARED(kValid);
  const std::string cache = tmp("cache.json"), a = tmp("a.gguf"), b = tmp("b.gguf"), c = tmp("c.gguf");
  QuantizeModelOptions o = budget_options(cache);
  o.target_bytes = 1000000;
  const QuantizeReport ra = quantize_model(test::shared(kSrc), a, o);
  ASSERT_TRUE(ra.budget);
  EXPECT_FALSE(ra.budget->cache_hit);
  EXPECT_TRUE(fs::exists(cache));
  {  // --format gguf measured llama.cpp types only (and f16): every candidate in the cache
    const std::string key = nlohmann::json::parse(test::read_file(cache))["key"].get<std::string>();
    const auto m = budget::load_measurement(cache, key);
    ASSERT_TRUE(m);
    EXPECT_EQ(m->tensors.size(), 16u);
    for (const auto& t : m->tensors)
      for (const auto& c : t.candidates) {
        const auto d = dtype_from_name(c.format);
        EXPECT_TRUE(d.has_value()) << t.name << ": candidate " << c.format << " is not a llama.cpp type";
      }
  }
  const uint64_t size = fs::file_size(a);
  EXPECT_LE(size, 1000000u);
  EXPECT_GE(size, 995000u);  // 99.5% of the budget
  EXPECT_EQ(ra.budget->planned_bytes, size);
  // Every matrix is a llama.cpp type (a file llama.cpp loads), and the report says which.
  auto f = io::GgufFile::open(a);
  int quantized = 0;
  for (const auto& t : f->tensors()) {
    EXPECT_NE(t.dtype, DType::I8) << t.name << " is in a lowbit format";
    if (t.ne.size() == 2 && t.dtype != DType::F32) ++quantized;
  }
  EXPECT_EQ(quantized, 16);  // 2 x 7 block linears, the embedding and the head (f16 counts: llama.cpp loads it)
  // HIGGS's linearity: the summed per-tensor predictions track the whole file's KLD on the probe windows.
  EXPECT_GT(ra.budget->measured_kld, 0.0);
  EXPECT_GT(ra.budget->predicted_kld, 0.5 * ra.budget->measured_kld);
  EXPECT_LT(ra.budget->predicted_kld, 2.0 * ra.budget->measured_kld);

  // A smaller budget: from the cache, no measuring; smaller file, more damage.
  o.target_bytes = 850000;
  const QuantizeReport rb = quantize_model(test::shared(kSrc), b, o);
  EXPECT_TRUE(rb.budget->cache_hit);
  EXPECT_LE(fs::file_size(b), 850000u);
  EXPECT_GE(fs::file_size(b), 845750u);
  EXPECT_GT(rb.budget->predicted_kld, ra.budget->predicted_kld);
  // The first budget again, from the cache: the same bytes as the run that measured.
  o.target_bytes = 1000000;
  quantize_model(test::shared(kSrc), c, o);
  EXPECT_EQ(test::read_file(a), test::read_file(c));
  // Bits per parameter instead (the tensors' bytes), planned only.
  o.target_bytes = 0;
  o.target_bpw = 4.0;
  o.dry_run = true;
  fs::remove(c);
  const QuantizeReport rd = quantize_model(test::shared(kSrc), c, o);
  EXPECT_FALSE(fs::exists(c));
  EXPECT_TRUE(rd.budget->cache_hit);
  EXPECT_FALSE(rd.budget->whole_file);
  EXPECT_LE(rd.bits_per_weight, 4.0);
  EXPECT_GE(rd.bits_per_weight, 4.0 * 0.995);
  EXPECT_LT(rd.budget->measured_kld, 0.0);  // a dry run measures nothing
  for (const auto& p : {cache, a, b, c}) fs::remove(p);
}

TEST(BudgetPlan, BeatsOneTypeForEveryMatrixAtItsSize) {
  LOWBIT_NEED_SHARED(kSrc);
  LOWBIT_NEED_SHARED(kValid);
  const std::string cache = tmp("cache2.json"), uniform = tmp("q4k.gguf"), planned = tmp("plan.gguf");
  QuantizeModelOptions u;
  u.format = "q4_K";
  u.keep.clear();
  u.calib = windows(8, 64);
  u.calib_source = "valid.txt";
  quantize_model(test::shared(kSrc), uniform, u);
  QuantizeModelOptions o = budget_options(cache);
  o.target_bytes = fs::file_size(uniform);
  quantize_model(test::shared(kSrc), planned, o);
  EXPECT_LE(fs::file_size(planned), fs::file_size(uniform));
  // Judged on windows neither run calibrated on.
  auto tok = make_tokenizer(load_model(test::shared(kSrc))->tokenizer);
  calib::CalibOptions co;
  co.samples = 6;
  co.len = 64;
  co.bos = tok->bos();
  LOWBIT_NEED_SHARED("data/wikitext-2/test.txt");
  budget::KldProbe judge(load_model(test::shared(kSrc)),
                         calib::sample_windows(tok->encode(test::read_file(test::shared("data/wikitext-2/test.txt")).substr(0, 40000), true),
                                               co, "test.txt"));
  const double k_uniform = file_kld(judge, uniform), k_planned = file_kld(judge, planned);
  EXPECT_LT(k_planned, k_uniform) << "plan " << k_planned << ", q4_K everywhere " << k_uniform;
  for (const auto& p : {cache, uniform, planned}) fs::remove(p);
}

std::string error_of(const QuantizeModelOptions& o, const std::string& out) {
  return test::quantize_error(test::shared(kSrc), o, out);
}

TEST(BudgetPlan, BadBudgetsAreOneErrorAndWriteNothing) {
  LOWBIT_NEED_SHARED(kSrc);
  LOWBIT_NEED_SHARED(kValid);
  const std::string cache = tmp("cache3.json"), out = tmp("bad.gguf");
  QuantizeModelOptions o = budget_options(cache);
  o.target_bytes = 300000;  // below every matrix in q2_K (about 620 KB)
  std::string m = error_of(o, out);
  EXPECT_NE(m.find("--target-size"), std::string::npos) << m;
  EXPECT_NE(m.find("below the smallest plan"), std::string::npos) << m;
  EXPECT_EQ(m.find('\n'), std::string::npos) << m;
  o.format = "q4_K";  // a type, not a family
  m = error_of(o, out);
  EXPECT_NE(m.find("expected gguf, lowbit or any"), std::string::npos) << m;
  o.format = "gguf";
  o.target_bpw = 4;  // two budgets
  m = error_of(o, out);
  EXPECT_NE(m.find("--target-bpw both"), std::string::npos) << m;
  o.target_bytes = 0;
  o.calib.clear();  // nothing to measure on
  m = error_of(o, out);
  EXPECT_NE(m.find("--calib"), std::string::npos) << m;
  o = budget_options(cache);
  o.target_bytes = 1000000;
  o.candidates = {"q4_K", "q9_X"};
  m = error_of(o, out);
  EXPECT_NE(m.find("q9_X"), std::string::npos) << m;
  fs::remove(cache);
}

TEST(BudgetPlan, CandidatesAsGiven) {
  LOWBIT_NEED_SHARED(kSrc);
  LOWBIT_NEED_SHARED(kValid);
  const std::string cache = tmp("cache4.json"), out = tmp("cand.gguf");
  QuantizeModelOptions o = budget_options(cache);
  o.candidates = {"Q4_K", "q6_K", "IQ4_XS"};  // llama-quantize's spelling works too
  o.target_bytes = 1100000;
  quantize_model(test::shared(kSrc), out, o);
  auto f = io::GgufFile::open(out);
  for (const auto& t : f->tensors())
    if (t.ne.size() == 2)
      EXPECT_TRUE(t.dtype == DType::Q4_K || t.dtype == DType::Q6_K || t.dtype == DType::IQ4_XS) << t.name;
  EXPECT_LE(fs::file_size(out), 1100000u);
  for (const auto& p : {cache, out}) fs::remove(p);
}

TEST(KldProbe, ZeroForTheModelAndTheSameFromAnyBlock) {
  LOWBIT_NEED_SHARED(kSrc);
  LOWBIT_NEED_SHARED(kValid);
  auto file = load_model(test::shared(kSrc));
  budget::KldProbe probe(file, windows(3, 48));
  EXPECT_NEAR(probe.kld_from_start(), 0.0, 1e-9);
  EXPECT_NEAR(probe.kld_from_here(), 0.0, 1e-9);
  Model same(file, probe.len());
  EXPECT_NEAR(probe.kld_of(same), 0.0, 1e-9);
  // blk.1.ffn_down scaled by 0.9: the KLD from the embeddings equals the KLD from block 1's carried input.
  const TensorInfo& t = file->get("blk.1.ffn_down.weight");
  std::vector<float> w(static_cast<size_t>(t.numel()));
  std::memcpy(w.data(), t.data, t.nbytes);
  for (float& v : w) v *= 0.9f;
  TensorInfo s = t;
  s.data = reinterpret_cast<const std::byte*>(w.data());
  probe.model().replace_weight(s);
  const double from_start = probe.kld_from_start();
  EXPECT_GT(from_start, 1e-5);
  probe.model().replace_weight(t);
  probe.advance();  // block 0 runs with its own weights
  probe.model().replace_weight(s);
  EXPECT_NEAR(probe.kld_from_here(), from_start, 1e-6 * from_start + 1e-12);
  probe.model().replace_weight(t);
  EXPECT_NEAR(probe.kld_from_here(), 0.0, 1e-9);
}

TEST(ModelLogits, EndOfForward) {
  LOWBIT_NEED_SHARED(kSrc);
  auto file = load_model(test::shared(kSrc));
  Model m(file, 64);
  const std::vector<int32_t> tokens = {1, 40, 300, 7, 511, 2, 99, 100};
  const int64_t n = static_cast<int64_t>(tokens.size()), vocab = file->config.n_vocab;
  std::vector<float> want(static_cast<size_t>(n * vocab)), got(want.size());
  m.forward(tokens, 0, want.data(), true);
  std::vector<float> h(static_cast<size_t>(n * file->config.dim));
  m.embed(tokens, h.data());
  for (int l = 0; l < file->config.n_layers; ++l) m.forward_layer(l, h.data(), 1, static_cast<int>(n), {});
  m.logits(h.data(), n, got.data());
  for (size_t k = 0; k < want.size(); ++k) ASSERT_NEAR(got[k], want[k], 1e-3f * (1.0f + std::fabs(want[k]))) << k;
}

}  // namespace
}  // namespace lowbit::quant
