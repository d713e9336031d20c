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

// The GGUF tokenizer keys llama.cpp's converter (convert_hf_to_gguf.py with gguf-py) writes for an hf-json spec's
// tokenizer.json, as a spec llama.cpp (and make_tokenizer) can run:
//   - SentencePiece-style BPE ("▁" Prepend/Replace normalizer or Metaspace): model "llama", pre "default",
//     add_space_prefix, token types as gguf-py's LlamaHfVocab (byte <0xXX> 6, special added 3, other added 4) with
//     model.unk_token 2, and scores that order merged tokens by merge rank (the token merge r makes first scores
//     -(r + 1), the rest 0) so llama.cpp's score-driven merging follows the ranks;
//   - byte-level BPE (ByteLevel): model "gpt2", pre named by matching the Split/Digits/ByteLevel regexes (and
//     model.ignore_merges) to llama.cpp's pre-tokenizers, types as get_vocab_base (special or special-looking added
//     3, other added 4 with "▁" -> " "), merges as "a b" in rank order.
// Ids nothing names, and ids up to n_vocab (the model's vocabulary), are "[PAD<id>]", unused. Special ids and
// add_bos/add_eos come from hf. Throws lowbit::Error naming the tokenizer.json and the field when llama.cpp has no
// equivalent (it would tokenize differently).
TokenizerSpec ggml_vocab_from_hf(const TokenizerSpec& hf, int n_vocab = 0);

}  // namespace lowbit
