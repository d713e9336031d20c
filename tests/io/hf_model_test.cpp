// Hugging Face directories (config.json + safetensors): the real TinyStories-656K against its GGUF conversion,
// crafted small models (sharded, tied, Qwen2 biases, Qwen3 q/k norms, f16/bf16), malformed input and unknown
// architectures (HF and GGUF).
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "io/gguf_writer.h"
#include "io/loaders.h"
#include "io/safetensors.h"
#include "io/hf_testing.h"
#include "io_testing.h"
#include "lowbit/model_file.h"

namespace lowbit {
namespace {

using nlohmann::json;
using testing::error_of;
using testing::TempDirTest;
using testing::write_file;

using testing::make_safetensors;
using testing::pattern_bytes;
using testing::SmallHf;
using testing::StTensor;

const TensorInfo& get(const ModelFile& m, const std::string& name) { return m.get(name); }

bool same_bytes(const TensorInfo& a, const StTensor& b) {
  return a.nbytes == b.bytes.size() && std::memcmp(a.data, b.bytes.data(), a.nbytes) == 0;
}

// --- The real model -------------------------------------------------------------------------------------------

const std::string kShared = LOWBIT_SHARED_DIR;

TEST(HfModel, TinyStoriesConfig) {
  const std::string dir = kShared + "/models/TinyStories-656K";
  if (!testing::fs::exists(dir)) GTEST_SKIP() << dir << " not found";
  auto m = load_model(dir);
  EXPECT_EQ(m->format, "safetensors");
  const ModelConfig& c = m->config;
  EXPECT_EQ(c.arch, "llama");
  EXPECT_EQ(c.dim, 128);
  EXPECT_EQ(c.n_layers, 2);
  EXPECT_EQ(c.n_heads, 8);
  EXPECT_EQ(c.n_kv_heads, 4);
  EXPECT_EQ(c.head_dim, 16);
  EXPECT_EQ(c.rope_dim, 16);
  EXPECT_EQ(c.ffn_dim, 384);
  EXPECT_EQ(c.n_vocab, 2048);
  EXPECT_EQ(c.context_length, 512);
  EXPECT_TRUE(c.tied_embeddings);
  EXPECT_FALSE(c.qkv_bias);
  EXPECT_FLOAT_EQ(c.norm_eps, 1e-6f);
  EXPECT_FLOAT_EQ(c.rope_theta, 10000.0f);
  EXPECT_EQ(c.rope_style, RopeStyle::HalfSplit);
  EXPECT_EQ(c.rope_scaling.type, "none");
  EXPECT_EQ(m->find("output.weight"), nullptr);
  EXPECT_EQ(m->tensors.size(), 1u + 1u + 2u * 9u);
  EXPECT_EQ(m->tokenizer.model, "hf-json");
  EXPECT_EQ(m->tokenizer.bos, 1);
  EXPECT_EQ(m->tokenizer.eos, 2);
  bool has_model_type = false;
  for (const auto& e : m->metadata) has_model_type |= e.key == "model_type" && e.value == "\"llama\"";
  EXPECT_TRUE(has_model_type);
}

TEST(HfModel, TinyStoriesTensorsEqualGguf) {
  const std::string dir = kShared + "/models/TinyStories-656K";
  const std::string gguf = kShared + "/models/TinyStories-656K-gguf/TinyStories-656K-f32.gguf";
  if (!testing::fs::exists(dir) || !testing::fs::exists(gguf)) GTEST_SKIP() << "TinyStories fixtures not found";
  auto hf = load_model(dir);
  auto gg = load_model(gguf);
  ASSERT_EQ(hf->tensors.size(), gg->tensors.size());
  const ModelConfig& c = hf->config;
  int checked = 0, permuted = 0;
  for (const auto& g : gg->tensors) {
    SCOPED_TRACE(g.name);
    const TensorInfo* h = hf->find(g.name);
    ASSERT_NE(h, nullptr);
    ASSERT_EQ(h->shape, g.shape);
    ASSERT_EQ(h->dtype, DType::F32);
    ASSERT_EQ(h->nbytes, g.nbytes);
    const bool is_q = g.name.find(".attn_q.") != std::string::npos;
    const bool is_k = g.name.find(".attn_k.") != std::string::npos;
    if (!is_q && !is_k) {
      EXPECT_EQ(std::memcmp(h->data, g.data, g.nbytes), 0);
      ++checked;
      continue;
    }
    // The GGUF converter permuted Q/K rows for interleaved RoPE: per head, GGUF row 2i+half is HF row
    // half*d/2 + i. Un-permuting must give the HF bytes exactly; the raw bytes must differ.
    EXPECT_NE(std::memcmp(h->data, g.data, g.nbytes), 0);
    const int heads = is_q ? c.n_heads : c.n_kv_heads, d = c.head_dim;
    const size_t row = static_cast<size_t>(g.shape[1]) * 4;
    for (int hd = 0; hd < heads; ++hd)
      for (int half = 0; half < 2; ++half)
        for (int i = 0; i < d / 2; ++i) {
          const size_t hf_row = static_cast<size_t>(hd * d + half * d / 2 + i);
          const size_t gg_row = static_cast<size_t>(hd * d + 2 * i + half);
          ASSERT_EQ(std::memcmp(h->data + hf_row * row, g.data + gg_row * row, row), 0)
              << "head " << hd << " half " << half << " i " << i;
        }
    ++permuted;
  }
  EXPECT_EQ(checked, 1 + 1 + 2 * 7);
  EXPECT_EQ(permuted, 4);
}

// --- Crafted models -------------------------------------------------------------------------------------------

class HfCrafted : public TempDirTest {};

TEST_F(HfCrafted, LoadsAndRenames) {
  SmallHf s;
  s.write(dir_.string());
  auto m = io::load_hf_model(dir_.string());
  EXPECT_EQ(m->config.dim, 16);
  EXPECT_EQ(m->config.n_kv_heads, 2);
  EXPECT_EQ(m->config.head_dim, 4);
  EXPECT_FLOAT_EQ(m->config.rope_theta, 500000.0f);
  EXPECT_FALSE(m->config.tied_embeddings);
  EXPECT_EQ(m->config.rope_style, RopeStyle::HalfSplit);
  const auto ts = s.tensors();
  auto hf = [&](const std::string& n) -> const StTensor& {
    for (const auto& t : ts)
      if (t.name == n) return t;
    throw std::runtime_error("no " + n);
  };
  EXPECT_TRUE(same_bytes(get(*m, "token_embd.weight"), hf("model.embed_tokens.weight")));
  EXPECT_TRUE(same_bytes(get(*m, "output.weight"), hf("lm_head.weight")));
  EXPECT_TRUE(same_bytes(get(*m, "output_norm.weight"), hf("model.norm.weight")));
  const std::pair<const char*, const char*> roles[] = {
      {"self_attn.q_proj.weight", "attn_q.weight"},     {"self_attn.k_proj.weight", "attn_k.weight"},
      {"self_attn.v_proj.weight", "attn_v.weight"},     {"self_attn.o_proj.weight", "attn_output.weight"},
      {"mlp.gate_proj.weight", "ffn_gate.weight"},      {"mlp.up_proj.weight", "ffn_up.weight"},
      {"mlp.down_proj.weight", "ffn_down.weight"},      {"input_layernorm.weight", "attn_norm.weight"},
      {"post_attention_layernorm.weight", "ffn_norm.weight"}};
  for (int l = 0; l < 2; ++l)
    for (const auto& [from, to] : roles) {
      const std::string g = "blk." + std::to_string(l) + "." + to;
      EXPECT_TRUE(same_bytes(get(*m, g), hf("model.layers." + std::to_string(l) + "." + from))) << g;
    }
  // Zero-copy: the views point into the mapping.
  const TensorInfo& e = get(*m, "token_embd.weight");
  EXPECT_TRUE(m->owned.empty());
  EXPECT_EQ(m->mappings.size(), 1u);
  EXPECT_EQ(e.file, dir_.string() + "/model.safetensors");
  EXPECT_EQ(m->tokenizer.model, "none");  // no tokenizer.json in this directory
}

TEST_F(HfCrafted, MisalignedDataIsCopied) {
  SmallHf s;
  write_file(path("config.json"), s.config.dump());
  const auto ts = s.tensors();
  write_file(path("model.safetensors"), make_safetensors(ts, {}, false));
  auto m = io::load_hf_model(dir_.string());
  EXPECT_FALSE(m->owned.empty());
  const TensorInfo& e = get(*m, "token_embd.weight");
  EXPECT_EQ(reinterpret_cast<uintptr_t>(e.data) % 4, 0u);
  EXPECT_TRUE(same_bytes(e, ts[0]));
}

TEST_F(HfCrafted, TiedKeepsOneMatrix) {
  SmallHf s;
  s.config["tie_word_embeddings"] = true;
  s.write(dir_.string());
  auto m = io::load_hf_model(dir_.string());
  EXPECT_TRUE(m->config.tied_embeddings);
  EXPECT_EQ(m->find("output.weight"), nullptr);
  EXPECT_NE(m->find("token_embd.weight"), nullptr);
}

TEST_F(HfCrafted, HalfPrecisionAndQwen2Biases) {
  for (const char* dt : {"F16", "BF16"}) {
    SmallHf s;
    s.dtype = dt;
    s.biases = true;
    s.config["model_type"] = "qwen2";
    s.config["architectures"] = {"Qwen2ForCausalLM"};
    s.write(dir_.string());
    auto m = io::load_hf_model(dir_.string());
    EXPECT_EQ(m->config.arch, "qwen2");
    EXPECT_TRUE(m->config.qkv_bias);
    EXPECT_EQ(get(*m, "blk.1.attn_k.bias").shape, std::vector<int64_t>{8});
    EXPECT_EQ(get(*m, "blk.0.ffn_up.weight").dtype, std::string(dt) == "F16" ? DType::F16 : DType::BF16);
  }
}

// Qwen3: per-head q/k norms (HF self_attn.q_norm / k_norm -> GGUF attn_q_norm / attn_k_norm) and a head_dim that is
// not hidden_size / heads.
TEST_F(HfCrafted, Qwen3QkNormsAndHeadDim) {
  SmallHf s;
  s.head_dim = 8;
  s.qk_norm = true;
  s.config["model_type"] = "qwen3";
  s.config["architectures"] = {"Qwen3ForCausalLM"};
  s.config["head_dim"] = 8;
  s.write(dir_.string());
  auto m = io::load_hf_model(dir_.string());
  EXPECT_EQ(m->config.arch, "qwen3");
  EXPECT_TRUE(m->config.qk_norm);
  EXPECT_FALSE(m->config.qkv_bias);
  EXPECT_EQ(m->config.head_dim, 8);
  EXPECT_EQ(get(*m, "blk.1.attn_q_norm.weight").shape, std::vector<int64_t>{8});
  EXPECT_EQ(get(*m, "blk.0.attn_k_norm.weight").shape, std::vector<int64_t>{8});
  EXPECT_EQ(get(*m, "blk.0.attn_q.weight").shape, (std::vector<int64_t>{32, 16}));
  EXPECT_EQ(get(*m, "blk.0.attn_output.weight").shape, (std::vector<int64_t>{16, 32}));
  // Without the norms the checkpoint is incomplete for its architecture: one clear error naming the tensor.
  SmallHf bare = s;
  bare.qk_norm = false;
  bare.write(dir_.string());
  EXPECT_NE(error_of([&] { io::load_hf_model(dir_.string()); }).find("attn_q_norm"), std::string::npos);
}

// An architecture lowbit does not run: one line naming the file, the key, the architecture and those it knows.
TEST_F(HfCrafted, UnknownArchitectureNamesTheKnownOnes) {
  SmallHf s;
  s.config["model_type"] = "falcon";
  s.config["architectures"] = {"FalconForCausalLM"};
  s.write(dir_.string());
  const std::string msg = error_of([&] { io::load_hf_model(dir_.string()); });
  EXPECT_ERROR_NAMES(msg, "config.json", "model_type");
  for (const char* known : {"\"falcon\"", "llama", "mistral", "qwen2", "qwen3", "gemma2", "gemma3_text"}) EXPECT_NE(msg.find(known), std::string::npos) << msg;
  EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
}

TEST(GgufArchitecture, UnknownArchitectureNamesTheKnownOnes) {
  const std::string p = (std::filesystem::temp_directory_path() / ("lowbit_arch_" + std::to_string(::getpid()) + ".gguf")).string();
  io::GgufWriter w;
  w.set_string("general.architecture", "falcon");
  w.write(p);
  const std::string msg = error_of([&] { load_model(p); });
  std::filesystem::remove(p);
  EXPECT_ERROR_NAMES(msg, p, "general.architecture");
  for (const char* known : {"\"falcon\"", "llama", "mistral", "qwen2", "qwen3", "gemma2", "gemma3"}) EXPECT_NE(msg.find(known), std::string::npos) << msg;
  EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
}

TEST_F(HfCrafted, ShardedIndex) {
  SmallHf s;
  write_file(path("config.json"), s.config.dump());
  auto ts = s.tensors();
  std::vector<StTensor> a(ts.begin(), ts.begin() + 7), b(ts.begin() + 7, ts.end());
  write_file(path("model-00001-of-00002.safetensors"), make_safetensors(a));
  write_file(path("model-00002-of-00002.safetensors"), make_safetensors(b));
  json idx = {{"metadata", {{"total_size", 0}}}, {"weight_map", json::object()}};
  for (const auto& t : a) idx["weight_map"][t.name] = "model-00001-of-00002.safetensors";
  for (const auto& t : b) idx["weight_map"][t.name] = "model-00002-of-00002.safetensors";
  write_file(path("model.safetensors.index.json"), idx.dump());
  auto m = io::load_hf_model(dir_.string());
  EXPECT_EQ(m->mappings.size(), 2u);
  EXPECT_EQ(m->tensors.size(), ts.size());
  EXPECT_EQ(get(*m, "output.weight").file, path("model-00002-of-00002.safetensors"));

  // An index naming a tensor its shard lacks.
  idx["weight_map"]["model.layers.0.self_attn.q_proj.weight"] = "model-00002-of-00002.safetensors";
  write_file(path("model.safetensors.index.json"), idx.dump());
  EXPECT_ERROR_NAMES(error_of([&] { io::load_hf_model(dir_.string()); }), "model-00002-of-00002.safetensors",
                     "model.layers.0.self_attn.q_proj.weight");
}

TEST_F(HfCrafted, RopeScaling) {
  SmallHf s;
  s.config["rope_scaling"] = {{"rope_type", "llama3"}, {"factor", 32.0}, {"low_freq_factor", 1.0},
                              {"high_freq_factor", 4.0}, {"original_max_position_embeddings", 8192}};
  s.write(dir_.string());
  auto m = io::load_hf_model(dir_.string());
  EXPECT_EQ(m->config.rope_scaling.type, "llama3");
  EXPECT_FLOAT_EQ(m->config.rope_scaling.factor, 32.0f);
  EXPECT_EQ(m->config.rope_scaling.original_context, 8192);

  s.config["rope_scaling"] = {{"type", "linear"}, {"factor", 2}};
  s.write(dir_.string());
  m = io::load_hf_model(dir_.string());
  EXPECT_EQ(m->config.rope_scaling.type, "linear");
  EXPECT_FLOAT_EQ(m->config.rope_scaling.factor, 2.0f);

  s.config["rope_scaling"] = {{"type", "yarn"}, {"factor", 2}};
  s.write(dir_.string());
  EXPECT_ERROR_NAMES(error_of([&] { io::load_hf_model(dir_.string()); }), "config.json", "rope_scaling.type");
}

// --- Malformed input ------------------------------------------------------------------------------------------

TEST_F(HfCrafted, MissingConfigKey) {
  SmallHf s;
  s.config.erase("hidden_size");
  s.write(dir_.string());
  const std::string msg = error_of([&] { io::load_hf_model(dir_.string()); });
  EXPECT_ERROR_NAMES(msg, dir_.string() + "/config.json", "hidden_size");
  EXPECT_NE(msg.find("missing"), std::string::npos) << msg;
}

TEST_F(HfCrafted, WrongTypedConfigValue) {
  SmallHf s;
  s.config["num_hidden_layers"] = "two";
  s.write(dir_.string());
  std::string msg = error_of([&] { io::load_hf_model(dir_.string()); });
  EXPECT_ERROR_NAMES(msg, dir_.string() + "/config.json", "num_hidden_layers");
  EXPECT_NE(msg.find("expected an integer"), std::string::npos) << msg;

  s = SmallHf{};
  s.config["rms_norm_eps"] = "1e-5";
  s.write(dir_.string());
  EXPECT_ERROR_NAMES(error_of([&] { io::load_hf_model(dir_.string()); }), "config.json", "rms_norm_eps");

  s = SmallHf{};
  s.config["tie_word_embeddings"] = 1;
  s.write(dir_.string());
  EXPECT_ERROR_NAMES(error_of([&] { io::load_hf_model(dir_.string()); }), "config.json", "tie_word_embeddings");

  s = SmallHf{};
  s.config["num_attention_heads"] = -4;
  s.write(dir_.string());
  EXPECT_ERROR_NAMES(error_of([&] { io::load_hf_model(dir_.string()); }), "config.json", "num_attention_heads");

  s = SmallHf{};
  s.config["model_type"] = "gpt_neox";
  s.write(dir_.string());
  EXPECT_ERROR_NAMES(error_of([&] { io::load_hf_model(dir_.string()); }), "config.json", "model_type");
}

TEST_F(HfCrafted, ConfigNotJson) {
  SmallHf s;
  s.write(dir_.string());
  write_file(path("config.json"), "{\"hidden_size\": 16,\n");
  EXPECT_ERROR_NAMES(error_of([&] { io::load_hf_model(dir_.string()); }), path("config.json"), "invalid JSON");
  testing::fs::remove(path("config.json"));
  EXPECT_ERROR_NAMES(error_of([&] { io::load_hf_model(dir_.string()); }), path("config.json"), "missing");
}

TEST_F(HfCrafted, ShapeDisagreesWithConfig) {
  SmallHf s;
  s.config["intermediate_size"] = 32;
  s.write(dir_.string());
  EXPECT_ERROR_NAMES(error_of([&] { io::load_hf_model(dir_.string()); }), dir_.string(), "blk.0.ffn_gate.weight");
}

TEST_F(HfCrafted, UnexpectedTensor) {
  SmallHf s;
  write_file(path("config.json"), s.config.dump());
  auto ts = s.tensors();
  ts.push_back({"model.vision_tower.weight", "F32", {2}, std::vector<uint8_t>(8)});
  write_file(path("model.safetensors"), make_safetensors(ts));
  EXPECT_ERROR_NAMES(error_of([&] { io::load_hf_model(dir_.string()); }), path("model.safetensors"),
                     "model.vision_tower.weight");
}

TEST_F(HfCrafted, NoWeights) {
  SmallHf s;
  write_file(path("config.json"), s.config.dump());
  EXPECT_ERROR_NAMES(error_of([&] { io::load_hf_model(dir_.string()); }), dir_.string(), "model.safetensors");
}

class Safetensors : public TempDirTest {
 protected:
  std::string st(const std::vector<uint8_t>& bytes) {
    const std::string p = path("x.safetensors");
    write_file(p, bytes);
    return p;
  }
  std::vector<StTensor> one() { return {{"w", "F32", {2, 3}, pattern_bytes(24, 7)}}; }
};

TEST_F(Safetensors, Valid) {
  auto f = io::SafetensorsFile::open(st(make_safetensors(one())));
  ASSERT_EQ(f->tensors().size(), 1u);
  EXPECT_EQ(f->tensors()[0].shape, (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(std::memcmp(f->tensor_data(f->tensors()[0]), pattern_bytes(24, 7).data(), 24), 0);
  ASSERT_EQ(f->metadata().size(), 1u);
  EXPECT_EQ(f->metadata()[0].second, "pt");
}

TEST_F(Safetensors, TruncatedHeaderLength) {
  const std::string p = st({1, 2, 3, 4, 5});
  EXPECT_ERROR_NAMES(error_of([&] { io::SafetensorsFile::open(p); }), p, "header length");
}

TEST_F(Safetensors, HeaderLongerThanFile) {
  testing::Bytes b;
  b.u64(1000).raw("{\"w\":{}}");
  const std::string p = st(b.b);
  const std::string msg = error_of([&] { io::SafetensorsFile::open(p); });
  EXPECT_ERROR_NAMES(msg, p, "header length");
  EXPECT_NE(msg.find("1000"), std::string::npos) << msg;
}

TEST_F(Safetensors, TruncatedHeaderJson) {
  auto bytes = make_safetensors(one());
  bytes.resize(30);  // cut inside the JSON; fix the length so only the JSON is wrong
  const uint64_t n = 22;
  std::memcpy(bytes.data(), &n, 8);
  const std::string p = st(bytes);
  EXPECT_ERROR_NAMES(error_of([&] { io::SafetensorsFile::open(p); }), p, "header");
}

TEST_F(Safetensors, OffsetsPastEnd) {
  auto bytes = make_safetensors(one(), [](json& h) { h["w"]["data_offsets"] = {0, 4000}; });
  const std::string p = st(bytes);
  const std::string msg = error_of([&] { io::SafetensorsFile::open(p); });
  EXPECT_ERROR_NAMES(msg, p, "tensor 'w' data_offsets");
  EXPECT_NE(msg.find("past the end"), std::string::npos) << msg;

  // A file cut short in its data section reports the same way.
  bytes = make_safetensors(one());
  bytes.resize(bytes.size() - 4);
  const std::string p2 = st(bytes);
  EXPECT_ERROR_NAMES(error_of([&] { io::SafetensorsFile::open(p2); }), p2, "tensor 'w' data_offsets");
}

TEST_F(Safetensors, ShapeOffsetMismatch) {
  const std::string p = st(make_safetensors(one(), [](json& h) { h["w"]["shape"] = {3, 3}; }));
  const std::string msg = error_of([&] { io::SafetensorsFile::open(p); });
  EXPECT_ERROR_NAMES(msg, p, "tensor 'w' data_offsets");
  EXPECT_NE(msg.find("needs 36"), std::string::npos) << msg;

  const std::string p2 = st(make_safetensors(one(), [](json& h) { h["w"]["data_offsets"] = {8, 4}; }));
  EXPECT_ERROR_NAMES(error_of([&] { io::SafetensorsFile::open(p2); }), p2, "data_offsets");

  const std::string p3 = st(make_safetensors(one(), [](json& h) { h["w"]["shape"] = {2, -3}; }));
  EXPECT_ERROR_NAMES(error_of([&] { io::SafetensorsFile::open(p3); }), p3, "tensor 'w' shape");
}

TEST_F(Safetensors, UnsupportedDtype) {
  for (const char* dt : {"I64", "F8_E4M3", "Q4"}) {
    const std::string p = st(make_safetensors(one(), [&](json& h) { h["w"]["dtype"] = dt; }));
    const std::string msg = error_of([&] { io::SafetensorsFile::open(p); });
    EXPECT_ERROR_NAMES(msg, p, "tensor 'w' dtype");
    EXPECT_NE(msg.find(std::string("\"") + dt + "\""), std::string::npos) << msg;
    EXPECT_NE(msg.find("unsupported"), std::string::npos) << msg;
  }
}

TEST_F(Safetensors, MissingFields) {
  const std::string p = st(make_safetensors(one(), [](json& h) { h["w"].erase("dtype"); }));
  EXPECT_ERROR_NAMES(error_of([&] { io::SafetensorsFile::open(p); }), p, "tensor 'w' dtype");
  const std::string p2 = st(make_safetensors(one(), [](json& h) { h["w"]["data_offsets"] = {0}; }));
  EXPECT_ERROR_NAMES(error_of([&] { io::SafetensorsFile::open(p2); }), p2, "tensor 'w' data_offsets");
  const std::string p3 = st(make_safetensors(one(), [](json& h) { h = json::array(); }));
  EXPECT_ERROR_NAMES(error_of([&] { io::SafetensorsFile::open(p3); }), p3, "header");
}

TEST_F(HfCrafted, SafetensorsErrorsNameTheShard) {
  SmallHf s;
  write_file(path("config.json"), s.config.dump());
  write_file(path("model.safetensors"), make_safetensors(s.tensors(), [](json& h) {
               h["model.norm.weight"]["dtype"] = "F64";
             }));
  EXPECT_ERROR_NAMES(error_of([&] { io::load_hf_model(dir_.string()); }), path("model.safetensors"),
                     "model.norm.weight");
}

}  // namespace
}  // namespace lowbit
