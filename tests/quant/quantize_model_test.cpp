// The model-level quantize pipeline: packed GGUF written atomically, loaded back through the normal loader,
// tensors equal to the algorithm's own output, quality ordered by bits, clear errors.
#include <gtest/gtest.h>

#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <random>

#include "calib/calib_data.h"
#include "core/checksum.h"
#include "formats/format.h"
#include "io/gguf.h"
#include "io/synth.h"
#include "lowbit/error.h"
#include "lowbit/kld.h"
#include "lowbit/tokenizer.h"
#include "ops/ops.h"
#include "quant/quantize_model.h"
#include "io/hf_testing.h"
#include "test_util.h"

namespace lowbit::quant {
namespace {

namespace fs = std::filesystem;
const char* k656K = "models/TinyStories-656K-gguf/TinyStories-656K-f32.gguf";

std::string tmp(const std::string& name) {
  return (fs::temp_directory_path() / ("lowbit_q_" + std::to_string(::getpid()) + "_" + name)).string();
}

// A packed tensor decoded to f32 through the ops layer (the path the model's prefill takes).
std::vector<float> decode_all(const TensorInfo& t) {
  const ops::WeightView v = ops::view_of(t);
  std::vector<float> out(static_cast<size_t>(v.rows * v.cols));
  for (int64_t r = 0; r < v.rows; ++r) ops::get_row(v, r, out.data() + r * v.cols);
  return out;
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
      ASSERT_EQ(qt.nbytes, want.data.size());
      EXPECT_EQ(0, std::memcmp(qt.data, want.data.data(), qt.nbytes)) << t.name;  // the stored bytes, as encoded
      const std::vector<float> got = decode_all(qt);
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

// The same model from a Hugging Face directory (half-split Q/K rows, tokenizer.json) or a llama2.c checkpoint
// quantizes to the same tensors as from its GGUF: the writer re-pairs Q/K rows for GGUF llama's interleaved RoPE and
// carries the config and tokenizer over, so the outputs run identically.
void expect_same_quantized_model(const std::string& a_src, const std::string& b_src, const std::string& text) {
  QuantizeModelOptions o;
  o.format = "int4g32a";
  const std::string a_out = tmp("same_a.gguf"), b_out = tmp("same_b.gguf");
  quantize_model(a_src, a_out, o);
  quantize_model(b_src, b_out, o);
  auto a = load_model(a_out);
  auto b = load_model(b_out);
  EXPECT_EQ(a->config.dim, b->config.dim);
  EXPECT_EQ(a->config.n_layers, b->config.n_layers);
  EXPECT_EQ(a->config.n_heads, b->config.n_heads);
  EXPECT_EQ(a->config.n_kv_heads, b->config.n_kv_heads);
  EXPECT_EQ(a->config.ffn_dim, b->config.ffn_dim);
  EXPECT_EQ(a->config.rope_style, b->config.rope_style);
  EXPECT_FLOAT_EQ(a->config.norm_eps, b->config.norm_eps);
  EXPECT_FLOAT_EQ(a->config.rope_theta, b->config.rope_theta);
  // llama2.c's shared classifier is a tied head; its GGUF conversion stores a copy as output.weight.
  ASSERT_EQ(a->tensors.size() + (a->config.tied_embeddings && !b->config.tied_embeddings ? 1 : 0), b->tensors.size());
  for (const auto& tb_out : b->tensors) {
    const std::string name =
        tb_out.name == "output.weight" && a->config.tied_embeddings ? "token_embd.weight" : tb_out.name;
    const TensorInfo& ta = a->get(name);
    const TensorInfo& tb = tb_out;
    EXPECT_EQ(ta.shape, tb.shape) << ta.name;
    EXPECT_EQ(ta.packed, tb.packed) << ta.name;
    ASSERT_EQ(ta.nbytes, tb.nbytes) << ta.name;
    EXPECT_EQ(0, std::memcmp(ta.data, tb.data, ta.nbytes)) << ta.name << " differs";
  }
  auto ta = make_tokenizer(a->tokenizer);
  auto tb = make_tokenizer(b->tokenizer);
  EXPECT_EQ(ta->encode(text, true), tb->encode(text, true));
  EXPECT_EQ(ta->bos(), tb->bos());
  // Both run: same logits for the same tokens.
  Model ma(a, 64), mb(b, 64);
  const auto ids = ta->encode(text, true);
  std::vector<float> la(static_cast<size_t>(a->config.n_vocab)), lb(la.size());
  for (size_t i = 0; i < std::min<size_t>(ids.size(), 16); ++i) {
    ma.forward(std::span<const int32_t>(&ids[i], 1), static_cast<int>(i), la.data(), false);
    mb.forward(std::span<const int32_t>(&ids[i], 1), static_cast<int>(i), lb.data(), false);
  }
  for (size_t k = 0; k < la.size(); ++k) ASSERT_NEAR(la[k], lb[k], 1e-4 * (1 + std::abs(lb[k]))) << k;
  fs::remove(a_out);
  fs::remove(b_out);
}

TEST(QuantizeModel, HfDirectoryQuantizesLikeItsGguf) {
  LOWBIT_REQUIRE_SHARED(k656K);
  LOWBIT_REQUIRE_SHARED("models/TinyStories-656K/model.safetensors");
  expect_same_quantized_model(test::shared("models/TinyStories-656K"), test::shared(k656K),
                              "Once upon a time, there was a little dog named Max.");
  // The embedded tokenizer.json is what the output's tokenizer runs on.
  const std::string out = tmp("hf.gguf");
  QuantizeModelOptions o;
  quantize_model(test::shared("models/TinyStories-656K"), out, o);
  auto g = io::GgufFile::open(out);
  EXPECT_EQ(g->get_string("tokenizer.huggingface.json"),
            test::read_file(test::shared("models/TinyStories-656K/tokenizer.json")));
  EXPECT_EQ(load_model(out)->tokenizer.model, "hf-json");
  fs::remove(out);
}

// A crafted HF model with GQA, Q/K biases and llama3 rope scaling, kept unquantized in f32: the written GGUF (Q/K
// rows and biases re-paired, scaling as rope_freqs.weight) gives the source's logits.
TEST(QuantizeModel, HfSourceWithLlama3ScalingAndBiasesKeepsItsLogits) {
  const fs::path dir = tmp("hfdir");
  fs::create_directories(dir);
  testing::SmallHf hf;
  hf.biases = true;
  hf.config["rope_scaling"] = {{"rope_type", "llama3"}, {"factor", 8.0}, {"low_freq_factor", 1.0},
                               {"high_freq_factor", 4.0}, {"original_max_position_embeddings", 32}};
  hf.config["rope_theta"] = 10000.0;
  hf.config["attention_bias"] = true;
  std::vector<testing::StTensor> ts = hf.tensors();  // patterned bytes are not sane floats: use small normals
  std::mt19937 rng(5);
  std::normal_distribution<float> nd(0.0f, 0.3f);
  for (auto& t : ts)
    for (size_t k = 0; k + 4 <= t.bytes.size(); k += 4) {
      const float v = t.name.find("norm") != std::string::npos ? 1.0f + nd(rng) : nd(rng);
      std::memcpy(t.bytes.data() + k, &v, 4);
    }
  testing::write_file((dir / "config.json").string(), hf.config.dump());
  testing::write_file((dir / "model.safetensors").string(), testing::make_safetensors(ts));
  const std::string out = tmp("hf_llama3.gguf");
  QuantizeModelOptions o;
  o.keep.push_back("blk");
  o.keep_dtype = DType::F32;
  quantize_model(dir.string(), out, o);
  auto src = load_model(dir.string());
  auto q = load_model(out);
  EXPECT_EQ(src->config.rope_style, RopeStyle::HalfSplit);
  EXPECT_EQ(q->config.rope_style, RopeStyle::Interleaved);
  EXPECT_EQ(q->config.rope_scaling.type, "freq_factors");
  for (const auto& t : src->tensors) {
    const TensorInfo& u = q->get(t.name);
    if (t.name.find("attn_q") != std::string::npos || t.name.find("attn_k") != std::string::npos) continue;
    EXPECT_EQ(0, std::memcmp(t.data, u.data, t.nbytes)) << t.name;
  }
  EXPECT_FLOAT_EQ(q->config.norm_eps, src->config.norm_eps);
  EXPECT_EQ(q->config.n_kv_heads, src->config.n_kv_heads);
  const auto fa = rope_inv_freq(src->config, *src), fb = rope_inv_freq(q->config, *q);
  ASSERT_EQ(fa.size(), fb.size());
  for (size_t i = 0; i < fa.size(); ++i) EXPECT_NEAR(fb[i], fa[i], 1e-6 * fa[i]) << i;
  Model ms(src, 16), mq(q, 16);
  const std::vector<int32_t> ids = {1, 7, 30, 3, 12, 39, 5, 22};
  std::vector<float> ls(static_cast<size_t>(src->config.n_vocab) * ids.size()), lq(ls.size());
  ms.forward(ids, 0, ls.data(), true);
  mq.forward(ids, 0, lq.data(), true);
  double max_abs = 0;
  for (float v : ls) max_abs = std::max(max_abs, static_cast<double>(std::abs(v)));
  for (size_t k = 0; k < ls.size(); ++k) ASSERT_NEAR(lq[k], ls[k], 1e-4 * (1 + max_abs)) << k;
  fs::remove_all(dir);
  fs::remove(out);
}

TEST(QuantizeModel, Llama2cCheckpointQuantizesLikeItsGguf) {
  LOWBIT_REQUIRE_SHARED("models/stories260K/stories260K.gguf");
  expect_same_quantized_model(test::shared("models/stories260K/stories260K.bin"),
                              test::shared("models/stories260K/stories260K.gguf"), "Once upon a time, Lily saw a cat.");
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

// Calibration windows from the start of WikiText-2 validation text (never the text a test evaluates on).
std::vector<std::vector<int32_t>> valid_windows(const Tokenizer& tok, int samples, int len, size_t chars) {
  calib::CalibOptions co;
  co.samples = samples;
  co.len = len;
  co.bos = tok.bos();
  const auto tokens = tok.encode(test::read_file(test::shared("data/wikitext-2/valid.txt")).substr(0, chars), true);
  return calib::sample_windows(tokens, co, "valid.txt");
}

TEST(QuantizeModel, CalibratedGptqBeatsRtn) {
  LOWBIT_REQUIRE_SHARED(k656K);
  LOWBIT_REQUIRE_SHARED("data/wikitext-2/valid.txt");
  const std::string src = test::shared(k656K);
  auto base_file = load_model(src);
  auto tok = make_tokenizer(base_file->tokenizer);
  // Calibrate on validation text, evaluate on test text.
  const auto windows = valid_windows(*tok, 32, 128, 200000);
  const auto eval_tokens =
      tok->encode(test::read_file(test::shared("data/wikitext-2-raw/wiki.test.raw.656K-charset")).substr(0, 80000), true);
  Model base(base_file, 256);
  EvalOptions eo;
  eo.ctx = 256;
  eo.chunks = 8;
  std::map<std::string, double> kld;
  for (const std::string run : {"rtn", "gptq", "gptq4"}) {
    const std::string method = run.substr(0, run.size() - (run == "gptq4" ? 1 : 0));
    QuantizeModelOptions o;
    o.method = method;
    o.format = run == "gptq4" ? "int4g32a" : "int3g32a";
    o.calib = windows;
    o.calib_source = "valid.txt";
    const std::string out = tmp(run + "_cal.gguf");
    quantize_model(src, out, o);
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
}

// Every architecture beyond Llama (the tiny synth models, every feature on; 8 x 128 calibration tokens, KLD on 4 x 128):
// GPTQ and the default calibrated pipeline run through its graph (captures at each site, post-norms, soft-caps, windows) and beat RTN's KLD.
TEST(QuantizeModel, GptqAndTheDefaultPipelineRunOnEveryArchitecture) {
  LOWBIT_REQUIRE_SHARED("data/wikitext-2/valid.txt");
  LOWBIT_REQUIRE_SHARED("data/wikitext-2-raw/wiki.test.raw");
  for (const char* arch : {"qwen3-tiny", "gemma2-tiny", "gemma3-tiny", "phi3-tiny"}) {
    const std::string src = tmp(std::string(arch) + ".gguf");
    io::SynthOptions so;
    so.arch = arch;
    so.out = src;
    io::write_synth_model(so);
    auto base_file = load_model(src);
    auto tok = make_tokenizer(base_file->tokenizer);
    const auto windows = valid_windows(*tok, 8, 128, 40000);
    const auto eval_tokens = tok->encode(test::read_file(test::shared("data/wikitext-2-raw/wiki.test.raw")).substr(0, 30000), true);
    Model base(base_file, 128);
    EvalOptions eo;
    eo.ctx = 128;
    eo.chunks = 4;
    std::map<std::string, double> kld;
    // Phi-3 also runs AWQ (scales at its two norm-fed sites) and a rotation (R1 only: its value rows are fused).
    const bool phi3 = std::string(arch) == "phi3-tiny";
    for (const std::string method : phi3 ? std::vector<std::string>{"rtn", "gptq", "", "awq+gptq", "rotate+gptq"}
                                         : std::vector<std::string>{"rtn", "gptq", ""}) {
      QuantizeModelOptions o;
      o.method = method;
      o.format = "int3g64a";
      o.calib = windows;
      o.calib_source = "valid.txt";
      const std::string out = tmp(std::string(arch) + "_" + method + ".gguf");
      quantize_model(src, out, o);
      Model qm(load_model(out), 128);
      kld[method] = evaluate_pair(qm, base, eval_tokens, tok->bos(), eo).kld_mean;
      fs::remove(out);
    }
    std::printf("%s int3g64a KLD: rtn %.4f, gptq %.4f, default %.4f\n", arch, kld["rtn"], kld["gptq"], kld[""]);
    EXPECT_LT(kld["gptq"], 0.7 * kld["rtn"]) << arch;
    EXPECT_LT(kld[""], 0.7 * kld["rtn"]) << arch;
    if (phi3) {
      std::printf("%s int3g64a KLD: awq+gptq %.4f, rotate+gptq %.4f\n", arch, kld["awq+gptq"], kld["rotate+gptq"]);
      EXPECT_LT(kld["awq+gptq"], 0.7 * kld["rtn"]);
      EXPECT_LT(kld["rotate+gptq"], 0.7 * kld["rtn"]);
    }
    fs::remove(src);
  }
}

// GPTQ's output error ||WX - QX|| on the captured calibration inputs is below RTN's for every quantized linear of
// every fixture model (both calibrated on the same windows, each block fed by the already quantized blocks).
TEST(QuantizeModel, GptqBeatsRtnOnEveryLinearOfEveryFixture) {
  struct Fixture {
    const char* model;
    int linears;
  };
  int models = 0;
  for (const Fixture& f : {Fixture{"models/stories260K/stories260K.gguf", 5 * 7}, Fixture{k656K, 2 * 7}}) {
    if (!test::have_shared(f.model) || !test::have_shared("data/wikitext-2/valid.txt")) continue;
    ++models;
    const std::string src = test::shared(f.model);
    auto file = load_model(src);
    auto tok = make_tokenizer(file->tokenizer);
    const auto windows = valid_windows(*tok, 16, 128, 100000);
    for (const char* format : {"int3g32a", "int4g128s"}) {
      std::map<std::string, QuantizeReport> reps;
      for (const char* method : {"rtn", "gptq"}) {
        QuantizeModelOptions o;
        o.method = method;
        o.format = format;
        o.calib = windows;
        const std::string out = tmp(std::string(method) + "_every.gguf");
        reps[method] = quantize_model(src, out, o);
        fs::remove(out);
      }
      int compared = 0;
      for (size_t i = 0; i < reps["rtn"].tensors.size(); ++i) {
        const auto& r = reps["rtn"].tensors[i];
        const auto& g = reps["gptq"].tensors[i];
        if (r.rel_output_error < 0) continue;
        ++compared;
        EXPECT_LT(g.rel_output_error, r.rel_output_error) << f.model << " " << format << " " << r.name;
      }
      EXPECT_EQ(compared, f.linears) << f.model << " " << format;
    }
  }
  if (models == 0) GTEST_SKIP() << "../shared fixture models or data/wikitext-2/valid.txt not found";
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
    ASSERT_EQ(decode_all(*qt), r.dequant);
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

// A tensor the method cannot handle (a NaN weight): the error names the tensor, and no output is left behind,
// for RTN without calibration and for calibrated GPTQ.
TEST(QuantizeModel, NonFiniteWeightIsNamedAndLeavesNoOutput) {
  const std::string good = tmp("nan_src_good.gguf"), bad = tmp("nan_src.gguf"), out = tmp("nan_out.gguf");
  io::SynthOptions so;
  so.out = good;
  io::write_synth_model(so);
  auto good_model = load_model(good);
  const TensorInfo& t = good_model->get("blk.1.ffn_up.weight");
  ASSERT_EQ(t.dtype, DType::F32);
  std::string bytes = test::read_file(good);
  const float nan = std::numeric_limits<float>::quiet_NaN();
  std::memcpy(bytes.data() + t.file_offset + 4 * 37, &nan, 4);
  {
    std::ofstream f(bad, std::ios::binary);
    f.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  }
  for (const std::string method : {"rtn", "gptq"}) {
    QuantizeModelOptions o;
    o.method = method;
    o.format = "int4g32a";
    if (method == "gptq") o.calib = {{1, 50, 60, 70, 80, 90, 100, 110}, {1, 55, 65, 75, 85, 95, 105, 115}};
    try {
      quantize_model(bad, out, o);
      FAIL() << method << ": a NaN weight was accepted";
    } catch (const Error& e) {
      const std::string msg = e.what();
      EXPECT_NE(msg.find(bad), std::string::npos) << msg;
      EXPECT_NE(msg.find("blk.1.ffn_up.weight"), std::string::npos) << msg;
      EXPECT_NE(msg.find("non-finite"), std::string::npos) << msg;
    }
    EXPECT_FALSE(fs::exists(out)) << method;
  }
  for (const auto& e : fs::directory_iterator(fs::path(out).parent_path()))
    EXPECT_EQ(e.path().filename().string().find(fs::path(out).filename().string() + ".tmp"), std::string::npos)
        << "left behind: " << e.path();
  fs::remove(good);
  fs::remove(bad);
}

}  // namespace
}  // namespace lowbit::quant
