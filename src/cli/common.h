// Helpers shared by the CLI verbs: loading a model with its tokenizer, reading text files, JSON output.
#pragma once
#include <memory>
#include <string>

#include <nlohmann/json.hpp>

#include "lowbit/model_file.h"
#include "lowbit/tokenizer.h"

namespace lowbit::cli {

struct Loaded {
  std::shared_ptr<const ModelFile> file;
  std::unique_ptr<Tokenizer> tok;  // null when the model has no tokenizer
};

// Loads the model (and its tokenizer when it has one). tokenizer_path: llama2.c tokenizer.bin override.
Loaded load(const std::string& model_path, const std::string& tokenizer_path);
// The tokenizer, or a clear error saying the model has none.
const Tokenizer& need_tokenizer(const Loaded& m);

// Reads a whole text file; errors name the file. Checks the text is valid UTF-8 (offset of the first bad byte).
std::string read_text_file(const std::string& path);
// Offset of the first byte that is not part of valid UTF-8, or -1.
int64_t first_invalid_utf8(const std::string& s);

// Windows of ctx tokens the text holds, capped at `chunks` when > 0; a clear error naming the file when it holds
// none.
int64_t window_count(const std::string& file, size_t n_tokens, int ctx, int chunks);

void print_json(const nlohmann::json& j);

}  // namespace lowbit::cli
