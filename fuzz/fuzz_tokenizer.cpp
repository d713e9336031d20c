// The tokenizers' encode and decode paths on arbitrary bytes (invalid UTF-8 included), with and without special
// tokens: SPM with byte fallback (stories260K's tok512.bin) and byte-level BPE (TinyStories-656K's tokenizer.json).
// Needs ../shared; LOWBIT_SHARED_DIR is set by CMake.
#include "fuzz/fuzz_util.h"

namespace {
std::vector<std::unique_ptr<lowbit::Tokenizer>> load_tokenizers() {
  std::vector<std::unique_ptr<lowbit::Tokenizer>> t;
  const std::string shared = LOWBIT_SHARED_DIR;
  t.push_back(lowbit::make_tokenizer(lowbit::load_model(shared + "/models/stories260K/stories260K.gguf")->tokenizer));
  t.push_back(lowbit::make_tokenizer(lowbit::load_model(shared + "/models/TinyStories-656K")->tokenizer));
  return t;
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const auto tokenizers = load_tokenizers();
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  for (const auto& t : tokenizers)
    for (bool special : {false, true}) {
      try {  // text that is not UTF-8 is rejected with a lowbit::Error naming the offset
        const auto ids = t->encode(text, true, special);
        (void)t->decode(ids);
      } catch (const lowbit::Error&) {
      }
    }
  return 0;
}
