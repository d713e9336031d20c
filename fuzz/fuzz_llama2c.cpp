// A llama2.c checkpoint (header, shared/unshared classifier, weight sizes) and its tokenizer.bin, as two parts of one
// input (fuzz_util.h split_parts), then what the model targets all do.
#include "fuzz/fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const auto parts = lowbit::fuzz::split_parts(data, size, 2);
  const std::string model = lowbit::fuzz::write_file("model.bin", reinterpret_cast<const uint8_t*>(parts[0].data()), parts[0].size());
  lowbit::LoadOptions o;
  o.tokenizer_path = lowbit::fuzz::write_file("tokenizer.bin", reinterpret_cast<const uint8_t*>(parts[1].data()), parts[1].size());
  try {
    lowbit::fuzz::exercise_model(lowbit::load_model(model, o));
  } catch (const lowbit::Error&) {
  }
  return 0;
}
