// A GGUF quantized from a Hugging Face directory carries llama.cpp's tokenizer keys (tokenizer.ggml.*, as its
// converter writes them) next to the embedded tokenizer.json, so llama.cpp loads it, while lowbit still tokenizes
// with the exact HF tokenizer: the SentencePiece-style TinyStories-656K against the GGUF llama.cpp's gguf library
// wrote from the same directory, and crafted byte-level (Llama-3 / Qwen2 / GPT-2 style) directories.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "io/gguf.h"
#include "io/hf_testing.h"
#include "lowbit/error.h"
#include "lowbit/model_file.h"
#include "lowbit/tokenizer.h"
#include "quant/quantize_model.h"
#include "test_util.h"
#include "tokenizer/hf_tokenizer.h"
#include "tokenizer/unicode.h"

namespace lowbit::quant {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

const char* kHf = "models/TinyStories-656K";
const char* kRef = "models/TinyStories-656K-gguf/TinyStories-656K-f32.gguf";

std::string tmp(const std::string& name) {
  return (fs::temp_directory_path() / ("lowbit_hftok_" + std::to_string(::getpid()) + "_" + name)).string();
}

// The value of `key` in `got` equals the one in `ref`: same GGUF type, same value (arrays compared whole).
void expect_same_key(const io::GgufFile& got, const io::GgufFile& ref, const std::string& key) {
  SCOPED_TRACE(key);
  const io::GgufValue* r = ref.find(key);
  const io::GgufValue* g = got.find(key);
  ASSERT_NE(r, nullptr);
  ASSERT_NE(g, nullptr) << "missing in the output";
  EXPECT_EQ(g->type_str(), r->type_str());
  if (r->type != io::GgufType::ARRAY) {
    EXPECT_EQ(g->to_string(), r->to_string());
    return;
  }
  if (r->elem_type == io::GgufType::STRING) {
    const auto *a = got.get_strings(key), *b = ref.get_strings(key);
    ASSERT_TRUE(a && b);
    ASSERT_EQ(a->size(), b->size());
    for (size_t i = 0; i < b->size(); ++i) ASSERT_EQ((*a)[i], (*b)[i]) << "element " << i;
  } else {
    auto a = got.get_numbers(key), b = ref.get_numbers(key);
    ASSERT_TRUE(a && b);
    ASSERT_EQ(a->size(), b->size());
    for (size_t i = 0; i < b->size(); ++i) ASSERT_EQ((*a)[i], (*b)[i]) << "element " << i;
  }
}

TEST(HfTokenizerKeys, TinyStoriesMatchesLlamaCppConversion) {
  LOWBIT_REQUIRE_SHARED(kRef);
  LOWBIT_REQUIRE_SHARED(std::string(kHf) + "/model.safetensors");
  const std::string out = tmp("ts.gguf");
  QuantizeModelOptions o;
  o.format = "int4g64a";
  quantize_model(test::shared(kHf), out, o);
  auto got = io::GgufFile::open(out);
  auto ref = io::GgufFile::open(test::shared(kRef));
  std::vector<std::string> keys;
  for (const auto& [key, value] : ref->kv())
    if (key.rfind("tokenizer.ggml.", 0) == 0) keys.push_back(key);
  // Everything llama.cpp's conversion of this directory has.
  const std::vector<std::string> expected = {
      "tokenizer.ggml.model",          "tokenizer.ggml.pre",          "tokenizer.ggml.tokens",
      "tokenizer.ggml.scores",         "tokenizer.ggml.token_type",   "tokenizer.ggml.bos_token_id",
      "tokenizer.ggml.eos_token_id",   "tokenizer.ggml.unknown_token_id", "tokenizer.ggml.add_bos_token",
      "tokenizer.ggml.add_eos_token",  "tokenizer.ggml.add_space_prefix"};
  EXPECT_EQ(keys.size(), expected.size());
  for (const auto& k : expected) EXPECT_NE(std::find(keys.begin(), keys.end(), k), keys.end()) << k;
  for (const auto& k : keys) expect_same_key(*got, *ref, k);
  EXPECT_EQ(got->get_string("tokenizer.ggml.model"), "llama");

  // lowbit runs the embedded tokenizer.json: the same ids as the directory's own tokenizer.
  EXPECT_EQ(got->get_string("tokenizer.huggingface.json"), test::read_file(test::shared(std::string(kHf) + "/tokenizer.json")));
  auto q = load_model(out);
  EXPECT_EQ(q->tokenizer.model, "hf-json");
  auto tq = make_tokenizer(q->tokenizer);
  auto th = make_tokenizer(load_model(test::shared(kHf))->tokenizer);
  std::string text =
      "Once upon a time, there was a little dog named Max. He liked to run in the park!\n\"Hello,\" said Lily. "
      "<|end_story|> 123 ünïcödé ~ @ #";
  if (test::have_shared("data/wikitext-2-raw/wiki.test.raw")) {
    std::string wiki = test::read_file(test::shared("data/wikitext-2-raw/wiki.test.raw")).substr(0, 20000);
    text += wiki.substr(0, wiki.rfind('\n') + 1);
  }
  for (bool special : {false, true}) {
    const auto a = tq->encode(text, true, special), b = th->encode(text, true, special);
    EXPECT_EQ(a, b) << "parse_special " << special;
    EXPECT_EQ(a.front(), 1);
  }
  fs::remove(out);
}

// ---------------------------------------------------------------------------------------------------------
// Crafted byte-level BPE directories.

const std::string G = "\xC4\xA0";  // "Ġ", the byte-level form of ' '

struct ByteLevelDir {
  json pre_tokenizer;
  bool ignore_merges = false;
  bool merges_as_pairs = true;
  int extra_rows = 0;  // config vocab_size beyond the tokenizer's tokens (converters pad with [PAD<id>])

  // Filled by write():
  std::vector<std::string> tokens;                     // by id
  std::vector<std::pair<std::string, std::string>> merges;
  int n_tokens = 0;

  void write(const std::string& dir) {
    tokens.clear();
    json vocab = json::object();
    auto add = [&](const std::string& t) {
      if (vocab.contains(t)) return;
      vocab[t] = static_cast<int>(tokens.size());
      tokens.push_back(t);
    };
    for (int b = 0; b < 256; ++b) add(tok::bytes_to_unicode(std::string(1, static_cast<char>(b))));
    merges = {{G, "t"},        {"h", "e"},      {G + "t", "he"}, {"i", "n"},      {G, "a"},         {"a", "n"},
              {"an", "d"},     {G + "a", "n"},  {G + "an", "d"}, {"T", "he"},     {"t", "he"},      {G + "the", "m"},
              {"e", "r"},      {"1", "2"},      {"12", "3"},     {G, "b"},        {G + "b", "and"}, {"'", "s"},
              {"\xC4\x8A", "\xC4\x8A"}, {G, G}, {"o", "n"}, {G, "o"},        {G + "o", "n"},   {"in", "g"},
              {G + "t", "h"}};
    for (const auto& [a, b] : merges) {
      EXPECT_TRUE(vocab.contains(a) && vocab.contains(b)) << a << " " << b;  // parts precede their merge
      add(a + b);
    }
    add(G + "zebra");  // reachable only whole (model.ignore_merges)
    json ms = json::array();
    for (const auto& [a, b] : merges) ms.push_back(merges_as_pairs ? json::array({a, b}) : json(a + " " + b));
    const int base = static_cast<int>(tokens.size());
    const std::vector<std::pair<std::string, bool>> added = {{"<|begin_of_text|>", true}, {"<|end_of_text|>", true},
                                                             {"<|reserved_0|>", false},   {"[custom]", false},
                                                             {"\xE2\x96\x81hi\xE2\x96\x81there", false}};
    json at = json::array();
    for (size_t i = 0; i < added.size(); ++i) {
      at.push_back({{"id", base + static_cast<int>(i)}, {"content", added[i].first}, {"special", added[i].second},
                    {"normalized", !added[i].second}, {"lstrip", false}, {"rstrip", false}, {"single_word", false}});
      tokens.push_back(added[i].first);
    }
    n_tokens = static_cast<int>(tokens.size());
    json j = {
        {"version", "1.0"},
        {"added_tokens", at},
        {"normalizer", nullptr},
        {"pre_tokenizer", pre_tokenizer},
        {"post_processor",
         {{"type", "TemplateProcessing"},
          {"single", json::array({{{"SpecialToken", {{"id", "<|begin_of_text|>"}, {"type_id", 0}}}},
                                  {{"Sequence", {{"id", "A"}, {"type_id", 0}}}}})},
          {"special_tokens",
           {{"<|begin_of_text|>", {{"id", "<|begin_of_text|>"}, {"ids", {base}}, {"tokens", {"<|begin_of_text|>"}}}}}}}},
        {"decoder", {{"type", "ByteLevel"}, {"add_prefix_space", true}, {"trim_offsets", true}, {"use_regex", true}}},
        {"model", {{"type", "BPE"}, {"dropout", nullptr}, {"unk_token", nullptr}, {"fuse_unk", false},
                   {"byte_fallback", false}, {"ignore_merges", ignore_merges}, {"vocab", vocab}, {"merges", ms}}},
    };
    fs::create_directories(dir);
    testing::write_file(dir + "/tokenizer.json", j.dump(1));
    testing::write_file(dir + "/tokenizer_config.json",
                        json({{"bos_token", "<|begin_of_text|>"}, {"eos_token", "<|end_of_text|>"}}).dump());
    testing::SmallHf hf;
    hf.config["vocab_size"] = n_tokens + extra_rows;
    hf.config["bos_token_id"] = base;
    hf.config["eos_token_id"] = base + 1;
    std::vector<testing::StTensor> ts = hf.tensors();  // patterned bytes are not sane floats: small values instead
    uint32_t x = 1;
    for (auto& t : ts)
      for (size_t k = 0; k + 4 <= t.bytes.size(); k += 4) {
        x = x * 1664525u + 1013904223u;
        const float v = static_cast<float>(static_cast<int32_t>(x >> 8) % 1000) / 2000.0f;
        std::memcpy(t.bytes.data() + k, &v, 4);
      }
    testing::write_file(dir + "/config.json", hf.config.dump());
    testing::write_file(dir + "/model.safetensors", testing::make_safetensors(ts));
  }
};

const char* kLlama3Regex =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|"
    "\\s+(?!\\S)|\\s+";
const char* kQwen2Regex =
    "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+"
    "[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

json split_then_bytelevel(const std::string& regex) {
  return {{"type", "Sequence"},
          {"pretokenizers",
           json::array({{{"type", "Split"}, {"pattern", {{"Regex", regex}}}, {"behavior", "Isolated"}, {"invert", false}},
                        {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", true}, {"use_regex", false}}})}};
}
json bytelevel(bool use_regex = true) {
  return {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", true}, {"use_regex", use_regex}};
}
json digits_then_bytelevel(bool individual) {
  return {{"type", "Sequence"},
          {"pretokenizers", json::array({{{"type", "Digits"}, {"individual_digits", individual}}, bytelevel()})}};
}

const std::string kSample =
    "The theme and the band: 12345 and Then, 'tis I'M there.\n\n  ok zebra ongoing thing [custom] end\r\n"
    "naïve café 😀 x=1+2;\t  the   band's 007";

struct ByteLevelCase {
  const char* name;
  json pre;
  bool ignore_merges;
  bool pairs;
  const char* want_pre;
};

TEST(HfTokenizerKeys, ByteLevelDirectoriesGetGpt2Keys) {
  const std::vector<ByteLevelCase> cases = {
      {"llama3", split_then_bytelevel(kLlama3Regex), true, true, "llama-bpe"},
      {"llama3_no_ignore", split_then_bytelevel(kLlama3Regex), false, false, "smaug-bpe"},
      {"qwen2", split_then_bytelevel(kQwen2Regex), false, true, "qwen2"},
      {"gpt2", bytelevel(), false, false, "gpt-2"},
      {"smollm", digits_then_bytelevel(true), false, true, "smollm"},
  };
  for (const ByteLevelCase& c : cases) {
    SCOPED_TRACE(c.name);
    const std::string dir = tmp(std::string("bl_") + c.name), out = tmp(std::string("bl_") + c.name + ".gguf");
    ByteLevelDir d;
    d.pre_tokenizer = c.pre;
    d.ignore_merges = c.ignore_merges;
    d.merges_as_pairs = c.pairs;
    d.extra_rows = 3;
    d.write(dir);
    QuantizeModelOptions o;
    o.format = "int4g64a";
    quantize_model(dir, out, o);
    auto g = io::GgufFile::open(out);

    EXPECT_EQ(g->get_string("tokenizer.ggml.model"), "gpt2");
    EXPECT_EQ(g->get_string("tokenizer.ggml.pre"), c.want_pre);
    EXPECT_EQ(g->find("tokenizer.ggml.scores"), nullptr);  // gpt2 vocabularies have none
    EXPECT_EQ(g->find("tokenizer.ggml.add_space_prefix"), nullptr);
    // Tokens in id order, padded to the model's vocabulary size.
    const auto* tokens = g->get_strings("tokenizer.ggml.tokens");
    ASSERT_NE(tokens, nullptr);
    ASSERT_EQ(tokens->size(), static_cast<size_t>(d.n_tokens + 3));
    std::vector<std::string> want_tokens = d.tokens;
    want_tokens.back() = " hi there";  // a user-defined token's ▁ is pre-normalized to a space
    for (int i = 0; i < 3; ++i) want_tokens.push_back("[PAD" + std::to_string(d.n_tokens + i) + "]");
    EXPECT_EQ(*tokens, want_tokens);
    // Types: normal; special added tokens and <|...|>-looking ones control; other added tokens user-defined;
    // padding unused.
    auto types = g->get_numbers("tokenizer.ggml.token_type");
    ASSERT_TRUE(types.has_value());
    ASSERT_EQ(types->size(), tokens->size());
    EXPECT_EQ(g->find("tokenizer.ggml.token_type")->type_str(), "array[i32]");
    const int base = d.n_tokens - 5;
    for (int i = 0; i < base; ++i) ASSERT_EQ((*types)[i], 1) << i;
    EXPECT_EQ((*types)[base + 0], 3);
    EXPECT_EQ((*types)[base + 1], 3);
    EXPECT_EQ((*types)[base + 2], 3);
    EXPECT_EQ((*types)[base + 3], 4);
    EXPECT_EQ((*types)[base + 4], 4);
    for (int i = 0; i < 3; ++i) EXPECT_EQ((*types)[d.n_tokens + i], 5);
    // Merges as "a b" in rank order, whichever form tokenizer.json used.
    const auto* merges = g->get_strings("tokenizer.ggml.merges");
    ASSERT_NE(merges, nullptr);
    std::vector<std::string> want_merges;
    for (const auto& [a, b] : d.merges) want_merges.push_back(a + " " + b);
    EXPECT_EQ(*merges, want_merges);
    EXPECT_EQ(g->get_int("tokenizer.ggml.bos_token_id"), base);
    EXPECT_EQ(g->get_int("tokenizer.ggml.eos_token_id"), base + 1);
    EXPECT_EQ(g->find("tokenizer.ggml.bos_token_id")->type_str(), "u32");
    EXPECT_EQ(g->get_bool("tokenizer.ggml.add_bos_token"), true);

    // lowbit's tokenization is unchanged by the round trip (it runs the embedded tokenizer.json) ...
    auto src = load_model(dir);
    auto q = load_model(out);
    EXPECT_EQ(q->tokenizer.model, "hf-json");
    auto th = make_tokenizer(src->tokenizer), tq = make_tokenizer(q->tokenizer);
    const auto ids = th->encode(kSample, true);
    EXPECT_EQ(tq->encode(kSample, true), ids);
    EXPECT_EQ(ids.front(), base);
    EXPECT_EQ(tq->decode(ids), kSample);
    // ... and the tokenizer.ggml.* keys, read as llama.cpp reads them (lowbit's gpt2 tokenizer), agree with it.
    TokenizerSpec ggml = io::tokenizer_spec_from_gguf(*g);
    EXPECT_EQ(ggml.model, "hf-json");
    ggml = ggml_vocab_from_hf(src->tokenizer, src->config.n_vocab);
    ASSERT_EQ(ggml.model, "gpt2");
    EXPECT_EQ(make_tokenizer(ggml)->encode(kSample, true), ids);

    fs::remove_all(dir);
    fs::remove(out);
  }
}

// What llama.cpp could not reproduce is refused with one line naming tokenizer.json and the field, and no output.
TEST(HfTokenizerKeys, UnmatchedPreTokenizerIsAClearError) {
  struct Bad {
    const char* name;
    json pre;
    bool ignore_merges;
    const char* field;
  };
  const std::vector<Bad> bad = {
      // A regex lowbit does not know at all: the directory cannot even be loaded.
      {"unknown_regex", split_then_bytelevel("\\p{L}+|\\p{N}+|[^\\p{L}\\p{N}]+"), false, "pattern.Regex"},
      // Regexes lowbit runs, in a sequence no llama.cpp pre-tokenizer has.
      {"digit_runs", digits_then_bytelevel(false), false, "pre_tokenizer"},
      {"qwen2_ignore_merges", split_then_bytelevel(kQwen2Regex), true, "pre_tokenizer"},
      {"prefix_space", json{{"type", "ByteLevel"}, {"add_prefix_space", true}, {"use_regex", true}}, false,
       "pre_tokenizer"},
  };
  for (const Bad& b : bad) {
    SCOPED_TRACE(b.name);
    const std::string dir = tmp(std::string("bad_") + b.name), out = tmp(std::string("bad_") + b.name + ".gguf");
    ByteLevelDir d;
    d.pre_tokenizer = b.pre;
    d.ignore_merges = b.ignore_merges;
    d.write(dir);
    QuantizeModelOptions o;
    o.format = "int4g64a";
    try {
      quantize_model(dir, out, o);
      ADD_FAILURE() << "accepted";
    } catch (const Error& e) {
      const std::string msg = e.what();
      EXPECT_NE(msg.find("tokenizer.json"), std::string::npos) << msg;
      EXPECT_NE(msg.find(b.field), std::string::npos) << msg;
      EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
    }
    EXPECT_FALSE(fs::exists(out));
    fs::remove_all(dir);
  }
}

}  // namespace
}  // namespace lowbit::quant
