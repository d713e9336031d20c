#include "io/synth.h"

#include <sys/stat.h>

#include <cmath>
#include <cstring>

#include "core/half.h"
#include "io/arch.h"
#include "io/gguf_metadata.h"
#include "io/gguf_writer.h"
#include "lowbit/error.h"

namespace lowbit::io {

const std::vector<SynthArch>& synth_archs() {
  static const std::vector<SynthArch> kArchs = {
      // name, gguf arch, dim, layers, heads, kv heads, ffn, vocab, context, eps, rope theta, tied, qkv bias
      {"tiny", "llama", 64, 2, 4, 2, 192, 512, 256, 1e-5f, 10000.0f, false, false},
      {"llama-1b", "llama", 2048, 16, 32, 8, 8192, 32000, 4096, 1e-5f, 10000.0f, false, false},
      {"tinyllama-1.1b", "llama", 2048, 22, 32, 4, 5632, 32000, 2048, 1e-5f, 10000.0f, false, false},
      {"llama-7b", "llama", 4096, 32, 32, 32, 11008, 32000, 4096, 1e-5f, 10000.0f, false, false},
      {"llama-13b", "llama", 5120, 40, 40, 40, 13824, 32000, 4096, 1e-5f, 10000.0f, false, false},
      {"llama-70b", "llama", 8192, 80, 64, 8, 28672, 32000, 4096, 1e-5f, 10000.0f, false, false},
      {"qwen2-0.5b", "qwen2", 896, 24, 14, 2, 4864, 151936, 32768, 1e-6f, 1000000.0f, true, true},
      // Qwen3: head_dim set apart from dim / heads (128 against 64 in the tiny one, as in the real 0.6B), q/k norms;
      // the tiny one is 256 wide so every K-quant and i-quant block type applies.
      {"qwen3-tiny", "qwen3", 256, 2, 4, 2, 512, 512, 256, 1e-6f, 1000000.0f, true, false, 128},
      {"qwen3-0.6b", "qwen3", 1024, 28, 16, 8, 3072, 151936, 40960, 1e-6f, 1000000.0f, true, false, 128},
      // Gemma: the tiny ones exercise every feature at a perplexity context of 128 -- a window of 32, layers of
      // both kinds, caps the logits of these weights reach (the real ones, 50 and 30, bind trained logits only);
      // gemma3-tiny has 2 local : 1 global layers, a local RoPE base and the global layers' linear scaling.
      {"gemma2-tiny", "gemma2", 256, 2, 4, 2, 512, 512, 256, 1e-6f, 10000.0f, true, false, 128, 32, 2, 5.0f, 4.0f, 0, 0.05f, 0.2f},
      {"gemma2-2b", "gemma2", 2304, 26, 8, 4, 9216, 256000, 8192, 1e-6f, 10000.0f, true, false, 256, 4096, 2, 50.0f, 30.0f},
      {"gemma3-tiny", "gemma3", 256, 3, 4, 2, 512, 512, 256, 1e-6f, 1000000.0f, true, false, 128, 32, 3, 0, 0, 8.0f, 0.05f},
      {"gemma3-1b", "gemma3", 1152, 26, 4, 1, 6912, 262144, 32768, 1e-6f, 1000000.0f, true, false, 256, 512, 6},
      {"gemma3-4b", "gemma3", 2560, 34, 8, 4, 10240, 262208, 131072, 1e-6f, 1000000.0f, true, false, 256, 1024, 6, 0, 0, 8.0f},
      // Phi-3: fused attn_qkv and gate | up; the tiny one has GQA and LongRoPE from an original context of 64, so a
      // perplexity context of 128 runs on the long factors (llama.cpp's choice by context size).
      {"phi3-tiny", "phi3", 256, 2, 4, 2, 512, 512, 256, 1e-5f, 10000.0f, false, false, 0, 0, 0, 0, 0, 0, 0.05f, 0, 64},
      {"phi3-mini", "phi3", 3072, 32, 32, 32, 8192, 32064, 4096, 1e-5f, 10000.0f, false, false},
      // Mixture of experts; Mixtral is written as llama.cpp writes it (llama with expert counts).
      {"mixtral-tiny", "llama", 256, 2, 4, 2, 256, 512, 256, 1e-5f, 1000000.0f, false, false, 0, 0, 0, 0, 0, 0,
       0.06f, 0, 0, 8, 2, 256, 0, "mixtral"},
      {"mixtral-8x7b", "llama", 4096, 32, 32, 8, 14336, 32000, 32768, 1e-5f, 1000000.0f, false, false, 0, 0, 0, 0, 0,
       0, 0.02f, 0, 0, 8, 2, 14336, 0, "mixtral"},
      {"qwen2moe-tiny", "qwen2moe", 256, 2, 4, 2, 512, 512, 256, 1e-6f, 1000000.0f, false, true, 0, 0, 0, 0, 0, 0,
       0.06f, 0, 0, 8, 4, 256, 512},
      {"qwen2moe-a2.7b", "qwen2moe", 2048, 24, 16, 16, 5632, 151936, 8192, 1e-6f, 1000000.0f, false, true, 0, 0, 0, 0,
       0, 0, 0.02f, 0, 0, 60, 4, 1408, 5632},
      {"qwen3moe-tiny", "qwen3moe", 256, 2, 4, 2, 512, 512, 256, 1e-6f, 1000000.0f, false, false, 128, 0, 0, 0, 0, 0,
       0.06f, 0, 0, 8, 2, 256},
      {"qwen3moe-30b-a3b", "qwen3moe", 2048, 48, 32, 4, 6144, 151936, 40960, 1e-6f, 1000000.0f, false, false, 128, 0,
       0, 0, 0, 0, 0.02f, 0, 0, 128, 8, 768},
  };
  return kArchs;
}

const SynthArch& synth_arch(const std::string& name) {
  std::string known;
  for (const auto& a : synth_archs()) {
    if (a.name == name) return a;
    known += (known.empty() ? "" : ", ") + a.name;
  }
  fail("", "--arch", "unknown architecture \"" + name + "\" (known: " + known + ")");
}

const SynthArch& synth_arch(const std::string& gguf_arch, const std::string& size) {
  std::string sizes;
  for (const auto& a : synth_archs()) {
    const std::string& family = a.family.empty() ? a.gguf_arch : a.family;
    if (family != gguf_arch) continue;
    const std::string prefix = gguf_arch + "-";
    const std::string own = a.name.rfind(prefix, 0) == 0 ? a.name.substr(prefix.size()) : a.name;
    if (own == size) return a;
    sizes += (sizes.empty() ? "" : ", ") + own;
  }
  if (sizes.empty()) {
    std::string known;
    for (const auto& a : synth_archs()) {
      const std::string& family = a.family.empty() ? a.gguf_arch : a.family;
      if (known.find(family) == std::string::npos) known += (known.empty() ? "" : ", ") + family;
    }
    fail("", "--arch", "unknown architecture \"" + gguf_arch + "\" (known: " + known + ")");
  }
  fail("", "--size", "no size \"" + size + "\" for " + gguf_arch + " (known: " + sizes + ")");
}

namespace {

constexpr uint64_t kGolden = 0x9E3779B97F4A7C15ull;

inline uint64_t mix64(uint64_t z) {  // splitmix64's finaliser
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

// normal(0, std) from one 64-bit draw: the sum of four 16-bit uniforms (Irwin-Hall, n = 4), standardised.
// Integer arithmetic up to one float multiply, so the bytes do not depend on the math library.
inline float normal_from(uint64_t r, float scale) {
  const int32_t s = static_cast<int32_t>(r & 0xffff) + static_cast<int32_t>((r >> 16) & 0xffff) +
                    static_cast<int32_t>((r >> 32) & 0xffff) + static_cast<int32_t>(r >> 48);
  return static_cast<float>(2 * s - 4 * 65535) * scale;
}

size_t elem_bytes(DType t) { return t == DType::F32 ? 4 : 2; }

// Fills out[0..n) with elements first..first+n of a tensor's stream, converted to dtype.
void fill(std::byte* out, DType dtype, uint64_t key, uint64_t first, size_t n, bool ones, float std, float mean) {
  // (2s - 4*65535) has standard deviation 2 * 65536 / sqrt(3) (four uniforms of variance 65536^2 / 12).
  const float scale = std / (2.0f * 65536.0f / 1.7320508f);
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < static_cast<int64_t>(n); ++i) {
    const float x = ones ? 1.0f : mean + normal_from(mix64(key + (first + static_cast<uint64_t>(i) + 1) * kGolden), scale);
    if (dtype == DType::F32) {
      std::memcpy(out + 4 * i, &x, 4);
    } else {
      const uint16_t h = dtype == DType::F16 ? f32_to_f16(x) : f32_to_bf16(x);
      std::memcpy(out + 2 * i, &h, 2);
    }
  }
}

std::vector<std::string> synth_vocab(int n) {
  std::vector<std::string> v = {"<unk>", "<s>", "</s>"};
  static const char* hex = "0123456789ABCDEF";
  for (int b = 0; b < 256; ++b) v.push_back(std::string("<0x") + hex[b >> 4] + hex[b & 15] + ">");
  v.push_back("\xE2\x96\x81");  // "▁"
  // Filler: every lowercase string in length-then-alphabetical order, bare and with the SPM space prefix.
  for (uint64_t k = 0; static_cast<int>(v.size()) < n; ++k) {
    std::string s;
    uint64_t x = k;
    for (;;) {
      s.insert(s.begin(), static_cast<char>('a' + x % 26));
      if (x < 26) break;
      x = x / 26 - 1;
    }
    v.push_back(s);
    if (static_cast<int>(v.size()) < n) v.push_back("\xE2\x96\x81" + s);
  }
  v.resize(static_cast<size_t>(n));
  return v;
}

}  // namespace

SynthResult write_synth_model(const SynthOptions& o) {
  SynthArch a = synth_arch(o.arch);
  if (o.dtype != DType::F32 && o.dtype != DType::F16 && o.dtype != DType::BF16)
    fail("", "--dtype", "synth writes f32, f16 or bf16, not " + std::string(dtype_name(o.dtype)));
  if (o.layers < 0 || o.layers > 4096) fail("", "--layers", "expected 1..4096, got " + std::to_string(o.layers));
  if (o.layers > 0) a.n_layers = o.layers;
  if (o.out.empty()) fail("", "-o", "no output file given");
  const int head_dim = a.head_dim > 0 ? a.head_dim : a.dim / a.n_heads;

  ModelConfig c;
  apply_arch_features(arch_named(a.gguf_arch), c);
  if (a.sliding_window > 0) c.sliding_window = a.sliding_window;
  if (a.swa_period > 0) c.swa_period = a.swa_period;
  if (a.attn_softcap > 0) c.attn_softcap = a.attn_softcap;
  if (a.final_softcap > 0) c.final_softcap = a.final_softcap;
  if (a.rope_linear > 0) c.rope_scaling.type = "linear", c.rope_scaling.factor = a.rope_linear;
  c.name = "lowbit-synth-" + a.name;
  c.context_length = a.context;
  c.dim = a.dim;
  c.n_layers = a.n_layers;
  c.ffn_dim = a.ffn_dim;
  c.n_heads = a.n_heads;
  c.n_kv_heads = a.n_kv_heads;
  c.head_dim = c.rope_dim = head_dim;
  c.norm_eps = a.norm_eps;
  c.qkv_bias = a.qkv_bias;
  c.n_experts = a.n_experts;
  c.n_experts_used = a.n_experts_used;
  c.expert_ffn_dim = a.expert_ffn;
  c.shared_ffn_dim = a.shared_ffn;
  c.rope_theta = a.rope_theta;
  c.n_vocab = a.n_vocab;
  if (a.longrope_original > 0) {  // llama.cpp's converter: attn_factor = sqrt(1 + ln(scale) / ln(original))
    c.rope_scaling.type = "longrope";
    c.rope_scaling.original_context = a.longrope_original;
    const double scale = static_cast<double>(a.context) / a.longrope_original;
    c.rope_scaling.attn_factor = static_cast<float>(std::sqrt(1 + std::log(scale) / std::log(double(a.longrope_original))));
  }
  TokenizerSpec t;  // a SentencePiece-style vocabulary: <unk>, <s>, </s>, 256 byte tokens, then scored pieces
  t.model = "llama";
  t.pre = "default";
  t.tokens = synth_vocab(a.n_vocab);
  t.scores.assign(t.tokens.size(), 0.0f);
  t.types.assign(t.tokens.size(), 1);
  t.types[0] = 2;
  t.types[1] = t.types[2] = 3;
  for (int i = 3; i < 259; ++i) t.types[static_cast<size_t>(i)] = 6;
  for (size_t i = 259; i < t.tokens.size(); ++i) t.scores[i] = -static_cast<float>(i - 259);
  t.bos = 1, t.eos = 2, t.unk = 0;
  if (a.gguf_arch == "phi3") {  // llama.cpp looks this control token up in every vocabulary of a model named phi3
    t.tokens.back() = "<|endoftext|>";
    t.types.back() = 3;
  }

  GgufWriter w;
  set_config_metadata(w, c);
  w.set_u32("general.file_type", o.dtype == DType::F32 ? 0 : o.dtype == DType::F16 ? 1 : 32);  // llama_ftype
  set_tokenizer_metadata(w, t);
  w.set_u64("lowbit.synth.seed", o.seed);
  w.set_string("lowbit.synth.arch", a.name);
  w.set_u32("lowbit.synth.layers", static_cast<uint32_t>(a.n_layers));

  SynthResult res;
  const uint64_t seed_key = mix64(o.seed ^ 0x6C6F77626974ull);  // "lowbit"
  auto tensor = [&](const std::string& name, std::vector<int64_t> shape, bool ones, float std, float mean = 0.0f) {
    const uint64_t key = mix64(seed_key + (w.n_tensors() + 1) * kGolden);
    int64_t numel = 1;
    for (int64_t d : shape) numel *= d;
    res.params += numel;
    const DType dt = shape.size() == 1 ? DType::F32 : o.dtype;  // norms and biases stay f32, as llama.cpp writes them
    w.add_tensor(name, dt, shape, [=](const GgufWriter::Sink& sink) {
      constexpr size_t kChunk = size_t{1} << 22;  // elements per write: 16 MiB of f32
      std::vector<std::byte> buf(std::min<size_t>(kChunk, static_cast<size_t>(numel)) * elem_bytes(dt));
      for (uint64_t first = 0; first < static_cast<uint64_t>(numel); first += kChunk) {
        const size_t n = static_cast<size_t>(std::min<uint64_t>(kChunk, static_cast<uint64_t>(numel) - first));
        fill(buf.data(), dt, key, first, n, ones, std, mean);
        sink(buf.data(), n * elem_bytes(dt));
      }
    });
  };

  if (a.longrope_original > 0) {  // divisors of the frequencies: long ones ~4 (stretch), short ones ~1.1
    tensor("rope_factors_long.weight", {head_dim / 2}, false, 1.0f, 4.0f);
    tensor("rope_factors_short.weight", {head_dim / 2}, false, 0.05f, 1.1f);
  }
  tensor("token_embd.weight", {a.n_vocab, a.dim}, false, a.weight_std);
  const ArchRoles& roles = arch_roles(c);
  for (int l = 0; l < a.n_layers; ++l)
    for (const BlockTensorRole& r : roles.block) {
      if (!present(c, r)) continue;
      const std::string name = block_tensor_name(l, r.role, r.suffix);
      if (r.kind == TensorKind::Norm && r.rows == Dim::HeadDim)
        tensor(name, shape_of(c, r), false, 0.25f, 1.0f);
      else
        tensor(name, shape_of(c, r), r.kind == TensorKind::Norm,
               r.feeds_scores && a.qk_std > 0                  ? a.qk_std
               : r.role == "ffn_gate_inp" && a.router_std > 0 ? a.router_std
                                                               : a.weight_std);
    }
  tensor("output_norm.weight", {a.dim}, true, 0.0f);
  if (!a.tied) tensor("output.weight", {a.n_vocab, a.dim}, false, a.weight_std);

  w.write(o.out, o.progress);
  res.tensors = w.n_tensors();
  struct stat st {};
  if (::stat(o.out.c_str(), &st) == 0) res.file_bytes = static_cast<uint64_t>(st.st_size);
  return res;
}

}  // namespace lowbit::io
