// ModelFile -> GGUF metadata: the inverse of gguf_model.cpp's reading, for writers whose source is not a GGUF
// (quantize from a Hugging Face directory or a llama2.c checkpoint, synth). Keys follow llama.cpp's names:
// general.architecture, "<arch>.*" hyperparameters and "tokenizer.ggml.*". A Hugging Face tokenizer.json is
// embedded whole as tokenizer.huggingface.json (the GGUF spec's key for it) next to llama.cpp's tokenizer keys.
#pragma once
#include "io/gguf_writer.h"
#include "lowbit/model_file.h"

namespace lowbit::io {

// The GGUF architecture a config is written as ("llama" for llama/mistral, "qwen2"), and the RoPE pairing that
// architecture implies for the Q/K rows stored under it (see gguf_model.cpp).
std::string gguf_arch_of(const ModelConfig& c);
RopeStyle gguf_rope_style(const std::string& gguf_arch);

// The attention scalar llama.cpp uses for a Gemma GGUF, which has no key for it: dim / heads for the 27B models
// (told apart by their layer count: 46 for Gemma 2, 62 for Gemma 3), head_dim for the others.
int gguf_attn_scalar(const ModelConfig& c);

// Writes general.* and "<arch>.*" keys for c. Rope scaling "llama3" cannot be expressed as keys: the caller must
// add the rope_freqs.weight tensor (see model/rope.h); "freq_factors" already has that tensor.
void set_config_metadata(GgufWriter& w, const ModelConfig& c);
// Writes the tokenizer keys for t (model "none": nothing). An hf-json tokenizer is written twice: its tokenizer.json
// embedded whole (what lowbit's loader runs) and the tokenizer.ggml.* keys llama.cpp's converter would write for it
// (ggml_vocab_from_hf, tokens padded to n_vocab when that is larger), so llama.cpp loads the file too. Throws
// lowbit::Error if an hf-json tokenizer's file cannot be read or llama.cpp has no equivalent of it.
void set_tokenizer_metadata(GgufWriter& w, const TokenizerSpec& t, int n_vocab = 0);

}  // namespace lowbit::io
