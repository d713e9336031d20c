// Synthetic models: the tiny architecture loads through load_model with the expected config and shapes, the same
// seed gives the same bytes, weights have the promised statistics, and the `lowbit synth` verb works.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <cstring>

#include "core/half.h"
#include "io/gguf.h"
#include "io/gguf_writer.h"
#include "io/synth.h"
#include "io_testing.h"
#include "lowbit/model_file.h"

namespace lowbit {
namespace {

using testing::error_of;

class Synth : public testing::TempDirTest {
 protected:
  std::string make(const std::string& name, DType dt = DType::F32, uint64_t seed = 1, int layers = 0,
                   const std::string& arch = "tiny") {
    io::SynthOptions o;
    o.arch = arch;
    o.dtype = dt;
    o.seed = seed;
    o.layers = layers;
    o.out = path(name);
    io::write_synth_model(o);
    return o.out;
  }
};

TEST_F(Synth, TinyLoads) {
  const std::string p = make("tiny.gguf");
  auto m = load_model(p);
  const io::SynthArch& a = io::synth_arch("tiny");
  const ModelConfig& c = m->config;
  EXPECT_EQ(m->format, "gguf");
  EXPECT_EQ(c.arch, "llama");
  EXPECT_EQ(c.name, "lowbit-synth-tiny");
  EXPECT_EQ(c.dim, a.dim);
  EXPECT_EQ(c.n_layers, a.n_layers);
  EXPECT_EQ(c.n_heads, a.n_heads);
  EXPECT_EQ(c.n_kv_heads, a.n_kv_heads);
  EXPECT_EQ(c.head_dim, a.dim / a.n_heads);
  EXPECT_EQ(c.ffn_dim, a.ffn_dim);
  EXPECT_EQ(c.n_vocab, a.n_vocab);
  EXPECT_EQ(c.context_length, a.context);
  EXPECT_FLOAT_EQ(c.norm_eps, a.norm_eps);
  EXPECT_FLOAT_EQ(c.rope_theta, a.rope_theta);
  EXPECT_FALSE(c.tied_embeddings);
  EXPECT_FALSE(c.qkv_bias);
  EXPECT_EQ(m->tensors.size(), 3u + 9u * static_cast<size_t>(a.n_layers));
  EXPECT_EQ(m->get("blk.1.attn_k.weight").shape,
            (std::vector<int64_t>{a.n_kv_heads * (a.dim / a.n_heads), a.dim}));
  EXPECT_EQ(m->get("blk.0.ffn_down.weight").shape, (std::vector<int64_t>{a.dim, a.ffn_dim}));
  EXPECT_EQ(m->get("output.weight").shape, (std::vector<int64_t>{a.n_vocab, a.dim}));

  // The vocabulary: unk/bos/eos, 256 byte tokens, unique filler.
  const TokenizerSpec& t = m->tokenizer;
  EXPECT_EQ(t.model, "llama");
  ASSERT_EQ(t.tokens.size(), static_cast<size_t>(a.n_vocab));
  EXPECT_EQ(t.tokens[0], "<unk>");
  EXPECT_EQ(t.tokens[1], "<s>");
  EXPECT_EQ(t.tokens[2], "</s>");
  EXPECT_EQ(t.tokens[3], "<0x00>");
  EXPECT_EQ(t.tokens[3 + 0x0A], "<0x0A>");
  EXPECT_EQ(t.tokens[258], "<0xFF>");
  EXPECT_EQ(t.types[0], 2);
  EXPECT_EQ(t.types[1], 3);
  EXPECT_EQ(t.types[100], 6);
  EXPECT_EQ(t.types[300], 1);
  EXPECT_EQ(t.bos, 1);
  EXPECT_EQ(t.eos, 2);
  EXPECT_EQ(t.unk, 0);
  std::vector<std::string> sorted = t.tokens;
  std::sort(sorted.begin(), sorted.end());
  EXPECT_EQ(std::adjacent_find(sorted.begin(), sorted.end()), sorted.end()) << "duplicate token";

  auto f = io::GgufFile::open(p);
  EXPECT_EQ(f->get_int("lowbit.synth.seed"), 1);
  EXPECT_EQ(f->get_string("lowbit.synth.arch"), "tiny");
  EXPECT_EQ(f->get_int("general.file_type"), 0);
}

TEST_F(Synth, WeightStatistics) {
  auto m = load_model(make("s.gguf"));
  const TensorInfo& w = m->get("token_embd.weight");
  const size_t n = static_cast<size_t>(w.numel());
  double sum = 0, sq = 0;
  for (size_t i = 0; i < n; ++i) {
    float x;
    std::memcpy(&x, w.data + 4 * i, 4);
    sum += x;
    sq += static_cast<double>(x) * x;
  }
  const double mean = sum / static_cast<double>(n), sd = std::sqrt(sq / static_cast<double>(n) - mean * mean);
  EXPECT_NEAR(mean, 0.0, 0.001);
  EXPECT_NEAR(sd, 0.02, 0.0005);
  const TensorInfo& norm = m->get("blk.0.attn_norm.weight");
  for (int64_t i = 0; i < norm.numel(); ++i) {
    float x;
    std::memcpy(&x, norm.data + 4 * i, 4);
    ASSERT_EQ(x, 1.0f);
  }
  // Different tensors get different streams.
  EXPECT_NE(std::memcmp(m->get("blk.0.attn_q.weight").data, m->get("blk.1.attn_q.weight").data, 256), 0);
}

TEST_F(Synth, SameSeedSameBytes) {
  const auto a = testing::read_file(make("a.gguf", DType::F16, 42));
  const auto b = testing::read_file(make("b.gguf", DType::F16, 42));
  const auto c = testing::read_file(make("c.gguf", DType::F16, 43));
  ASSERT_GT(a.size(), 100000u);
  EXPECT_TRUE(a == b);
  ASSERT_EQ(a.size(), c.size());
  EXPECT_FALSE(a == c);
}

TEST_F(Synth, HalfTypesMatchF32) {
  auto f32 = load_model(make("f32.gguf", DType::F32, 7));
  auto f16 = load_model(make("f16.gguf", DType::F16, 7));
  auto bf16 = load_model(make("bf16.gguf", DType::BF16, 7));
  const TensorInfo& a = f32->get("blk.0.ffn_up.weight");
  const TensorInfo& h = f16->get("blk.0.ffn_up.weight");
  const TensorInfo& b = bf16->get("blk.0.ffn_up.weight");
  EXPECT_EQ(h.dtype, DType::F16);
  EXPECT_EQ(b.dtype, DType::BF16);
  EXPECT_EQ(f16->get("blk.0.ffn_norm.weight").dtype, DType::F32);  // norms stay f32
  for (int64_t i = 0; i < a.numel(); ++i) {
    float x;
    uint16_t hx, bx;
    std::memcpy(&x, a.data + 4 * i, 4);
    std::memcpy(&hx, h.data + 2 * i, 2);
    std::memcpy(&bx, b.data + 2 * i, 2);
    ASSERT_EQ(hx, f32_to_f16(x)) << i;
    ASSERT_EQ(bx, f32_to_bf16(x)) << i;
  }
  EXPECT_EQ(io::GgufFile::open(path("f16.gguf"))->get_int("general.file_type"), 1);
  EXPECT_EQ(io::GgufFile::open(path("bf16.gguf"))->get_int("general.file_type"), 32);
}

TEST_F(Synth, LayersOverride) {
  auto m = load_model(make("l5.gguf", DType::F32, 1, 5));
  EXPECT_EQ(m->config.n_layers, 5);
  EXPECT_NE(m->find("blk.4.ffn_down.weight"), nullptr);
  EXPECT_EQ(io::GgufFile::open(path("l5.gguf"))->get_int("lowbit.synth.layers"), 5);
}

TEST_F(Synth, ArchTable) {
  const io::SynthArch& l7 = io::synth_arch("llama-7b");
  EXPECT_EQ(l7.dim, 4096);
  EXPECT_EQ(l7.n_layers, 32);
  EXPECT_EQ(l7.ffn_dim, 11008);
  const io::SynthArch& l70 = io::synth_arch("llama-70b");
  EXPECT_EQ(l70.n_kv_heads, 8);
  EXPECT_EQ(l70.ffn_dim, 28672);
  const io::SynthArch& l1 = io::synth_arch("llama-1b");
  EXPECT_EQ(l1.dim, 2048);
  EXPECT_EQ(l1.n_layers, 16);
  EXPECT_EQ(l1.n_kv_heads, 8);
  const io::SynthArch& tl = io::synth_arch("tinyllama-1.1b");
  EXPECT_EQ(tl.dim, 2048);
  EXPECT_EQ(tl.n_layers, 22);
  EXPECT_EQ(tl.n_heads, 32);
  EXPECT_EQ(tl.n_kv_heads, 4);
  EXPECT_EQ(tl.ffn_dim, 5632);
  EXPECT_EQ(tl.context, 2048);
  EXPECT_FALSE(tl.tied);
  const io::SynthArch& q = io::synth_arch("qwen2-0.5b");
  EXPECT_TRUE(q.qkv_bias);
  EXPECT_TRUE(q.tied);
  for (const auto& a : io::synth_archs()) {
    EXPECT_EQ(a.dim % a.n_heads, 0) << a.name;
    EXPECT_EQ(a.n_heads % a.n_kv_heads, 0) << a.name;
    EXPECT_GE(a.n_vocab, 260) << a.name;
  }
  const std::string msg = error_of([] { io::synth_arch("llama-9b"); });
  EXPECT_NE(msg.find("llama-9b"), std::string::npos) << msg;
  EXPECT_NE(msg.find("llama-7b"), std::string::npos) << msg;
}

// --size: llama.cpp's architecture string and a size name the same entries; unknown ones list what there is.
TEST(SynthArchTable, ArchAndSize) {
  EXPECT_EQ(io::synth_arch("qwen3", "tiny").name, "qwen3-tiny");
  EXPECT_EQ(io::synth_arch("qwen3", "0.6b").name, "qwen3-0.6b");
  EXPECT_EQ(io::synth_arch("llama", "7b").name, "llama-7b");
  EXPECT_EQ(io::synth_arch("llama", "tiny").name, "tiny");
  EXPECT_EQ(io::synth_arch("qwen2", "0.5b").name, "qwen2-0.5b");
  const std::string size_msg = error_of([] { io::synth_arch("qwen3", "8b"); });
  EXPECT_NE(size_msg.find("--size"), std::string::npos) << size_msg;
  EXPECT_NE(size_msg.find("tiny, 0.6b"), std::string::npos) << size_msg;
  EXPECT_EQ(io::synth_arch("gemma2", "tiny").name, "gemma2-tiny");
  EXPECT_EQ(io::synth_arch("gemma3", "4b").name, "gemma3-4b");
  const std::string arch_msg = error_of([] { io::synth_arch("falcon", "tiny"); });
  EXPECT_NE(arch_msg.find("\"falcon\""), std::string::npos) << arch_msg;
  EXPECT_NE(arch_msg.find("llama, qwen2, qwen3, gemma2, gemma3"), std::string::npos) << arch_msg;
}

TEST_F(Synth, Qwen2ShapesOneLayer) {
  // Real qwen2-0.5b width (vocab 151936), one layer: biases, tied embeddings, qwen2 keys.
  auto m = load_model(make("q.gguf", DType::BF16, 3, 1, "qwen2-0.5b"));
  EXPECT_EQ(m->config.arch, "qwen2");
  EXPECT_TRUE(m->config.qkv_bias);
  EXPECT_TRUE(m->config.tied_embeddings);
  EXPECT_EQ(m->config.n_vocab, 151936);
  EXPECT_EQ(m->config.rope_style, RopeStyle::HalfSplit);
  EXPECT_FLOAT_EQ(m->config.rope_theta, 1e6f);
  EXPECT_EQ(m->get("blk.0.attn_k.bias").shape, (std::vector<int64_t>{128}));
  EXPECT_EQ(m->tokenizer.tokens.size(), 151936u);
}

// MoE: merged 3-D expert tensors, the router, Qwen2-MoE's shared expert; an expert count or top-k that does not
// match the tensors is one line naming the key or tensor.
TEST_F(Synth, MoeShapesAndMismatchedExpertCounts) {
  auto m = load_model(make("moe.gguf", DType::F32, 1, 1, "qwen2moe-tiny"));
  EXPECT_EQ(m->config.arch, "qwen2moe");
  EXPECT_EQ(m->config.n_experts, 8);
  EXPECT_EQ(m->config.n_experts_used, 4);
  EXPECT_FALSE(m->config.experts_renorm);
  EXPECT_EQ(m->config.shared_ffn_dim, 512);
  EXPECT_EQ(m->get("blk.0.ffn_gate_exps.weight").shape, (std::vector<int64_t>{8, 256, 256}));
  EXPECT_EQ(m->get("blk.0.ffn_down_exps.weight").shape, (std::vector<int64_t>{8, 256, 256}));
  EXPECT_EQ(m->get("blk.0.ffn_gate_inp.weight").shape, (std::vector<int64_t>{8, 256}));
  EXPECT_EQ(m->get("blk.0.ffn_gate_inp_shexp.weight").shape, (std::vector<int64_t>{256}));
  EXPECT_EQ(m->find("blk.0.ffn_gate.weight"), nullptr);
  auto mix = load_model(make("mix.gguf", DType::F32, 1, 1, "mixtral-tiny"));
  EXPECT_EQ(mix->config.arch, "llama");
  EXPECT_EQ(mix->config.n_experts, 8);
  EXPECT_EQ(mix->config.expert_ffn_dim, mix->config.ffn_dim);
  EXPECT_TRUE(mix->config.experts_renorm);

  // The same file with its keys changed: expert_count 4 against 8 experts' tensors, top-k 9 of 8.
  auto rewrite = [&](const std::string& key, uint32_t value) {
    auto g = io::GgufFile::open(path("moe.gguf"));
    io::GgufWriter w;
    for (const auto& [k, v] : g->kv())
      if (k == key) w.set_u32(k, value);
      else w.set(k, v);
    for (const io::GgufTensor& t : g->tensors()) {
      std::vector<int64_t> shape(t.ne.rbegin(), t.ne.rend());
      const std::byte* d = g->tensor_data(t);
      w.add_tensor(t.name, t.dtype, shape, std::vector<std::byte>(d, d + t.nbytes));
    }
    const std::string out = path("bad.gguf");
    w.write(out);
    return error_of([&] { load_model(out); });
  };
  const std::string count_msg = rewrite("qwen2moe.expert_count", 4);
  EXPECT_NE(count_msg.find("ffn_gate_inp.weight"), std::string::npos) << count_msg;
  EXPECT_NE(count_msg.find("expected [4, 256]"), std::string::npos) << count_msg;
  EXPECT_EQ(count_msg.find('\n'), std::string::npos) << count_msg;
  const std::string topk_msg = rewrite("qwen2moe.expert_used_count", 9);
  EXPECT_NE(topk_msg.find("qwen2moe.expert_used_count"), std::string::npos) << topk_msg;
  EXPECT_NE(topk_msg.find("[1, 8]"), std::string::npos) << topk_msg;
  EXPECT_EQ(topk_msg.find('\n'), std::string::npos) << topk_msg;
}

TEST_F(Synth, RejectsBadOptions) {
  io::SynthOptions o;
  o.out = path("x.gguf");
  o.dtype = DType::Q4_0;
  EXPECT_NE(error_of([&] { io::write_synth_model(o); }).find("--dtype"), std::string::npos);
  o.dtype = DType::F32;
  o.arch = "nope";
  EXPECT_NE(error_of([&] { io::write_synth_model(o); }).find("--arch"), std::string::npos);
  EXPECT_FALSE(testing::fs::exists(o.out));
}

#ifdef LOWBIT_BINARY
TEST_F(Synth, CliVerb) {
  if (!testing::fs::exists(LOWBIT_BINARY)) GTEST_SKIP() << LOWBIT_BINARY << " not built";
  const std::string out = path("cli.gguf");
  const std::string cmd = std::string(LOWBIT_BINARY) + " synth --arch tiny --dtype bf16 --seed 9 --layers 3 -o '" +
                          out + "' > '" + path("stdout.txt") + "' 2>&1";
  ASSERT_EQ(std::system(cmd.c_str()), 0) << cmd;
  auto m = load_model(out);
  EXPECT_EQ(m->config.n_layers, 3);
  EXPECT_EQ(m->get("blk.0.attn_q.weight").dtype, DType::BF16);
  const auto log = testing::read_file(path("stdout.txt"));
  EXPECT_NE(std::string(log.begin(), log.end()).find("wrote"), std::string::npos);
  // The same through the library gives the same bytes.
  EXPECT_TRUE(testing::read_file(out) == testing::read_file(make("lib.gguf", DType::BF16, 9, 3)));

  const std::string bad = std::string(LOWBIT_BINARY) + " synth --arch nope -o '" + path("n.gguf") + "' > '" +
                          path("err.txt") + "' 2>&1";
  EXPECT_NE(std::system(bad.c_str()), 0);
  const auto err = testing::read_file(path("err.txt"));
  EXPECT_NE(std::string(err.begin(), err.end()).find("unknown architecture"), std::string::npos);
}
#endif

}  // namespace
}  // namespace lowbit
