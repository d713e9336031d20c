// lowbit: tokenizers. SentencePiece-style BPE (GGUF llama vocab, llama2.c tokenizer.bin) and byte-level BPE
// (GGUF gpt2 vocab + merges, Hugging Face tokenizer.json), behind one interface.
#pragma once
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "lowbit/model_file.h"

namespace lowbit {

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;
  // Encodes text exactly as llama.cpp / the reference tokenizer does. add_bos prepends BOS when the model has one;
  // parse_special recognises control tokens written in the text (e.g. "<s>").
  virtual std::vector<int32_t> encode(std::string_view text, bool add_bos, bool parse_special = false) const = 0;
  // The bytes a token stands for (byte tokens give their byte; control tokens give "").
  virtual std::string token_to_piece(int32_t id) const = 0;
  // Decodes a whole sequence; decode(encode(x, add_bos)) == x for valid UTF-8 x.
  virtual std::string decode(std::span<const int32_t> ids) const = 0;
  virtual int32_t n_vocab() const = 0;
  virtual int32_t bos() const = 0;  // -1 if none
  virtual int32_t eos() const = 0;  // -1 if none
  virtual bool add_bos() const = 0;   // whether the model wants BOS prepended (TokenizerSpec::add_bos)
  virtual std::string describe() const = 0;  // "SPM (llama), 32000 tokens, byte fallback" etc.
};

std::unique_ptr<Tokenizer> make_tokenizer(const TokenizerSpec& spec);

// Streams decoded text token by token for `lowbit run`: holds back incomplete UTF-8 sequences and applies
// the same leading-space rule as decode().
class StreamDecoder {
 public:
  explicit StreamDecoder(const Tokenizer& tok);
  // Returns the text that became complete with this token (possibly empty).
  std::string push(int32_t id);
  std::string flush();
 private:
  const Tokenizer& tok_;
  std::vector<int32_t> ids_;
  size_t emitted_ = 0;  // bytes of decode(ids_) already returned
};

}  // namespace lowbit
