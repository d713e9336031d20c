// The format-specific loaders behind lowbit::load_model (include/lowbit/model_file.h).
#pragma once
#include <memory>
#include <string>

#include "lowbit/model_file.h"

namespace lowbit::io {

// Hugging Face directory: config.json + model.safetensors or model.safetensors.index.json (+ shards),
// tokenizer.json. Tensors are renamed to the canonical GGUF-style names; RopeStyle::HalfSplit.
std::shared_ptr<const ModelFile> load_hf_model(const std::string& dir);

// llama2.c checkpoint (legacy fp32 header; negative vocab_size = unshared classifier) + tokenizer.bin.
std::shared_ptr<const ModelFile> load_llama2c_model(const std::string& path, const std::string& tokenizer_path);

// Checks a loaded model for consistency: positive dimensions, heads dividing the hidden size, every tensor the
// Llama graph needs present with the expected shape. Throws lowbit::Error naming the file and tensor.
void validate_model(const ModelFile& m);

}  // namespace lowbit::io
