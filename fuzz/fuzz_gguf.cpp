// GGUF: header, metadata (every value type, nested arrays), tensor infos, data bounds, lowbit's packed-tensor keys,
// the model config and tokenizer built from them, and a forward pass on what loads.
#include "fuzz/fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = lowbit::fuzz::write_file("model.gguf", data, size);
  try {
    lowbit::fuzz::exercise_model(lowbit::load_model(path));
  } catch (const lowbit::Error&) {
  }
  return 0;
}
