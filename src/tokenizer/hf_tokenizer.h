// Hugging Face tokenizer.json (model.type "BPE"): byte-level (GPT-2 / Llama-3 / Qwen2 style) and
// SentencePiece-like (Prepend/Replace normalizer or Metaspace pre-tokenizer, byte_fallback) tokenizers.
//
// Supported: normalizers Sequence, Prepend, Replace (string pattern), NFC (treated as identity: the input is
// assumed to be NFC already); pre-tokenizers Sequence, ByteLevel, Metaspace, Split (the GPT-2, Llama-3 and
// Qwen2 regexes, \p{N} and \p{N}+, behavior Isolated), Digits; decoders Sequence, ByteLevel, Metaspace,
// Replace, ByteFallback, Fuse, Strip; added tokens (special ones only with parse_special; "normalized" ones
// matched in the normalized text, as HF does; lstrip/rstrip on ASCII whitespace; single_word ignored).
// Anything else is rejected with a one-line lowbit::Error rather than tokenized differently.
#pragma once
#include <string>

#include "lowbit/model_file.h"

namespace lowbit {

// A TokenizerSpec for the tokenizer.json in a Hugging Face model directory (dir may also be the path of the
// tokenizer.json itself): model "hf-json", json_path, the vocabulary (tokens in id order, types), bos/eos/unk/pad
// and add_bos from tokenizer_config.json (add_bos_token, bos_token, ...), else the post_processor template,
// else config.json (bos_token_id, eos_token_id). Throws lowbit::Error for a missing or malformed tokenizer.json.
TokenizerSpec tokenizer_spec_from_hf_dir(const std::string& dir);

}  // namespace lowbit
