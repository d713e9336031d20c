// `quantize --imatrix` (QuantizeModelOptions::imatrix) against llama-quantize itself: every file llama-quantize
// wrote from synth256 with an importance matrix (../shared/reference/imatrix: --pure single types, the mixtures,
// and the 2026 GGUF imatrix's files) and the mixtures it wrote without one, compared tensor by tensor (name, type,
// bytes). These are the acceptance tests of llama-quantize parity: they fail, not skip, when ../shared is missing.
// Then what surrounds it: a matrix without an entry is quantized without importance, an imatrix of another model
// is one error before any work, and the combinations that make no sense are refused.
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <string>

#include "io/gguf.h"
#include "io/imatrix.h"
#include "lowbit/error.h"
#include "lowbit/model.h"
#include "lowbit/tokenizer.h"
#include "calib/calib_data.h"
#include "quant/quantize_model.h"
#include "test_util.h"
#include "quantize_error.h"

namespace lowbit::quant {
namespace {

namespace fs = std::filesystem;
const char* kSrc = "reference/gguf/synth256-F32.gguf";
const char* kLegacy = "reference/imatrix/synth256.imatrix";
const char* kGguf = "reference/imatrix/synth256.imatrix.gguf";

std::string tmp(const std::string& name) {
  return (fs::temp_directory_path() / ("lowbit_imq_" + std::to_string(::getpid()) + "_" + name)).string();
}

// Tensor by tensor, by name: "" when both files hold the same tensors with the same types, shapes and bytes, else
// one line per difference (which tensor, which types, how many bytes and from where).
std::string tensor_differences(const std::string& mine_path, const std::string& ref_path) {
  auto mine = io::GgufFile::open(mine_path);
  auto ref = io::GgufFile::open(ref_path);
  std::map<std::string, const io::GgufTensor*> theirs;
  for (const auto& t : ref->tensors()) theirs[t.name] = &t;
  std::ostringstream d;
  for (const auto& t : mine->tensors()) {
    auto it = theirs.find(t.name);
    if (it == theirs.end()) {
      d << "  " << t.name << ": not in the reference\n";
      continue;
    }
    const io::GgufTensor& r = *it->second;
    theirs.erase(it);
    if (t.dtype != r.dtype || t.ne != r.ne) {
      d << "  " << t.name << ": " << dtype_name(t.dtype) << ", llama-quantize " << dtype_name(r.dtype)
        << (t.ne != r.ne ? " (other shape)" : "") << "\n";
      continue;
    }
    const auto* a = reinterpret_cast<const uint8_t*>(mine->tensor_data(t));
    const auto* b = reinterpret_cast<const uint8_t*>(ref->tensor_data(r));
    uint64_t n = 0, first = 0;
    for (uint64_t k = 0; k < t.nbytes; ++k)
      if (a[k] != b[k] && n++ == 0) first = k;
    if (n) d << "  " << t.name << " (" << dtype_name(t.dtype) << "): " << n << " of " << t.nbytes
             << " bytes differ, first at byte " << first << "\n";
  }
  for (const auto& [name, t] : theirs) d << "  " << name << ": missing\n";
  return d.str();
}

struct Case {
  const char* format;  // lowbit --format
  const char* ref;     // reference file, relative to ../shared
  const char* imatrix; // nullptr: none
  bool pure;
};
void PrintTo(const Case& c, std::ostream* os) { *os << c.ref; }

// quantize --method rtn [--pure] --format F [--imatrix I], as the CLI sets it up (presets and --pure clear keep).
QuantizeReport quantize_case(const Case& c, const std::string& out) {
  QuantizeModelOptions o;
  o.method = "rtn";
  o.format = c.format;
  o.pure = c.pure;
  o.keep.clear();
  if (c.imatrix) o.imatrix = test::shared(c.imatrix);
  return quantize_model(test::shared(kSrc), out, o);
}

class LlamaQuantizeParity : public ::testing::TestWithParam<Case> {};

TEST_P(LlamaQuantizeParity, ByteIdenticalTensors) {
  const Case& c = GetParam();
  LOWBIT_NEED_SHARED(kSrc);
  LOWBIT_NEED_SHARED(c.ref);
  if (c.imatrix) LOWBIT_NEED_SHARED(c.imatrix);
  const std::string out = tmp(fs::path(c.ref).filename().string());
  const QuantizeReport rep = quantize_case(c, out);
  const std::string diff = tensor_differences(out, test::shared(c.ref));
  EXPECT_EQ(diff, "") << c.ref << ": tensors that differ from llama-quantize's:\n" << diff;
  auto mine = io::GgufFile::open(out);
  auto ref = io::GgufFile::open(test::shared(c.ref));
  if (c.imatrix) {
    ASSERT_TRUE(rep.imatrix.has_value());
    EXPECT_EQ(rep.imatrix->entries, 14u);
    EXPECT_EQ(rep.imatrix->used, 14u);  // every linear of the blocks (output.weight has no entry)
    // llama-quantize's own record of the imatrix, the same values (the file path aside; the counts are i32 as the
    // 2025 llama-quantize writes them, u32 in the 2026 one).
    for (const char* key : {"quantize.imatrix.dataset", "quantize.imatrix.entries_count", "quantize.imatrix.chunks_count"}) {
      const io::GgufValue* r = ref->find(key);
      const io::GgufValue* m = mine->find(key);
      ASSERT_TRUE(r && m) << key;
      EXPECT_EQ(m->to_string(), r->to_string()) << key;
    }
  } else {
    EXPECT_FALSE(rep.imatrix.has_value());
    EXPECT_EQ(mine->find("quantize.imatrix.file"), nullptr);
  }
  if (!c.pure) EXPECT_EQ(mine->get_int("general.file_type"), ref->get_int("general.file_type")) << "general.file_type";
  fs::remove(out);
}

// general.file_type of a --pure single type is the mixture llama-quantize was asked for (Q3_K_M for "Q3_K", ...),
// which a lowbit --format type cannot know: only the mixtures compare it.
const Case kPure[] = {
    {"q4_0", "reference/imatrix/synth256-imat-pure-Q4_0.gguf", kLegacy, true},
    {"q5_0", "reference/imatrix/synth256-imat-pure-Q5_0.gguf", kLegacy, true},
    {"q8_0", "reference/imatrix/synth256-imat-pure-Q8_0.gguf", kLegacy, true},
    {"q2_K", "reference/imatrix/synth256-imat-pure-Q2_K.gguf", kLegacy, true},
    {"q3_K", "reference/imatrix/synth256-imat-pure-Q3_K.gguf", kLegacy, true},
    {"q4_K", "reference/imatrix/synth256-imat-pure-Q4_K.gguf", kLegacy, true},
    {"q5_K", "reference/imatrix/synth256-imat-pure-Q5_K.gguf", kLegacy, true},
    {"q6_K", "reference/imatrix/synth256-imat-pure-Q6_K.gguf", kLegacy, true},
    {"iq4_nl", "reference/imatrix/synth256-imat-pure-IQ4_NL.gguf", kLegacy, true},
    {"iq4_xs", "reference/imatrix/synth256-imat-pure-IQ4_XS.gguf", kLegacy, true},
};
const Case kMixtures[] = {
    {"gguf:Q4_0", "reference/imatrix/synth256-imat-Q4_0.gguf", kLegacy, false},
    {"gguf:Q2_K", "reference/imatrix/synth256-imat-Q2_K.gguf", kLegacy, false},
    {"gguf:Q3_K_M", "reference/imatrix/synth256-imat-Q3_K_M.gguf", kLegacy, false},
    {"gguf:Q4_K_M", "reference/imatrix/synth256-imat-Q4_K_M.gguf", kLegacy, false},
    {"gguf:Q5_K_M", "reference/imatrix/synth256-imat-Q5_K_M.gguf", kLegacy, false},
    {"gguf:Q6_K", "reference/imatrix/synth256-imat-Q6_K.gguf", kLegacy, false},
    {"gguf:IQ4_XS", "reference/imatrix/synth256-imat-IQ4_XS.gguf", kLegacy, false},
    {"gguf:Q4_K_M", "reference/imatrix/synth256-imat26-Q4_K_M.gguf", kGguf, false},
    {"gguf:IQ4_XS", "reference/imatrix/synth256-imat26-IQ4_XS.gguf", kGguf, false},
    {"gguf:Q2_K", "reference/imatrix/synth256-imat26-Q2_K.gguf", kGguf, false},
    {"gguf:Q3_K_M", "reference/imatrix/synth256-imat26-Q3_K_M.gguf", kGguf, false},
    {"gguf:IQ2_XXS", "reference/imatrix/synth256-imat-IQ2_XXS.gguf", kLegacy, false},
    {"gguf:IQ2_XS", "reference/imatrix/synth256-imat-IQ2_XS.gguf", kLegacy, false},
    {"gguf:IQ2_XS", "reference/imatrix/synth256-imat26-IQ2_XS.gguf", kGguf, false},
    {"gguf:IQ2_S", "reference/imatrix/synth256-imat-IQ2_S.gguf", kLegacy, false},
    {"gguf:IQ2_M", "reference/imatrix/synth256-imat-IQ2_M.gguf", kLegacy, false},
    {"gguf:IQ1_S", "reference/imatrix/synth256-imat-IQ1_S.gguf", kLegacy, false},
    {"gguf:IQ1_M", "reference/imatrix/synth256-imat-IQ1_M.gguf", kLegacy, false},
    {"gguf:IQ3_XXS", "reference/imatrix/synth256-imat-IQ3_XXS.gguf", kLegacy, false},
    {"gguf:IQ3_S", "reference/imatrix/synth256-imat-IQ3_S.gguf", kLegacy, false},
    {"gguf:Q2_K_S", "reference/imatrix/synth256-imat-Q2_K_S.gguf", kLegacy, false},
};
// llama.cpp's mixture rules alone (no imatrix): the per-tensor types and the plain quantizers.
const Case kNoImatrix[] = {
    {"gguf:Q4_0", "reference/imatrix/synth256-mix-Q4_0.gguf", nullptr, false},
    {"gguf:Q2_K", "reference/imatrix/synth256-mix-Q2_K.gguf", nullptr, false},
    {"gguf:Q3_K_M", "reference/imatrix/synth256-mix-Q3_K_M.gguf", nullptr, false},
    {"gguf:Q4_K_M", "reference/imatrix/synth256-mix-Q4_K_M.gguf", nullptr, false},
    {"gguf:Q5_K_M", "reference/imatrix/synth256-mix-Q5_K_M.gguf", nullptr, false},
    {"gguf:Q6_K", "reference/imatrix/synth256-mix-Q6_K.gguf", nullptr, false},
    {"gguf:IQ4_XS", "reference/imatrix/synth256-mix-IQ4_XS.gguf", nullptr, false},
};
std::string case_name(const ::testing::TestParamInfo<Case>& i) {
  std::string s = fs::path(i.param.ref).stem().string().substr(std::string("synth256-").size());
  for (char& ch : s)
    if (ch == '-') ch = '_';
  return s;
}
INSTANTIATE_TEST_SUITE_P(Pure, LlamaQuantizeParity, ::testing::ValuesIn(kPure), case_name);
INSTANTIATE_TEST_SUITE_P(Mixture, LlamaQuantizeParity, ::testing::ValuesIn(kMixtures), case_name);
INSTANTIATE_TEST_SUITE_P(NoImatrix, LlamaQuantizeParity, ::testing::ValuesIn(kNoImatrix), case_name);

// The comparison sees what differs: the plain quantizer's file against llama-quantize's --imatrix one differs in
// exactly the matrices the imatrix has entries for (token_embd and output have none: the same bytes).
TEST(Imatrix, ComparisonNamesTheTensorsThatDiffer) {
  const char* ref = "reference/imatrix/synth256-imat-pure-Q4_K.gguf";
  LOWBIT_NEED_SHARED(kSrc);
  LOWBIT_NEED_SHARED(ref);
  const std::string out = tmp("plain-q4k.gguf");
  quantize_case({"q4_K", ref, nullptr, true}, out);
  const std::string diff = tensor_differences(out, test::shared(ref));
  EXPECT_EQ(std::count(diff.begin(), diff.end(), '\n'), 14) << diff;
  EXPECT_NE(diff.find("blk.0.attn_q.weight (q4_K): "), std::string::npos) << diff;
  EXPECT_EQ(diff.find("  token_embd"), std::string::npos) << diff;
  EXPECT_EQ(diff.find("  output.weight"), std::string::npos) << diff;
  fs::remove(out);
}

// A legacy imatrix file from (name, ncall, values) entries.
std::string write_legacy(const std::string& path, const std::map<std::string, std::vector<float>>& entries) {
  std::ofstream f(path, std::ios::binary);
  auto i32 = [&](int32_t v) { f.write(reinterpret_cast<const char*>(&v), 4); };
  i32(static_cast<int32_t>(entries.size()));
  for (const auto& [name, v] : entries) {
    i32(static_cast<int32_t>(name.size()));
    f.write(name.data(), static_cast<std::streamsize>(name.size()));
    i32(1);
    i32(static_cast<int32_t>(v.size()));
    f.write(reinterpret_cast<const char*>(v.data()), static_cast<std::streamsize>(v.size() * 4));
  }
  return path;
}

// A matrix the imatrix has no entry for is quantized without importance (llama-quantize: "did not find weights"):
// with only blk.0.attn_q's entry, blk.0.attn_q is the imatrix file's bytes and blk.1.attn_q the plain file's.
TEST(Imatrix, MatrixWithoutEntryGetsThePlainQuantizer) {
  const char* plain = "reference/gguf/synth256-Q4_K_S.gguf";  // llama-quantize --pure Q4_K_S, no imatrix
  const char* weighted = "reference/imatrix/synth256-imat-pure-Q4_K.gguf";
  LOWBIT_NEED_SHARED(kSrc);
  LOWBIT_NEED_SHARED(kLegacy);
  LOWBIT_NEED_SHARED(plain);
  LOWBIT_NEED_SHARED(weighted);
  const io::Imatrix full = io::load_imatrix(test::shared(kLegacy));
  const std::string one = write_legacy(tmp("one.imatrix"), {{"blk.0.attn_q.weight", full.entries.at("blk.0.attn_q.weight")}});
  QuantizeModelOptions o;
  o.format = "q4_K";
  o.keep.clear();
  o.imatrix = one;
  const std::string out = tmp("one.gguf");
  const QuantizeReport rep = quantize_model(test::shared(kSrc), out, o);
  ASSERT_TRUE(rep.imatrix.has_value());
  EXPECT_EQ(rep.imatrix->used, 1u);
  auto mine = io::GgufFile::open(out), p = io::GgufFile::open(test::shared(plain)),
       w = io::GgufFile::open(test::shared(weighted));
  auto bytes = [](const io::GgufFile& f, const std::string& name) {
    for (const auto& t : f.tensors())
      if (t.name == name) return std::string(reinterpret_cast<const char*>(f.tensor_data(t)), t.nbytes);
    ADD_FAILURE() << name << " missing";
    return std::string();
  };
  EXPECT_TRUE(bytes(*mine, "blk.0.attn_q.weight") == bytes(*w, "blk.0.attn_q.weight"));
  EXPECT_TRUE(bytes(*mine, "blk.1.attn_q.weight") == bytes(*p, "blk.1.attn_q.weight"));
  EXPECT_FALSE(bytes(*mine, "blk.0.attn_q.weight") == bytes(*p, "blk.0.attn_q.weight"));  // the entry did something
  for (const auto& t : rep.tensors) EXPECT_EQ(t.imatrix, t.name == "blk.0.attn_q.weight") << t.name;
  fs::remove(out);
  fs::remove(one);
}

std::string error_of(const QuantizeModelOptions& o, const std::string& out) {
  return test::quantize_error(test::shared(kSrc), o, out);
}

TEST(Imatrix, AnotherModelsImatrixIsOneErrorBeforeAnyWork) {
  LOWBIT_NEED_SHARED(kSrc);
  QuantizeModelOptions o;
  o.format = "gguf:Q4_K_M";
  o.keep.clear();
  const std::string out = tmp("other.gguf");
  // An entry of another width (a 128-wide model's attn_q).
  o.imatrix = write_legacy(tmp("narrow.imatrix"), {{"blk.0.attn_q.weight", std::vector<float>(128, 1.0f)},
                                                   {"blk.0.attn_k.weight", std::vector<float>(256, 1.0f)}});
  std::string m = error_of(o, out);
  EXPECT_NE(m.find("narrow.imatrix"), std::string::npos) << m;
  EXPECT_NE(m.find("entry 'blk.0.attn_q.weight'"), std::string::npos) << m;
  EXPECT_NE(m.find("256 input columns"), std::string::npos) << m;
  // Names of another architecture: nothing matches.
  o.imatrix = write_legacy(tmp("hf.imatrix"), {{"model.layers.0.self_attn.q_proj.weight", std::vector<float>(256, 1.0f)}});
  m = error_of(o, out);
  EXPECT_NE(m.find("hf.imatrix"), std::string::npos) << m;
  EXPECT_NE(m.find("none of its 1 entries"), std::string::npos) << m;
  // token_embd of the wrong size is passed over (llama-quantize does), the rest used.
  o.imatrix = write_legacy(tmp("embd.imatrix"), {{"token_embd.weight", std::vector<float>(7, 1.0f)},
                                                 {"blk.1.ffn_down.weight", std::vector<float>(768, 1.0f)}});
  const QuantizeReport rep = quantize_model(test::shared(kSrc), out, o);
  EXPECT_EQ(rep.imatrix->used, 1u);
  for (const auto& t : rep.tensors)
    if (t.name == "token_embd.weight") EXPECT_NE(t.note.find("ignored"), std::string::npos) << t.note;
  fs::remove(out);
  // A damaged file: its own error, naming it.
  std::ofstream(tmp("bad.imatrix"), std::ios::binary) << "xx";
  o.imatrix = tmp("bad.imatrix");
  m = error_of(o, out);
  EXPECT_NE(m.find("bad.imatrix"), std::string::npos) << m;
  for (const char* f : {"narrow.imatrix", "hf.imatrix", "embd.imatrix", "bad.imatrix", "other.gguf"}) fs::remove(tmp(f));
}

TEST(Imatrix, CombinationsThatMakeNoSenseAreRefused) {
  LOWBIT_NEED_SHARED(kSrc);
  LOWBIT_NEED_SHARED(kLegacy);
  QuantizeModelOptions o;
  o.format = "q4_K";
  o.imatrix = test::shared(kLegacy);
  o.calib = {std::vector<int32_t>(16, 5), std::vector<int32_t>(16, 7)};
  o.calib_source = "ids";
  const std::string out = tmp("combo.gguf");
  o.qopts.use_importance = true;
  std::string m = error_of(o, out);
  EXPECT_NE(m.find("--importance"), std::string::npos) << m;
  o.qopts.use_importance = false;
  for (const char* method : {"awq+gptq", "rotate+rtn"}) {
    o.method = method;
    m = error_of(o, out);
    EXPECT_NE(m.find("--imatrix"), std::string::npos) << m;
  }
  // GPTQ still needs its Hessians from calibration text; rtn does not.
  o.calib.clear();
  o.method = "gptq";
  m = error_of(o, out);
  EXPECT_NE(m.find("--calib"), std::string::npos) << m;
}

// The 2-bit lattice mixtures without importance data: one error naming the option, no file (llama-quantize refuses too).
TEST(Imatrix, Iq2MixturesNeedImportance) {
  LOWBIT_NEED_SHARED(kSrc);
  for (const char* preset : {"gguf:IQ2_XXS", "gguf:iq2_xs", "gguf:IQ2_M", "gguf:IQ1_S"}) {
    QuantizeModelOptions o;
    o.method = "rtn";
    o.format = preset;
    const std::string out = tmp("iq2_noimat.gguf");
    const std::string m = error_of(o, out);
    EXPECT_NE(m.find("needs importance data"), std::string::npos) << m;
    EXPECT_FALSE(fs::exists(out));
  }
}

// --imatrix with GPTQ: the fits inside the pass take the file's importance, H comes from the calibration windows;
// the result differs from GPTQ without it and stays close to the source.
TEST(Imatrix, GptqFitsTakeTheImatrix) {
  LOWBIT_NEED_SHARED(kSrc);
  LOWBIT_NEED_SHARED(kLegacy);
  LOWBIT_NEED_SHARED("data/wikitext-2/valid.txt");
  const std::string src = test::shared(kSrc);
  auto tok = make_tokenizer(load_model(src)->tokenizer);
  calib::CalibOptions co;
  co.samples = 8;
  co.len = 64;
  co.bos = tok->bos();
  QuantizeModelOptions o;
  o.format = "q3_K";
  o.method = "gptq";
  o.calib = calib::sample_windows(
      tok->encode(test::read_file(test::shared("data/wikitext-2/valid.txt")).substr(0, 20000), true), co, "valid.txt");
  o.calib_source = "valid.txt";
  const std::string a = tmp("gptq.gguf"), b = tmp("gptq-imat.gguf");
  quantize_model(src, a, o);
  o.imatrix = test::shared(kLegacy);
  const QuantizeReport rep = quantize_model(src, b, o);
  ASSERT_TRUE(rep.imatrix.has_value());
  EXPECT_EQ(rep.imatrix->used, 14u);
  EXPECT_EQ(rep.method, "gptq");
  auto fa = io::GgufFile::open(a), fb = io::GgufFile::open(b);
  int differ = 0;
  for (size_t k = 0; k < fa->tensors().size(); ++k) {
    const auto& ta = fa->tensors()[k];
    const auto& tb = fb->tensors()[k];
    ASSERT_EQ(ta.name, tb.name);
    if (ta.name.rfind("blk.", 0) == 0 && ta.ne.size() == 2)
      differ += std::memcmp(fa->tensor_data(ta), fb->tensor_data(tb), ta.nbytes) != 0;
  }
  EXPECT_EQ(differ, 14);
  for (const auto& t : rep.tensors)
    if (t.imatrix) EXPECT_LT(t.rel_error, 0.35) << t.name;
  fs::remove(a);
  fs::remove(b);
}

}  // namespace
}  // namespace lowbit::quant
