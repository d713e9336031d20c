// llama2.c legacy checkpoint -> ModelFile. Header: 7 int32 (dim, hidden_dim, n_layers, n_heads, n_kv_heads,
// vocab_size, seq_len; a negative vocab_size means the classifier is stored separately), then fp32 weights in
// llama2.c's order. Every size is checked against the file before a view is made; the views are zero-copy.
#include <cstring>
#include <filesystem>

#include "core/mapped_file.h"
#include "io/loaders.h"
#include "lowbit/error.h"
#include "tokenizer/llama2c_vocab.h"

namespace lowbit::io {

namespace {

constexpr uint64_t kHeaderBytes = 7 * 4;

}  // namespace

std::shared_ptr<const ModelFile> load_llama2c_model(const std::string& path, const std::string& tokenizer_path) {
  auto map = std::make_shared<MappedFile>(path);
  const uint64_t size = map->size();
  const std::byte* base = map->data();
  if (size < kHeaderBytes)
    fail_at(path, "header", 0,
            "file truncated: a llama2.c checkpoint starts with a 28-byte header, the file has " + std::to_string(size) +
                " bytes");
  if (std::memcmp(base, "ak42", 4) == 0)
    fail_at(path, "magic", 0, "llama2.c versioned export (\"ak42\") is not supported; export with --version 0 (legacy)");

  int32_t h[7];
  std::memcpy(h, base, sizeof h);
  static const char* kNames[7] = {"dim", "hidden_dim", "n_layers", "n_heads", "n_kv_heads", "vocab_size", "seq_len"};
  auto check = [&](int i, int64_t value, int64_t lo, int64_t hi) {
    if (value < lo || value > hi)
      fail_at(path, std::string("header.") + kNames[i], 4 * i,
              "value " + std::to_string(h[i]) + " out of range [" + std::to_string(lo) + ", " + std::to_string(hi) +
                  "] (not a llama2.c checkpoint?)");
  };
  check(0, h[0], 1, 1 << 16);
  check(1, h[1], 1, 1 << 18);
  check(2, h[2], 1, 1024);
  check(3, h[3], 1, 1024);
  check(4, h[4], 1, h[3]);
  const bool shared = h[5] > 0;
  const int64_t vocab = h[5] < 0 ? -static_cast<int64_t>(h[5]) : h[5];
  check(5, vocab, 1, 1 << 22);
  check(6, h[6], 1, 1 << 20);
  const int64_t dim = h[0], hidden = h[1], L = h[2], n_heads = h[3], n_kv = h[4], seq_len = h[6];
  if (dim % n_heads != 0 || (dim / n_heads) % 2 != 0)
    fail_at(path, "header.n_heads", 12,
            std::to_string(n_heads) + " heads do not split dim " + std::to_string(dim) + " into even-sized heads");
  if (n_heads % n_kv != 0)
    fail_at(path, "header.n_kv_heads", 16,
            std::to_string(n_kv) + " does not divide n_heads " + std::to_string(n_heads));
  const int64_t head = dim / n_heads, kv_dim = n_kv * head;

  auto m = std::make_shared<ModelFile>();
  m->path = path;
  m->format = "llama2c";
  m->mappings.push_back(map);
  ModelConfig& c = m->config;
  c.arch = "llama";
  c.name = std::filesystem::path(path).stem().string();
  c.n_vocab = static_cast<int>(vocab);
  c.dim = static_cast<int>(dim);
  c.n_layers = static_cast<int>(L);
  c.n_heads = static_cast<int>(n_heads);
  c.n_kv_heads = static_cast<int>(n_kv);
  c.head_dim = static_cast<int>(head);
  c.rope_dim = c.head_dim;
  c.ffn_dim = static_cast<int>(hidden);
  c.context_length = static_cast<int>(seq_len);
  c.norm_eps = 1e-5f;
  c.rope_theta = 10000.0f;
  c.rope_style = RopeStyle::Interleaved;
  c.tied_embeddings = shared;
  for (int i = 0; i < 7; ++i) m->metadata.push_back({std::string("llama2c.") + kNames[i], "i32", std::to_string(h[i])});

  // Lay the tensors out in llama2.c's order; the ranges above keep every product far below 2^63.
  uint64_t pos = kHeaderBytes;
  auto add = [&](const std::string& name, std::vector<int64_t> shape) {
    TensorInfo t;
    t.name = name;
    t.dtype = DType::F32;
    t.shape = std::move(shape);
    t.nbytes = static_cast<uint64_t>(t.numel()) * 4;
    t.file = path;
    t.file_offset = pos;
    pos += t.nbytes;
    m->tensors.push_back(std::move(t));
  };
  auto per_layer = [&](const char* role, std::vector<int64_t> shape) {
    for (int64_t l = 0; l < L; ++l) add("blk." + std::to_string(l) + "." + role + ".weight", shape);
  };
  add("token_embd.weight", {vocab, dim});
  per_layer("attn_norm", {dim});
  per_layer("attn_q", {dim, dim});
  per_layer("attn_k", {kv_dim, dim});
  per_layer("attn_v", {kv_dim, dim});
  per_layer("attn_output", {dim, dim});
  per_layer("ffn_norm", {dim});
  per_layer("ffn_gate", {hidden, dim});  // w1
  per_layer("ffn_down", {dim, hidden});  // w2
  per_layer("ffn_up", {hidden, dim});    // w3
  add("output_norm.weight", {dim});
  pos += 2 * static_cast<uint64_t>(seq_len * head / 2) * 4;  // freq_cis_real, freq_cis_imag (unused)
  if (!shared) add("output.weight", {vocab, dim});

  if (pos != size) {
    const std::string dims = "dim " + std::to_string(dim) + ", hidden_dim " + std::to_string(hidden) + ", " +
                             std::to_string(L) + " layers, " + std::to_string(n_heads) + " heads, " +
                             std::to_string(n_kv) + " kv heads, vocab " + std::to_string(h[5]) + ", seq_len " +
                             std::to_string(seq_len);
    if (pos > size)
      fail_at(path, "weights", static_cast<int64_t>(size),
              "file truncated: the header (" + dims + ") implies " + std::to_string(pos) + " bytes, the file has " +
                  std::to_string(size));
    fail_at(path, "weights", static_cast<int64_t>(pos),
            "the header (" + dims + ") implies " + std::to_string(pos) + " bytes, the file has " +
                std::to_string(size) + " (" + std::to_string(size - pos) +
                " bytes left over: wrong header or not a legacy llama2.c checkpoint)");
  }
  for (auto& t : m->tensors) t.data = base + t.file_offset;

  // Without a tokenizer.bin the model has tokenizer "none"; the verbs that need one say so.
  if (!tokenizer_path.empty()) m->tokenizer = tokenizer_spec_from_llama2c(tokenizer_path, static_cast<int32_t>(vocab));
  validate_model(*m);
  return m;
}

}  // namespace lowbit::io
