// Malformed input: every rejection is one lowbit::Error with a one-line message, never a crash.
#include <gtest/gtest.h>

#include <cstring>
#include <random>

#include "lowbit/error.h"
#include "tok_test_util.h"
#include "tokenizer/hf_tokenizer.h"
#include "tokenizer/llama2c_vocab.h"

using namespace tok_test;

namespace {

// Runs f, expects a lowbit::Error whose message is one line and contains `needle`.
template <class F>
void expect_error(F&& f, const std::string& needle) {
  try {
    f();
    ADD_FAILURE() << "expected lowbit::Error containing \"" << needle << "\"";
  } catch (const lowbit::Error& e) {
    std::string msg = e.what();
    EXPECT_NE(msg.find(needle), std::string::npos) << msg;
    EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
  }
}

std::string le32(int32_t v) {
  std::string s(4, '\0');
  std::memcpy(s.data(), &v, 4);
  return s;
}
std::string lef(float v) {
  std::string s(4, '\0');
  std::memcpy(s.data(), &v, 4);
  return s;
}
std::string token_rec(float score, const std::string& piece) { return lef(score) + le32(static_cast<int32_t>(piece.size())) + piece; }

lowbit::TokenizerSpec tiny_spm_spec() {
  lowbit::TokenizerSpec s;
  s.model = "llama";
  s.tokens = {"<unk>", "<s>", "</s>", "\xE2\x96\x81", "a", "\xE2\x96\x81" "a"};
  s.scores = {0, 0, 0, -1, -2, -3};
  s.types = {2, 3, 3, 1, 1, 1};
  s.bos = 1, s.eos = 2, s.unk = 0;
  s.source = "tiny";
  return s;
}

}  // namespace

TEST(TokenizerErrors, Llama2cTruncatedAndAbsurd) {
  std::string good = le32(8) + token_rec(0, "<unk>") + token_rec(0, "\n<s>\n") + token_rec(0, "\n</s>\n") +
                     token_rec(-1, " a") + token_rec(-2, "a");
  std::string p = temp_path("good.bin");
  write_file(p, good);
  auto spec = lowbit::tokenizer_spec_from_llama2c(p);
  ASSERT_EQ(spec.tokens.size(), 5u);
  EXPECT_EQ(spec.tokens[3], "\xE2\x96\x81" "a");
  EXPECT_EQ(spec.bos, 1);
  EXPECT_EQ(spec.eos, 2);
  EXPECT_EQ(spec.unk, 0);
  expect_error([&] { lowbit::tokenizer_spec_from_llama2c(p, 6); }, "vocab_size is 6");

  // Every truncation inside a record is reported (a cut exactly between records is indistinguishable from a
  // shorter vocabulary; expected_vocab catches that).
  for (size_t cut = 0; cut < good.size(); ++cut) {
    std::string q = temp_path("cut.bin");
    write_file(q, good.substr(0, cut));
    bool boundary = false;
    for (size_t b : {size_t{4}, size_t{4 + 13}, size_t{4 + 13 + 13}, size_t{4 + 13 + 13 + 14}, size_t{4 + 13 + 13 + 14 + 10}})
      boundary = boundary || cut == b;
    if (cut == 0) {
      expect_error([&] { lowbit::tokenizer_spec_from_llama2c(q); }, "empty file");
    } else if (cut == 4) {
      expect_error([&] { lowbit::tokenizer_spec_from_llama2c(q); }, "no tokens");
    } else if (boundary) {
      expect_error([&] { lowbit::tokenizer_spec_from_llama2c(q, 5); }, "vocab_size is 5");
    } else {
      expect_error([&] { lowbit::tokenizer_spec_from_llama2c(q); }, "truncated");
    }
  }

  std::string absurd = le32(8) + token_rec(0, "<unk>") + lef(0) + le32(0x7fffffff) + "xyz";
  write_file(p, absurd);
  expect_error([&] { lowbit::tokenizer_spec_from_llama2c(p); }, "absurd length 2147483647");
  write_file(p, le32(8) + token_rec(0, "<unk>") + lef(0) + le32(-5));
  expect_error([&] { lowbit::tokenizer_spec_from_llama2c(p); }, "absurd length -5");
  write_file(p, le32(-1) + token_rec(0, "<unk>"));
  expect_error([&] { lowbit::tokenizer_spec_from_llama2c(p); }, "max_token_length");
  write_file(p, le32(3) + token_rec(0, "<unk>"));
  expect_error([&] { lowbit::tokenizer_spec_from_llama2c(p); }, "absurd length 5");
  expect_error([&] { lowbit::tokenizer_spec_from_llama2c(temp_path("does-not-exist.bin")); }, "does-not-exist.bin");
}

TEST(TokenizerErrors, Llama2cRealFileTruncated) {
  REQUIRE_SHARED("models/stories260K/tok512.bin");
  std::string bytes = read_file(shared("models/stories260K/tok512.bin"));
  std::string p = temp_path("tok512_cut.bin");
  write_file(p, bytes.substr(0, bytes.size() - 3));
  expect_error([&] { lowbit::tokenizer_spec_from_llama2c(p); }, "truncated");
}

TEST(TokenizerErrors, Llama2cRandomBytesNeverCrash) {
  std::mt19937 rng(42);
  std::string p = temp_path("random.bin");
  for (int iter = 0; iter < 300; ++iter) {
    std::string s(rng() % 64, '\0');
    for (char& c : s) c = static_cast<char>(rng());
    if (iter % 2 == 0 && s.size() >= 4) std::memcpy(s.data(), le32(static_cast<int32_t>(rng() % 16)).data(), 4);
    write_file(p, s);
    try {
      auto spec = lowbit::tokenizer_spec_from_llama2c(p);
      auto tok = lowbit::make_tokenizer(spec);
      (void)tok->decode(tok->encode("hello world", true));
    } catch (const lowbit::Error& e) {
      EXPECT_EQ(std::string(e.what()).find('\n'), std::string::npos);
    }
  }
}

TEST(TokenizerErrors, HfJsonMalformed) {
  std::string dir = temp_path("hfdir");
  std::filesystem::create_directories(dir);
  expect_error([&] { lowbit::tokenizer_spec_from_hf_dir(dir); }, "tokenizer.json: missing");
  std::string tj = dir + "/tokenizer.json";
  write_file(tj, "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, ");
  expect_error([&] { lowbit::tokenizer_spec_from_hf_dir(dir); }, "invalid JSON");
  write_file(tj, "{\"version\": \"1.0\"}");
  expect_error([&] { lowbit::tokenizer_spec_from_hf_dir(dir); }, "model: missing");
  write_file(tj, "[1, 2]");
  expect_error([&] { lowbit::tokenizer_spec_from_hf_dir(dir); }, "JSON object");
  write_file(tj, R"({"model": {"type": "WordPiece", "vocab": {"a": 0}}})");
  expect_error([&] { lowbit::tokenizer_spec_from_hf_dir(dir); }, "unsupported tokenizer model \"WordPiece\"");
  write_file(tj, R"({"model": {"type": "BPE", "vocab": {"a": 0, "b": 1}, "merges": ["a c"]}})");
  expect_error([&] { lowbit::tokenizer_spec_from_hf_dir(dir); }, "model.merges[0]");
  write_file(tj, R"({"model": {"type": "BPE", "vocab": {"a": 0, "b": 1}, "merges": ["a b"]}})");
  expect_error([&] { lowbit::tokenizer_spec_from_hf_dir(dir); }, "\"ab\" is not in the vocabulary");
  write_file(tj, R"({"model": {"type": "BPE", "vocab": {"a": "zero"}, "merges": []}})");
  expect_error([&] { lowbit::tokenizer_spec_from_hf_dir(dir); }, "expected an integer");
  write_file(tj, R"({"model": {"type": "BPE", "vocab": {"a": 0}, "merges": []}, "normalizer": {"type": "NFKC"}})");
  expect_error([&] { lowbit::tokenizer_spec_from_hf_dir(dir); }, "unsupported normalizer \"NFKC\"");
  write_file(tj, R"({"model": {"type": "BPE", "vocab": {"a": 0}, "merges": []},
                     "pre_tokenizer": {"type": "Split", "pattern": {"Regex": "[a-z]+"}, "behavior": "Isolated"}})");
  expect_error([&] { lowbit::tokenizer_spec_from_hf_dir(dir); }, "unsupported split regex");
  write_file(tj, R"({"model": {"type": "BPE", "vocab": {"a": 0}, "merges": []}, "added_tokens": [{"id": 5}]})");
  expect_error([&] { lowbit::tokenizer_spec_from_hf_dir(dir); }, "added_tokens[0].content: missing");
  // Valid tokenizer.json but broken tokenizer_config.json.
  write_file(tj, R"({"model": {"type": "BPE", "vocab": {"a": 0}, "merges": []}})");
  write_file(dir + "/tokenizer_config.json", "{ nope");
  expect_error([&] { lowbit::tokenizer_spec_from_hf_dir(dir); }, "tokenizer_config.json: invalid JSON");
  write_file(dir + "/tokenizer_config.json", R"({"bos_token": "<s>"})");
  expect_error([&] { lowbit::tokenizer_spec_from_hf_dir(dir); }, "\"<s>\" is not in the vocabulary");
  // make_tokenizer on a spec whose json_path is gone.
  lowbit::TokenizerSpec spec;
  spec.model = "hf-json";
  spec.json_path = dir + "/missing.json";
  expect_error([&] { lowbit::make_tokenizer(spec); }, "cannot open");
}

TEST(TokenizerErrors, NonUtf8TextForNonByteLevelTokenizers) {
  auto spm = lowbit::make_tokenizer(tiny_spm_spec());
  expect_error([&] { spm->encode("a\xFF" "a", true); }, "at offset 1: not valid UTF-8");
  expect_error([&] { spm->encode("\xE2\x96", true); }, "not valid UTF-8");
  expect_error([&] { spm->encode("\xC0\xAF", true); }, "not valid UTF-8");          // overlong
  expect_error([&] { spm->encode("\xED\xA0\x80", true); }, "not valid UTF-8");      // surrogate
  EXPECT_EQ(ids_str(spm->encode("a a", true)), "1 5 5");
  if (have("models/TinyStories-656K/tokenizer.json")) {
    auto hf = lowbit::make_tokenizer(lowbit::tokenizer_spec_from_hf_dir(shared("models/TinyStories-656K")));
    expect_error([&] { hf->encode("Once\x80", true); }, "not valid UTF-8");
  }
}

TEST(TokenizerErrors, SpecAndIdErrors) {
  lowbit::TokenizerSpec none;
  expect_error([&] { lowbit::make_tokenizer(none); }, "no tokenizer");
  lowbit::TokenizerSpec odd = tiny_spm_spec();
  odd.model = "wordpiece";
  expect_error([&] { lowbit::make_tokenizer(odd); }, "unsupported tokenizer model");
  lowbit::TokenizerSpec empty = tiny_spm_spec();
  empty.tokens.clear();
  expect_error([&] { lowbit::make_tokenizer(empty); }, "empty vocabulary");
  lowbit::TokenizerSpec scores = tiny_spm_spec();
  scores.scores.pop_back();
  expect_error([&] { lowbit::make_tokenizer(scores); }, "5 scores for 6 tokens");
  lowbit::TokenizerSpec gpt2 = tiny_spm_spec();
  gpt2.model = "gpt2";
  gpt2.merges = {"a b"};
  gpt2.pre = "no-such-pre";
  expect_error([&] { lowbit::make_tokenizer(gpt2); }, "unsupported pre-tokenizer \"no-such-pre\"");
  gpt2.pre = "gpt-2";
  gpt2.merges = {"ab"};
  expect_error([&] { lowbit::make_tokenizer(gpt2); }, "is not \"a b\"");
  auto spm = lowbit::make_tokenizer(tiny_spm_spec());
  std::vector<int32_t> bad = {1, 6};
  expect_error([&] { spm->decode(bad); }, "token id: 6 is out of range");
  expect_error([&] { spm->token_to_piece(-1); }, "-1 is out of range");
  // No byte tokens: unknown characters become unk (fused per character).
  EXPECT_EQ(ids_str(spm->encode("a\xC3\xA9", false)), "5 0");
  lowbit::TokenizerSpec no_unk = tiny_spm_spec();
  no_unk.unk = -1;
  no_unk.types[0] = 1;
  auto strict = lowbit::make_tokenizer(no_unk);
  expect_error([&] { strict->encode("\xC3\xA9", false); }, "cannot be represented");
}
