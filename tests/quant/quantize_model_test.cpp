// The model-level quantize pipeline: packed GGUF written atomically, loaded back through the normal loader,
// tensors equal to the algorithm's own output, quality ordered by bits, clear errors.
#include <gtest/gtest.h>

#include <cstdio>
#include <cstring>
#include <filesystem>
#include <map>

#include "calib/calib_data.h"
#include "core/checksum.h"
#include "formats/format.h"
#include "io/gguf.h"
#include "lowbit/error.h"
#include "lowbit/kld.h"
#include "lowbit/tokenizer.h"
#include "ops/ops.h"
#include "quant/quantize_model.h"
#include "test_util.h"

namespace lowbit::quant {
namespace {

namespace fs = std::filesystem;
const char* k656K = "models/TinyStories-656K-gguf/TinyStories-656K-f32.gguf";

std::string tmp(const std::string& name) {
  return (fs::temp_directory_path() / ("lowbit_q_" + std::to_string(::getpid()) + "_" + name)).string();
}

TEST(QuantizeModel, PackedTensorsEqualTheQuantizerOutput) {
  LOWBIT_REQUIRE_SHARED(k656K);
  const std::string src = test::shared(k656K), out = tmp("int4.gguf");
  QuantizeModelOptions o;
  o.format = "int4g32a";
  QuantizeReport rep = quantize_model(src, out, o);
  auto base = load_model(src);
  auto q = load_model(out);
  auto fmt = formats::make_format("int4g32a");
  auto rtn = make_quantizer("rtn");
  int packed = 0;
  for (const auto& t : base->tensors) {
    const TensorInfo& qt = q->get(t.name);
    ASSERT_EQ(qt.shape, t.shape) << t.name;
    if (t.name.rfind("blk.", 0) == 0 && t.shape.size() == 2) {
      ++packed;
      EXPECT_EQ(qt.packed, "int4g32a") << t.name;
      EXPECT_EQ(qt.stored_bytes, static_cast<uint64_t>(t.rows()) * formats::row_bytes(*fmt, t.cols()));
      QuantResult want = rtn->quantize(reinterpret_cast<const float*>(t.data), t.rows(), t.cols(), *fmt, nullptr);
      const float* got = reinterpret_cast<const float*>(qt.data);
      for (size_t k = 0; k < want.dequant.size(); ++k) ASSERT_EQ(got[k], want.dequant[k]) << t.name << " at " << k;
    } else if (t.shape.size() == 2) {
      EXPECT_EQ(qt.dtype, DType::F16) << t.name;  // kept matrices default to f16
    } else {
      EXPECT_EQ(qt.dtype, DType::F32) << t.name;  // norms stay f32
      EXPECT_EQ(0, std::memcmp(qt.data, t.data, t.nbytes));
    }
  }
  EXPECT_EQ(packed, 14);
  EXPECT_NEAR(rep.bits_per_weight, 8.0 * static_cast<double>(q->total_bytes()) / q->total_params(), 1e-9);
  auto g = io::GgufFile::open(out);
  EXPECT_EQ(g->get_string("lowbit.quantize.method"), "rtn");
  EXPECT_EQ(g->get_string("lowbit.quantize.format"), "int4g32a");
  EXPECT_TRUE(g->get_string("lowbit.version").has_value());
  {
    auto srcg = io::GgufFile::open(src);
    EXPECT_EQ(g->get_string("lowbit.quantize.source_fnv1a64"),
              hex64(fnv1a64(srcg->mapping()->data(), static_cast<size_t>(srcg->mapping()->size()))));
  }
  EXPECT_EQ(g->get_string("general.architecture"), "llama");
  fs::remove(out);
}

TEST(QuantizeModel, KldFallsWithBits) {
  LOWBIT_REQUIRE_SHARED(k656K);
  const std::string src = test::shared(k656K);
  auto base_file = load_model(src);
  auto tok = make_tokenizer(base_file->tokenizer);
  const auto tokens = tok->encode(test::read_file(test::shared("data/wikitext-2-raw/wiki.test.raw.656K-charset")).substr(0, 60000), true);
  Model base(base_file, 256);
  EvalOptions eo;
  eo.ctx = 256;
  eo.chunks = 6;
  double prev = 1e9;
  for (int bits : {3, 4, 8}) {
    QuantizeModelOptions o;
    o.format = "int" + std::to_string(bits) + "g32a";
    const std::string out = tmp("k" + std::to_string(bits) + ".gguf");
    quantize_model(src, out, o);
    Model qm(load_model(out), 256);
    EvalResult r = evaluate_pair(qm, base, tokens, tok->bos(), eo);
    EXPECT_LT(r.kld_mean, prev) << bits << " bits";
    EXPECT_GT(r.kld_mean, 0.0);
    prev = r.kld_mean;
    if (bits == 8) EXPECT_LT(r.kld_mean, 1e-3);
    fs::remove(out);
  }
}

TEST(QuantizeModel, CalibratedGptqBeatsRtn) {
  LOWBIT_REQUIRE_SHARED(k656K);
  LOWBIT_REQUIRE_SHARED("data/wikitext-2/valid.txt");
  const std::string src = test::shared(k656K);
  auto base_file = load_model(src);
  auto tok = make_tokenizer(base_file->tokenizer);
  calib::CalibOptions co;
  co.samples = 32;
  co.len = 128;
  co.bos = tok->bos();
  // Calibrate on validation text, evaluate on test text.
  const auto calib_tokens = tok->encode(test::read_file(test::shared("data/wikitext-2/valid.txt")).substr(0, 200000), true);
  const auto windows = calib::sample_windows(calib_tokens, co, "valid.txt");
  const auto eval_tokens =
      tok->encode(test::read_file(test::shared("data/wikitext-2-raw/wiki.test.raw.656K-charset")).substr(0, 80000), true);
  Model base(base_file, 256);
  EvalOptions eo;
  eo.ctx = 256;
  eo.chunks = 8;
  std::map<std::string, QuantizeReport> reps;
  std::map<std::string, double> kld;
  for (const std::string run : {"rtn", "gptq", "gptq4"}) {
    const std::string method = run.substr(0, run.size() - (run == "gptq4" ? 1 : 0));
    QuantizeModelOptions o;
    o.method = method;
    o.format = run == "gptq4" ? "int4g32a" : "int3g32a";
    o.calib = windows;
    o.calib_source = "valid.txt";
    const std::string out = tmp(run + "_cal.gguf");
    reps[run] = quantize_model(src, out, o);
    auto g = io::GgufFile::open(out);
    EXPECT_EQ(g->get_int("lowbit.quantize.calib_samples"), 32);
    EXPECT_EQ(g->get_int("lowbit.quantize.calib_len"), 128);
    Model qm(load_model(out), 256);
    kld[run] = evaluate_pair(qm, base, eval_tokens, tok->bos(), eo).kld_mean;
    fs::remove(out);
  }
  EXPECT_LT(kld["gptq"], kld["rtn"]);
  // Regression pin: 4-bit GPTQ (int4g32a) on this calibration/eval split measured 0.033694 when written (+-5%).
  EXPECT_NEAR(kld["gptq4"], 0.033694, 0.0017) << "4-bit GPTQ KLD moved out of its band";
  EXPECT_LT(kld["gptq4"], kld["gptq"]);
  // On its own calibration inputs GPTQ's output error is below RTN's for every quantized linear.
  int compared = 0;
  for (size_t i = 0; i < reps["rtn"].tensors.size(); ++i) {
    const auto& r = reps["rtn"].tensors[i];
    const auto& g = reps["gptq"].tensors[i];
    if (r.rel_output_error < 0) continue;
    ++compared;
    EXPECT_LT(g.rel_output_error, r.rel_output_error) << r.name;
  }
  EXPECT_EQ(compared, 14);
}

TEST(QuantizeModel, OddWidthTensorIsQuantizedWithAPartialBlock) {
  LOWBIT_REQUIRE_SHARED("models/stories260K/stories260K.gguf");
  const std::string src = test::shared("models/stories260K/stories260K.gguf");
  const std::string out = tmp("s260.gguf");
  QuantizeModelOptions o;
  o.format = "int4g32s";
  QuantizeReport rep = quantize_model(src, out, o);
  auto q = load_model(out);
  auto base = load_model(src);
  bool saw = false;
  for (size_t i = 0; i < rep.tensors.size(); ++i) {
    const auto& t = rep.tensors[i];
    if (t.name != "blk.0.ffn_down.weight") continue;  // 172 input columns: 5 blocks of 32 and one of 12
    saw = true;
    EXPECT_EQ(t.stored, "int4g32s");
    EXPECT_NEAR(t.bits_per_weight, 8.0 * 6 * 18 / 172, 1e-9);
    const TensorInfo* qt = q->find(t.name);
    const TensorInfo* bt = base->find(t.name);
    ASSERT_TRUE(qt && bt);
    EXPECT_EQ(qt->packed, "int4g32s");
    ASSERT_EQ(qt->shape, bt->shape);
    // The decoded tensor is the RTN result of the f32 source, tail block included.
    std::vector<float> W(static_cast<size_t>(bt->numel()));
    std::memcpy(W.data(), bt->data, W.size() * sizeof(float));
    auto fmt = formats::make_format("int4g32s");
    const QuantResult r = make_quantizer("rtn")->quantize(W.data(), bt->rows(), bt->cols(), *fmt, nullptr);
    ASSERT_EQ(0, std::memcmp(r.dequant.data(), qt->data, W.size() * sizeof(float)));
    EXPECT_GT(t.rel_error, 0.0);
    EXPECT_LT(t.rel_error, 0.2);
  }
  EXPECT_TRUE(saw);
  fs::remove(out);
}

TEST(QuantizeModel, ClearErrorsAndNoPartialOutput) {
  LOWBIT_REQUIRE_SHARED(k656K);
  const std::string src = test::shared(k656K);
  QuantizeModelOptions o;
  const std::string bad_dir_out = "/nonexistent_dir_lowbit/out.gguf";
  EXPECT_THROW(quantize_model(src, bad_dir_out, o), Error);
  EXPECT_FALSE(fs::exists(bad_dir_out));
  o.method = "gptq";
  const std::string out = tmp("gptq.gguf");
  try {
    quantize_model(src, out, o);
    FAIL() << "gptq without calibration accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("calibration"), std::string::npos) << e.what();
  }
  EXPECT_FALSE(fs::exists(out));
  o.method = "rtn";
  o.format = "int9g32a";
  EXPECT_THROW(quantize_model(src, out, o), Error);
  EXPECT_FALSE(fs::exists(out));
  // A quantized model is not a valid source.
  o.format = "int4g32a";
  quantize_model(src, out, o);
  EXPECT_THROW(quantize_model(out, tmp("again.gguf"), o), Error);
  fs::remove(out);
}

}  // namespace
}  // namespace lowbit::quant
