#include "lowbit/model_file.h"

#include <sys/stat.h>

#include <cstring>
#include <filesystem>
#include <fstream>

#include "io/arch.h"
#include "io/gguf.h"
#include "io/loaders.h"
#include "lowbit/error.h"

namespace lowbit {

int64_t TensorInfo::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

std::string TensorInfo::shape_str() const {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

const TensorInfo* ModelFile::find(std::string_view name) const {
  for (const auto& t : tensors)
    if (t.name == name) return &t;
  return nullptr;
}

const TensorInfo& ModelFile::get(std::string_view name) const {
  if (const TensorInfo* t = find(name)) return *t;
  fail(path, std::string(name), "required tensor is missing");
}

uint64_t ModelFile::total_bytes() const {
  uint64_t n = 0;
  for (const auto& t : tensors) n += t.file_bytes();
  return n;
}

int64_t ModelFile::total_params() const {
  int64_t n = 0;
  for (const auto& t : tensors) n += t.numel();
  return n;
}

namespace {

std::string find_llama2c_tokenizer(const std::string& model_path) {
  namespace fs = std::filesystem;
  fs::path dir = fs::path(model_path).parent_path();
  if (dir.empty()) dir = ".";
  if (fs::exists(dir / "tokenizer.bin")) return (dir / "tokenizer.bin").string();
  std::vector<std::string> candidates;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(dir, ec)) {
    const std::string name = e.path().filename().string();
    if (name.rfind("tok", 0) == 0 && e.path().extension() == ".bin") candidates.push_back(e.path().string());
  }
  if (candidates.size() == 1) return candidates[0];
  return "";
}

}  // namespace

std::shared_ptr<const ModelFile> load_model(const std::string& path, const LoadOptions& opts) {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (!fs::exists(path, ec)) fail(path, "", "no such file or directory");
  if (fs::is_directory(path, ec)) return io::load_hf_model(path);
  char magic[4] = {0, 0, 0, 0};
  {
    std::ifstream in(path, std::ios::binary);
    if (!in) fail(path, "", "cannot open for reading");
    in.read(magic, 4);
  }
  if (std::memcmp(magic, "GGUF", 4) == 0) return io::load_gguf_model(path);
  if (fs::path(path).extension() == ".gguf")
    fail_at(path, "magic", 0, "not a GGUF file (expected \"GGUF\")");
  if (fs::path(path).extension() == ".safetensors")
    fail(path, "", "a safetensors file needs its Hugging Face directory (config.json beside it): pass the directory");
  std::string tok = opts.tokenizer_path.empty() ? find_llama2c_tokenizer(path) : opts.tokenizer_path;
  return io::load_llama2c_model(path, tok);
}

namespace io {

void validate_model(const ModelFile& m) {
  const ModelConfig& c = m.config;
  auto bad = [&](const std::string& field, const std::string& msg) { fail(m.path, field, msg); };
  if (c.dim <= 0) bad("dim", "must be positive");
  if (c.n_layers <= 0) bad("n_layers", "must be positive");
  if (c.n_heads <= 0) bad("n_heads", "must be positive");
  if (c.n_kv_heads <= 0 || c.n_heads % c.n_kv_heads != 0)
    bad("n_kv_heads", std::to_string(c.n_kv_heads) + " must divide n_heads " + std::to_string(c.n_heads));
  if (c.head_dim <= 0 || c.head_dim % 2 != 0) bad("head_dim", "must be positive and even");
  if (c.rope_dim <= 0 || c.rope_dim > c.head_dim || c.rope_dim % 2 != 0)
    bad("rope_dim", "must be even and at most head_dim");
  if (c.ffn_dim <= 0) bad("ffn_dim", "must be positive");
  if (c.n_vocab <= 0) bad("token_embd.weight", "cannot determine the vocabulary size");

  auto expect = [&](const std::string& name, std::vector<int64_t> shape) {
    const TensorInfo* t = m.find(name);
    if (!t) bad(name, "required tensor is missing");
    if (t->shape != shape) {
      TensorInfo want;
      want.shape = shape;
      bad(name, "shape " + t->shape_str() + ", expected " + want.shape_str());
    }
  };
  expect("token_embd.weight", {c.n_vocab, c.dim});
  expect("output_norm.weight", {c.dim});
  if (!c.tied_embeddings) expect("output.weight", {c.n_vocab, c.dim});
  const ArchRoles& roles = arch_roles(c);
  for (int l = 0; l < c.n_layers; ++l)
    for (const BlockTensorRole& r : roles.block)
      if (present(c, r)) expect(block_tensor_name(l, r.role, r.suffix), shape_of(c, r));
  if (c.rope_scaling.type == "freq_factors") expect("rope_freqs.weight", {c.rope_dim / 2});
  if (c.rope_scaling.type == "longrope") {
    expect("rope_factors_long.weight", {c.rope_dim / 2});
    expect("rope_factors_short.weight", {c.rope_dim / 2});
  }
}

}  // namespace io
}  // namespace lowbit
