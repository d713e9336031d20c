// llama2.c legacy checkpoints: stories260K.bin against stories260K.gguf, crafted checkpoints and malformed input.
#include <gtest/gtest.h>

#include <cstring>

#include "io/loaders.h"
#include "io_testing.h"
#include "lowbit/model_file.h"

namespace lowbit {
namespace {

using testing::error_of;
using testing::TempDirTest;

TEST(Llama2c, Stories260KEqualsGguf) {
  const std::string dir = std::string(LOWBIT_SHARED_DIR) + "/models/stories260K";
  if (!testing::fs::exists(dir + "/stories260K.bin")) GTEST_SKIP() << dir << " not found";
  auto bin = io::load_llama2c_model(dir + "/stories260K.bin", "");
  auto gg = load_model(dir + "/stories260K.gguf");
  const ModelConfig& c = bin->config;
  EXPECT_EQ(bin->format, "llama2c");
  EXPECT_EQ(c.dim, 64);
  EXPECT_EQ(c.ffn_dim, 172);
  EXPECT_EQ(c.n_layers, 5);
  EXPECT_EQ(c.n_heads, 8);
  EXPECT_EQ(c.n_kv_heads, 4);
  EXPECT_EQ(c.head_dim, 8);
  EXPECT_EQ(c.n_vocab, 512);
  EXPECT_EQ(c.context_length, 512);
  EXPECT_EQ(c.rope_style, RopeStyle::Interleaved);
  EXPECT_FLOAT_EQ(c.rope_theta, 10000.0f);
  EXPECT_FLOAT_EQ(c.norm_eps, 1e-5f);
  // The checkpoint shares its classifier (positive vocab_size); the GGUF conversion stored a copy as output.weight.
  EXPECT_TRUE(c.tied_embeddings);
  EXPECT_EQ(bin->find("output.weight"), nullptr);
  EXPECT_EQ(bin->tokenizer.model, "none");
  EXPECT_EQ(bin->tensors.size() + 1, gg->tensors.size());

  for (const auto& t : bin->tensors) {
    SCOPED_TRACE(t.name);
    const TensorInfo* g = gg->find(t.name);
    ASSERT_NE(g, nullptr);
    EXPECT_EQ(t.shape, g->shape);
    ASSERT_EQ(t.nbytes, g->nbytes);
    EXPECT_EQ(std::memcmp(t.data, g->data, t.nbytes), 0);
  }
  const TensorInfo& out = gg->get("output.weight");
  const TensorInfo& emb = bin->get("token_embd.weight");
  ASSERT_EQ(out.nbytes, emb.nbytes);
  EXPECT_EQ(std::memcmp(out.data, emb.data, emb.nbytes), 0);
}

TEST(Llama2c, Stories260KWithTokenizer) {
  const std::string dir = std::string(LOWBIT_SHARED_DIR) + "/models/stories260K";
  if (!testing::fs::exists(dir + "/tok512.bin")) GTEST_SKIP() << dir << " not found";
  // load_model finds tok512.bin beside the checkpoint.
  auto m = load_model(dir + "/stories260K.bin");
  EXPECT_EQ(m->tokenizer.model, "llama");
  EXPECT_EQ(m->tokenizer.tokens.size(), 512u);
  EXPECT_EQ(m->tokenizer.bos, 1);
  EXPECT_EQ(m->tokenizer.eos, 2);
}

// A crafted checkpoint: header + count floats (value = index).
class Llama2cCrafted : public TempDirTest {
 protected:
  // dim 8, hidden 12, 2 layers, 2 heads, 1 kv head, vocab 10, seq_len 4
  int32_t h_[7] = {8, 12, 2, 2, 1, 10, 4};

  uint64_t expected_floats() const {
    const int64_t dim = h_[0], hid = h_[1], L = h_[2], heads = h_[3], kv = h_[4], voc = std::abs(h_[5]), seq = h_[6];
    const int64_t hs = dim / heads, kvd = kv * hs;
    int64_t n = voc * dim + L * (dim + dim * dim + 2 * kvd * dim + dim * dim + dim + 3 * hid * dim) + dim +
                2 * seq * hs / 2;
    if (h_[5] < 0) n += voc * dim;
    return static_cast<uint64_t>(n);
  }
  std::string write(int64_t extra_floats = 0) {
    testing::Bytes b;
    for (int32_t v : h_) b.i32(v);
    const int64_t n = static_cast<int64_t>(expected_floats()) + extra_floats;
    for (int64_t i = 0; i < n; ++i) b.f32(static_cast<float>(i));
    const std::string p = path("model.bin");
    testing::write_file(p, b.b);
    return p;
  }
  float at(const TensorInfo& t, size_t i) {
    float f;
    std::memcpy(&f, t.data + 4 * i, 4);
    return f;
  }
};

TEST_F(Llama2cCrafted, LayoutAndUnsharedClassifier) {
  h_[5] = -10;
  const std::string p = write();
  auto m = io::load_llama2c_model(p, "");
  EXPECT_FALSE(m->config.tied_embeddings);
  EXPECT_EQ(m->config.n_vocab, 10);
  EXPECT_EQ(m->get("blk.1.attn_k.weight").shape, (std::vector<int64_t>{4, 8}));
  EXPECT_EQ(m->get("blk.0.ffn_down.weight").shape, (std::vector<int64_t>{8, 12}));
  // Offsets in floats: embedding 80, rms_att 16, wq 128, wk 64, wv 64, wo 128, rms_ffn 16, w1 192, w2 192, w3 192.
  EXPECT_EQ(at(m->get("token_embd.weight"), 0), 0.0f);
  EXPECT_EQ(at(m->get("blk.0.attn_norm.weight"), 0), 80.0f);
  EXPECT_EQ(at(m->get("blk.1.attn_norm.weight"), 0), 88.0f);
  EXPECT_EQ(at(m->get("blk.0.attn_q.weight"), 0), 96.0f);
  EXPECT_EQ(at(m->get("blk.0.attn_k.weight"), 0), 224.0f);
  EXPECT_EQ(at(m->get("blk.0.attn_v.weight"), 0), 288.0f);
  EXPECT_EQ(at(m->get("blk.0.attn_output.weight"), 0), 352.0f);
  EXPECT_EQ(at(m->get("blk.0.ffn_norm.weight"), 0), 480.0f);
  EXPECT_EQ(at(m->get("blk.0.ffn_gate.weight"), 0), 496.0f);  // w1
  EXPECT_EQ(at(m->get("blk.0.ffn_down.weight"), 0), 688.0f);  // w2
  EXPECT_EQ(at(m->get("blk.0.ffn_up.weight"), 0), 880.0f);    // w3
  EXPECT_EQ(at(m->get("output_norm.weight"), 0), 1072.0f);
  EXPECT_EQ(at(m->get("output.weight"), 0), 1080.0f + 2 * 4 * 4 / 2);  // after the freq_cis tables
  EXPECT_EQ(m->get("output.weight").file_offset + 320, static_cast<uint64_t>(28 + 4 * expected_floats()));
}

TEST_F(Llama2cCrafted, TruncatedHeader) {
  const std::string p = path("short.bin");
  testing::write_file(p, std::string(20, '\1'));
  EXPECT_ERROR_NAMES(error_of([&] { io::load_llama2c_model(p, ""); }), p, "header");
}

TEST_F(Llama2cCrafted, TruncatedWeights) {
  const std::string p = write(-1);
  const std::string msg = error_of([&] { io::load_llama2c_model(p, ""); });
  EXPECT_ERROR_NAMES(msg, p, "weights");
  EXPECT_NE(msg.find("truncated"), std::string::npos) << msg;
}

TEST_F(Llama2cCrafted, FileLongerThanHeaderImplies) {
  const std::string p = write(+3);
  const std::string msg = error_of([&] { io::load_llama2c_model(p, ""); });
  EXPECT_ERROR_NAMES(msg, p, "weights");
  EXPECT_NE(msg.find("12 bytes left over"), std::string::npos) << msg;
}

TEST_F(Llama2cCrafted, WrongVocabSignIsCaught) {
  // An unshared checkpoint read as shared (or the reverse) leaves bytes over / runs short.
  h_[5] = -10;
  const std::string p = write();
  testing::Bytes b;
  b.i32(10);
  auto bytes = testing::read_file(p);
  std::memcpy(bytes.data() + 20, b.b.data(), 4);
  testing::write_file(p, bytes);
  EXPECT_ERROR_NAMES(error_of([&] { io::load_llama2c_model(p, ""); }), p, "weights");
}

TEST_F(Llama2cCrafted, AbsurdDims) {
  struct Case {
    int idx;
    int32_t value;
    const char* field;
  } cases[] = {{0, 1000000000, "header.dim"},   {0, 0, "header.dim"},         {1, -5, "header.hidden_dim"},
               {2, 100000, "header.n_layers"},  {3, 0, "header.n_heads"},     {4, 3, "header.n_kv_heads"},
               {5, 0, "header.vocab_size"},     {5, INT32_MIN, "header.vocab_size"}, {6, -1, "header.seq_len"},
               {3, 3, "header.n_heads"}};
  for (const auto& c : cases) {
    SCOPED_TRACE(c.field);
    int32_t saved = h_[c.idx];
    h_[c.idx] = c.value;
    testing::Bytes b;
    for (int32_t v : h_) b.i32(v);
    b.zeros(4096);
    const std::string p = path("bad.bin");
    testing::write_file(p, b.b);
    EXPECT_ERROR_NAMES(error_of([&] { io::load_llama2c_model(p, ""); }), p, c.field);
    h_[c.idx] = saved;
  }
}

TEST_F(Llama2cCrafted, TokenizerSizeMismatch) {
  const std::string tok = std::string(LOWBIT_SHARED_DIR) + "/models/stories260K/tok512.bin";
  if (!testing::fs::exists(tok)) GTEST_SKIP() << tok << " not found";
  const std::string p = write();  // vocab 10
  const std::string msg = error_of([&] { io::load_llama2c_model(p, tok); });
  EXPECT_NE(msg.find("tok512.bin"), std::string::npos) << msg;
  EXPECT_NE(msg.find("vocab"), std::string::npos) << msg;
}

}  // namespace
}  // namespace lowbit
