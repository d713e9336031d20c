// llama2.c tokenizer.bin: int32 max_token_length, then per token: float32 score, int32 length, bytes
// (little-endian). Pieces use ' ' where SentencePiece uses U+2581; BOS/EOS are stored as "\n<s>\n" and
// "\n</s>\n". The file does not store the token count.
#pragma once
#include <cstdint>
#include <string>

#include "lowbit/model_file.h"

namespace lowbit {

// Reads a tokenizer.bin into an SPM ("llama") TokenizerSpec: pieces with ' ' -> U+2581, "<s>"/"</s>" for the
// control tokens, token types inferred from the pieces (<unk> unknown, <s>/</s> control, <0xXX> byte, else
// normal). expected_vocab >= 0 also checks the token count (the checkpoint's vocab_size); the whole file is
// always read. Throws lowbit::Error ("PATH: FIELD at offset N: ...") for truncated or malformed files.
TokenizerSpec tokenizer_spec_from_llama2c(const std::string& path, int32_t expected_vocab = -1);

}  // namespace lowbit
