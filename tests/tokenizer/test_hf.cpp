// Hugging Face tokenizer.json: the TinyStories-656K tokenizer (SentencePiece-like, Prepend/Replace normalizer,
// byte_fallback without byte tokens) and byte-level tokenizers written here from the GPT-2 GGUF vocabulary,
// cross-checked against the GGUF path and llama.cpp's test vectors.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "tok_test_util.h"
#include "lowbit/error.h"
#include "tokenizer/hf_tokenizer.h"

using namespace tok_test;
using json = nlohmann::json;

namespace {

const char* kSentence = "Once upon a time, there was a little girl named Lily. She loved to play outside.";

std::unique_ptr<lowbit::Tokenizer> tinystories_hf() {
  return lowbit::make_tokenizer(lowbit::tokenizer_spec_from_hf_dir(shared("models/TinyStories-656K")));
}

json load_json(const std::string& path) { return json::parse(read_file(path)); }

// Index of merge "a b" in the tokenizer.json's merge list, -1 if absent.
int merge_rank(const json& merges, const std::string& a, const std::string& b) {
  for (size_t i = 0; i < merges.size(); ++i)
    if (merges[i].get<std::string>() == a + " " + b) return static_cast<int>(i);
  return -1;
}

}  // namespace

TEST(HfTokenizer, TinyStoriesSpec) {
  REQUIRE_SHARED("models/TinyStories-656K/tokenizer.json");
  auto spec = lowbit::tokenizer_spec_from_hf_dir(shared("models/TinyStories-656K"));
  EXPECT_EQ(spec.model, "hf-json");
  EXPECT_EQ(spec.tokens.size(), 2048u);
  EXPECT_EQ(spec.bos, 1);  // tokenizer_config.json bos_token "<|start_story|>"
  EXPECT_EQ(spec.eos, 2);
  EXPECT_EQ(spec.unk, 0);
  EXPECT_TRUE(spec.add_bos);
  EXPECT_EQ(spec.types[1], 3);
  EXPECT_EQ(spec.types[0], 2);
  EXPECT_EQ(spec.tokens[80], "\xE2\x96\x81");
  // Also accepts the path of the tokenizer.json itself.
  auto spec2 = lowbit::tokenizer_spec_from_hf_dir(shared("models/TinyStories-656K/tokenizer.json"));
  EXPECT_EQ(spec2.tokens, spec.tokens);
  EXPECT_EQ(spec2.bos, 1);
  auto tok = lowbit::make_tokenizer(spec);
  EXPECT_EQ(tok->n_vocab(), 2048);
  EXPECT_TRUE(tok->add_bos());
  EXPECT_EQ(tok->bos(), 1);
}

// "Once upon" is normalized to "▁Once▁upon" (Prepend "▁", Replace " " -> "▁"; no pre-tokenizer: one word).
// Derived by hand from the merge list (checked below): the pairs present, lowest rank first, are
// e+▁ (0), o+n (30), O+n (66), u+p (108), c+e▁ (120); after them no adjacent pair of
// [▁, On, ce▁, up, on] is a merge, so the result is ▁(80) On(147) ce▁(201) up(189) on(111).
TEST(HfTokenizer, TinyStoriesHandDerivedMerges) {
  REQUIRE_SHARED("models/TinyStories-656K/tokenizer.json");
  json j = load_json(shared("models/TinyStories-656K/tokenizer.json"));
  const json& merges = j["model"]["merges"];
  const json& vocab = j["model"]["vocab"];
  const std::string S = "\xE2\x96\x81";
  EXPECT_EQ(merge_rank(merges, "e", S), 0);
  EXPECT_EQ(merge_rank(merges, "o", "n"), 30);
  EXPECT_EQ(merge_rank(merges, "O", "n"), 66);
  EXPECT_EQ(merge_rank(merges, "u", "p"), 108);
  EXPECT_EQ(merge_rank(merges, "c", "e" + S), 120);
  // Pairs that would otherwise be candidates at some point are not merges (or come later than the above).
  EXPECT_EQ(merge_rank(merges, S, "O"), -1);
  EXPECT_EQ(merge_rank(merges, S, "On"), -1);
  EXPECT_EQ(merge_rank(merges, "On", "c"), -1);
  EXPECT_EQ(merge_rank(merges, "On", "ce" + S), -1);
  EXPECT_EQ(merge_rank(merges, "ce" + S, "up"), -1);
  EXPECT_EQ(merge_rank(merges, "ce" + S, "u"), -1);
  EXPECT_EQ(merge_rank(merges, "up", "on"), -1);
  EXPECT_EQ(merge_rank(merges, "up", "o"), -1);
  EXPECT_EQ(merge_rank(merges, "n", "c"), -1);
  EXPECT_GT(merge_rank(merges, "p", "o"), 108);
  EXPECT_EQ(merge_rank(merges, S, "u"), -1);
  EXPECT_EQ(vocab[S], 80);
  EXPECT_EQ(vocab["On"], 147);
  EXPECT_EQ(vocab["ce" + S], 201);
  EXPECT_EQ(vocab["up"], 189);
  EXPECT_EQ(vocab["on"], 111);

  auto tok = tinystories_hf();
  EXPECT_EQ(ids_str(tok->encode("Once upon", true)), "1 80 147 201 189 111");
  EXPECT_EQ(ids_str(tok->encode("Once upon", false)), "80 147 201 189 111");
  EXPECT_EQ(tok->decode(tok->encode("Once upon", true)), "Once upon");
}

TEST(HfTokenizer, TinyStoriesSentence) {
  REQUIRE_SHARED("models/TinyStories-656K/tokenizer.json");
  auto tok = tinystories_hf();
  auto ids = tok->encode(kSentence, true);
  ASSERT_GE(ids.size(), 3u);
  EXPECT_EQ(ids[0], 1);
  // Whole-word tokens of this vocabulary (trailing ▁ words).
  const std::string S = "\xE2\x96\x81";
  auto has = [&](const std::string& piece) {
    for (int32_t id : ids)
      if (tok->token_to_piece(id) == piece) return true;
    return false;
  };
  EXPECT_TRUE(has("there was a "));
  EXPECT_TRUE(has("little girl named "));
  EXPECT_EQ(tok->decode(ids), kSentence);
  // Rank-based BPE over "▁Once▁upon…" leaves the leading "▁" alone (no merge starts with "▁ O"), exactly
  // like llama.cpp's score-based reading of the same vocabulary (reference/perplexity.md).
  EXPECT_EQ(ids_str(ids), "1 80 147 201 282 215 286 598 1662 887 610 57 10");
  // Written as text the way the model saw it in training ("<|start_story|>Once upon …"), HF matches the
  // normalized special token "▁<|start_story|>" and the story starts without a lone "▁".
  auto with_text_bos = tok->encode(std::string("<|start_story|>") + kSentence, false, /*parse_special=*/true);
  EXPECT_EQ(ids_str(with_text_bos), "1 147 201 282 215 286 598 1662 887 610 57 10");
  EXPECT_EQ(tok->decode(with_text_bos), kSentence);
  // Without parse_special the control token is text (this vocabulary even has pieces for it).
  auto as_text = tok->encode(std::string("<|start_story|>") + kSentence, false, false);
  EXPECT_NE(as_text[0], 1);
}

TEST(HfTokenizer, TinyStoriesAgreesWithGgufOnWiki) {
  REQUIRE_SHARED("models/TinyStories-656K/tokenizer.json");
  REQUIRE_SHARED("models/TinyStories-656K-gguf/TinyStories-656K-f32.gguf");
  REQUIRE_SHARED("data/wikitext-2-raw/wiki.test.raw.656K-charset");
  auto hf = tinystories_hf();
  auto gg = gguf_tokenizer("models/TinyStories-656K-gguf/TinyStories-656K-f32.gguf");
  std::string text = read_file(shared("data/wikitext-2-raw/wiki.test.raw.656K-charset"), 200000);
  text.resize(text.rfind('\n') + 1);
  // Merge ranks and the GGUF's scores order the merges the same way here, so the two agree.
  EXPECT_EQ(hf->encode(text, true), gg->encode(text, true));
}

namespace {

// A byte-level tokenizer.json built from the GPT-2 GGUF vocabulary and merges.
std::string write_bytelevel_json(const std::string& name, const json& pre_tokenizer, bool merges_as_pairs,
                                 bool ignore_merges, const json& post = nullptr) {
  auto f = lowbit::io::GgufFile::open(shared("tokenizers/ggml-vocab-gpt-2.gguf"));
  auto spec = lowbit::io::tokenizer_spec_from_gguf(*f);
  json vocab = json::object();
  for (size_t i = 0; i < spec.tokens.size(); ++i) vocab[spec.tokens[i]] = i;
  json merges = json::array();
  for (const std::string& m : spec.merges) {
    if (merges_as_pairs) {
      size_t sp = m.find(' ', 1);
      merges.push_back(json::array({m.substr(0, sp), m.substr(sp + 1)}));
    } else {
      merges.push_back(m);
    }
  }
  json j = {
      {"version", "1.0"},
      {"added_tokens", json::array({{{"id", 50256}, {"content", "<|endoftext|>"}, {"special", true},
                                     {"normalized", false}, {"lstrip", false}, {"rstrip", false}}})},
      {"normalizer", nullptr},
      {"pre_tokenizer", pre_tokenizer},
      {"post_processor", post},
      {"decoder", {{"type", "ByteLevel"}, {"add_prefix_space", true}, {"trim_offsets", true}, {"use_regex", true}}},
      {"model", {{"type", "BPE"}, {"dropout", nullptr}, {"unk_token", nullptr}, {"fuse_unk", false},
                 {"byte_fallback", false}, {"ignore_merges", ignore_merges}, {"vocab", vocab}, {"merges", merges}}},
  };
  std::string path = temp_path(name);
  write_file(path, j.dump());
  return path;
}

json split_then_bytelevel(const std::string& regex) {
  return {{"type", "Sequence"},
          {"pretokenizers",
           json::array({{{"type", "Split"}, {"pattern", {{"Regex", regex}}}, {"behavior", "Isolated"}, {"invert", false}},
                        {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", true}, {"use_regex", false}}})}};
}

}  // namespace

TEST(HfTokenizer, Gpt2ByteLevelJsonMatchesLlamaCppVectors) {
  REQUIRE_SHARED("tokenizers/ggml-vocab-gpt-2.gguf");
  for (bool pairs : {false, true}) {
    json pre = {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", true}, {"use_regex", true}};
    std::string path = write_bytelevel_json(pairs ? "gpt2_pairs.json" : "gpt2_strings.json", pre, pairs, false);
    auto spec = lowbit::tokenizer_spec_from_hf_dir(path);
    EXPECT_EQ(spec.tokens.size(), 50257u);
    EXPECT_FALSE(spec.add_bos);
    auto tok = lowbit::make_tokenizer(spec);
    for (const auto& v : load_vectors("tokenizers/ggml-vocab-gpt-2.gguf")) {
      auto ids = tok->encode(v.text, false);
      EXPECT_EQ(ids_str(ids), ids_str(v.ids)) << "text: \"" << v.text << "\"";
      EXPECT_EQ(tok->decode(ids), v.text);
    }
    // Special token only with parse_special.
    EXPECT_EQ(ids_str(tok->encode("a<|endoftext|>", false, true)), "64 50256");
    EXPECT_NE(ids_str(tok->encode("a<|endoftext|>", false, false)), "64 50256");
    EXPECT_EQ(tok->decode(tok->encode("a<|endoftext|>b", false, true)), "ab");
  }
}

// The Llama-3 and Qwen2 pre-tokenizer regexes through tokenizer.json (Split + ByteLevel) agree with the GGUF
// path (tokenizer.ggml.pre "llama-bpe" / "qwen2") on the same vocabulary.
TEST(HfTokenizer, Llama3AndQwen2SplitsMatchGgufPath) {
  REQUIRE_SHARED("tokenizers/ggml-vocab-gpt-2.gguf");
  REQUIRE_SHARED("data/wikitext-2-raw/wiki.test.raw");
  const std::string l3 =
      "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
  const std::string q2 =
      "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
  json post = {{"type", "TemplateProcessing"},
               {"single", json::array({{{"SpecialToken", {{"id", "<|endoftext|>"}, {"type_id", 0}}}},
                                       {{"Sequence", {{"id", "A"}, {"type_id", 0}}}}})},
               {"special_tokens", {{"<|endoftext|>", {{"id", "<|endoftext|>"}, {"ids", {50256}}, {"tokens", {"<|endoftext|>"}}}}}}};
  std::string text = read_file(shared("data/wikitext-2-raw/wiki.test.raw"), 30000);
  text.resize(text.rfind('\n') + 1);
  text += "I'M sure he'LL 12345 numbers\r\n\r\n  (x) 'tis \t\n";
  for (auto [regex, pre, ignore] : {std::tuple{l3, "llama-bpe", true}, std::tuple{q2, "qwen2", false}}) {
    std::string path = write_bytelevel_json(std::string(pre) + ".json", split_then_bytelevel(regex), false, ignore, post);
    auto hf_spec = lowbit::tokenizer_spec_from_hf_dir(path);
    EXPECT_EQ(hf_spec.bos, 50256);
    EXPECT_TRUE(hf_spec.add_bos);  // from the post_processor template
    auto hf = lowbit::make_tokenizer(hf_spec);
    auto f = lowbit::io::GgufFile::open(shared("tokenizers/ggml-vocab-gpt-2.gguf"));
    auto gspec = lowbit::io::tokenizer_spec_from_gguf(*f);
    gspec.pre = pre;
    auto gg = lowbit::make_tokenizer(gspec);
    auto a = hf->encode(text, true), b = gg->encode(text, true);
    EXPECT_EQ(a, b) << pre;
    EXPECT_EQ(a.front(), 50256);
    EXPECT_EQ(hf->decode(a), text);
  }
}

TEST(HfTokenizer, MetaspaceAndByteFallbackSynthetic) {
  // A tiny SentencePiece-style tokenizer.json: Metaspace pre-tokenizer (prepend "first", split), byte
  // fallback with all 256 byte tokens, Metaspace decoder.
  json vocab = {{"<unk>", 0}, {"<s>", 1}, {"</s>", 2}};
  for (int b = 0; b < 256; ++b) {
    char buf[8];
    std::snprintf(buf, sizeof buf, "<0x%02X>", b);
    vocab[buf] = 3 + b;
  }
  const std::string S = "\xE2\x96\x81";
  int next = 259;
  for (const std::string& t : {S, std::string("h"), std::string("i"), std::string("hi"), S + "h", S + "hi",
                               std::string("a"), S + "a"})
    vocab[t] = next++;
  json merges = json::array({S + " h", S + "h i", "h i", S + " a"});
  json j = {
      {"added_tokens", json::array({{{"id", 1}, {"content", "<s>"}, {"special", true}, {"normalized", false}},
                                    {{"id", 2}, {"content", "</s>"}, {"special", true}, {"normalized", false}}})},
      {"normalizer", nullptr},
      {"pre_tokenizer", {{"type", "Metaspace"}, {"replacement", S}, {"prepend_scheme", "first"}, {"split", true}}},
      {"post_processor", {{"type", "TemplateProcessing"},
                          {"single", json::array({{{"SpecialToken", {{"id", "<s>"}, {"type_id", 0}}}},
                                                  {{"Sequence", {{"id", "A"}, {"type_id", 0}}}}})},
                          {"special_tokens", {{"<s>", {{"id", "<s>"}, {"ids", {1}}, {"tokens", {"<s>"}}}}}}}},
      {"decoder", {{"type", "Sequence"},
                   {"decoders", json::array({{{"type", "Replace"}, {"pattern", {{"String", S}}}, {"content", " "}},
                                             {{"type", "ByteFallback"}},
                                             {{"type", "Fuse"}},
                                             {{"type", "Strip"}, {"content", " "}, {"start", 1}, {"stop", 0}}})}}},
      {"model", {{"type", "BPE"}, {"unk_token", "<unk>"}, {"fuse_unk", true}, {"byte_fallback", true},
                 {"vocab", vocab}, {"merges", merges}}},
  };
  std::string path = temp_path("metaspace.json");
  write_file(path, j.dump());
  auto spec = lowbit::tokenizer_spec_from_hf_dir(path);
  EXPECT_EQ(spec.bos, 1);
  EXPECT_TRUE(spec.add_bos);
  EXPECT_EQ(spec.types[3], 6);
  auto tok = lowbit::make_tokenizer(spec);
  const int hi = 259 + 5, a = 259 + 7, sp = 259;
  // "hi a" -> "▁hi▁a" -> words "▁hi", "▁a".
  EXPECT_EQ(ids_str(tok->encode("hi a", true)), ids_str({1, hi, a}));
  // Unknown characters fall back to bytes: "é" = C3 A9.
  EXPECT_EQ(ids_str(tok->encode("hi é", false)), ids_str({hi, sp, 3 + 0xC3, 3 + 0xA9}));
  for (std::string t : {"hi a", "hi é", "x\ny", "\xF0\x9F\x98\x80 emoji"}) EXPECT_EQ(tok->decode(tok->encode(t, true)), t);
  // As in HF: Metaspace does not prepend to text that already starts with a space, but the decoder strips one.
  EXPECT_EQ(tok->decode(tok->encode(" hi", true)), "hi");
  EXPECT_EQ(tok->decode(tok->encode("  hi", true)), " hi");
  // Special tokens split the text; "first" prepends only at the start of the input.
  EXPECT_EQ(ids_str(tok->encode("hi</s>hi", false, true)), ids_str({hi, 2, 259 + 3}));
}

// ggml_vocab_from_hf: the tokenizer.ggml.* keys llama.cpp's converter writes for a tokenizer.json.

// The GPT-2 tokenizer.json (built from llama.cpp's own GPT-2 vocabulary GGUF) gives back exactly that GGUF's
// vocabulary: model, pre, tokens, types and merges, whichever form the merges are in.
TEST(HfToGgml, Gpt2JsonGivesLlamaCppsGpt2Vocab) {
  REQUIRE_SHARED("tokenizers/ggml-vocab-gpt-2.gguf");
  auto f = lowbit::io::GgufFile::open(shared("tokenizers/ggml-vocab-gpt-2.gguf"));
  const auto want = lowbit::io::tokenizer_spec_from_gguf(*f);
  for (bool pairs : {false, true}) {
    SCOPED_TRACE(pairs ? "pairs" : "strings");
    json pre = {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", true}, {"use_regex", true}};
    std::string path = write_bytelevel_json(pairs ? "gg_gpt2_pairs.json" : "gg_gpt2_strings.json", pre, pairs, false);
    const auto g = lowbit::ggml_vocab_from_hf(lowbit::tokenizer_spec_from_hf_dir(path));
    EXPECT_EQ(g.model, "gpt2");
    EXPECT_EQ(g.pre, *f->get_string("tokenizer.ggml.pre"));  // "gpt-2"
    EXPECT_EQ(g.tokens, want.tokens);
    EXPECT_EQ(g.types, want.types);
    EXPECT_EQ(g.merges, want.merges);
    EXPECT_TRUE(g.scores.empty());
    auto tok = lowbit::make_tokenizer(g);
    for (const auto& v : load_vectors("tokenizers/ggml-vocab-gpt-2.gguf"))
      EXPECT_EQ(ids_str(tok->encode(v.text, false)), ids_str(v.ids)) << "text: \"" << v.text << "\"";
  }
}

namespace {

// A small SentencePiece-style tokenizer.json (256 byte tokens, a few merges) whose pre_tokenizer and normalizer
// a test sets.
std::string write_spm_json(const std::string& name, const json& normalizer, const json& pre_tokenizer) {
  const std::string S = "\xE2\x96\x81";
  json vocab = {{"<unk>", 0}, {"<s>", 1}, {"</s>", 2}};
  for (int b = 0; b < 256; ++b) {
    char buf[8];
    std::snprintf(buf, sizeof buf, "<0x%02X>", b);
    vocab[buf] = 3 + b;
  }
  int next = 259;
  for (const std::string& t : {S, std::string("h"), std::string("i"), std::string("hi"), S + "h", S + "hi",
                               std::string("a"), S + "a"})
    vocab[t] = next++;
  json j = {
      {"added_tokens", json::array({{{"id", 0}, {"content", "<unk>"}, {"special", true}},
                                    {{"id", 1}, {"content", "<s>"}, {"special", true}},
                                    {{"id", 2}, {"content", "</s>"}, {"special", true}},
                                    {{"id", 267}, {"content", "[tool]"}, {"special", false}}})},
      {"normalizer", normalizer},
      {"pre_tokenizer", pre_tokenizer},
      {"decoder", {{"type", "Sequence"},
                   {"decoders", json::array({{{"type", "Replace"}, {"pattern", {{"String", S}}}, {"content", " "}},
                                             {{"type", "ByteFallback"}}, {{"type", "Fuse"}}})}}},
      {"model", {{"type", "BPE"}, {"unk_token", "<unk>"}, {"fuse_unk", true}, {"byte_fallback", true},
                 {"vocab", vocab}, {"merges", json::array({S + " h", "h i", S + "h i", S + " a", "h i"})}}},
  };
  std::string path = temp_path(name);
  write_file(path, j.dump());
  return path;
}

json metaspace(const std::string& scheme) {
  return {{"type", "Metaspace"}, {"replacement", "\xE2\x96\x81"}, {"prepend_scheme", scheme}, {"split", false}};
}
json prepend_replace() {
  return {{"type", "Sequence"},
          {"normalizers", json::array({{{"type", "Prepend"}, {"prepend", "\xE2\x96\x81"}},
                                       {{"type", "Replace"}, {"pattern", {{"String", " "}}}, {"content", "\xE2\x96\x81"}}})}};
}

}  // namespace

TEST(HfToGgml, SentencePieceStyleJsonGivesLlamaVocab) {
  struct Case {
    const char* name;
    json normalizer, pre;
    bool add_space_prefix;
  };
  for (const Case& c : {Case{"prepend_replace", prepend_replace(), nullptr, true},
                        Case{"metaspace_first", nullptr, metaspace("first"), true},
                        Case{"metaspace_never", nullptr, metaspace("never"), false}}) {
    SCOPED_TRACE(c.name);
    auto hf = lowbit::tokenizer_spec_from_hf_dir(write_spm_json(std::string(c.name) + ".json", c.normalizer, c.pre));
    const auto g = lowbit::ggml_vocab_from_hf(hf, 270);
    EXPECT_EQ(g.model, "llama");
    EXPECT_EQ(g.pre, "default");
    EXPECT_EQ(g.add_space_prefix, c.add_space_prefix);
    EXPECT_TRUE(g.merges.empty());
    ASSERT_EQ(g.tokens.size(), 270u);  // 268 tokens, padded to the model's 270
    EXPECT_EQ(g.tokens[259], "\xE2\x96\x81");
    EXPECT_EQ(g.tokens[268], "[PAD268]");
    EXPECT_EQ(g.tokens[267], "[tool]");
    // unk 2, special added 3, bytes 6, non-special added 4, padding 5, else 1.
    std::vector<int32_t> types(270, 1);
    types[0] = 2, types[1] = types[2] = 3, types[267] = 4, types[268] = types[269] = 5;
    for (int b = 0; b < 256; ++b) types[3 + b] = 6;
    EXPECT_EQ(g.types, types);
    // The token merge r makes first scores -(r + 1): "▁h" 0, "hi" 1 ("h i" again at 4 changes nothing), "▁hi" 2,
    // "▁a" 3; padding -1000 as the converter pads; everything else 0.
    std::vector<float> scores(270, 0.0f);
    scores[259 + 4] = -1, scores[259 + 3] = -2, scores[259 + 5] = -3, scores[259 + 7] = -4;
    scores[268] = scores[269] = -1000;
    EXPECT_EQ(g.scores, scores);
    EXPECT_EQ(g.bos, hf.bos);
    EXPECT_EQ(g.unk, 0);
  }
}

TEST(HfToGgml, WhatLlamaCppCannotReproduceIsAnError) {
  auto expect_error = [](const std::string& path, const std::string& field) {
    auto hf = lowbit::tokenizer_spec_from_hf_dir(path);  // lowbit itself runs it
    try {
      lowbit::ggml_vocab_from_hf(hf);
      ADD_FAILURE() << path << " accepted";
    } catch (const lowbit::Error& e) {
      const std::string msg = e.what();
      EXPECT_EQ(msg.rfind(path + ": " + field, 0), 0u) << msg;  // names the file and the field first
    }
  };
  // No space handling at all: neither byte-level nor "▁".
  expect_error(write_spm_json("plain.json", nullptr, nullptr), "pre_tokenizer");
  // A normalizer llama.cpp does not have.
  expect_error(write_spm_json("replace.json",
                              {{"type", "Replace"}, {"pattern", {{"String", "a"}}}, {"content", "b"}}, metaspace("first")),
               "normalizer");
  // Pre-splitting before SentencePiece-style BPE.
  expect_error(write_spm_json("digits.json", prepend_replace(), {{"type", "Digits"}, {"individual_digits", true}}),
               "pre_tokenizer");
}
