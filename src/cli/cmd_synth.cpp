// lowbit synth --arch NAME [--size SIZE] --dtype f32|f16|bf16 -o OUT.gguf [--seed S] [--layers N]: a model with real shapes and
// seeded random weights, for speed and memory work (never for quality claims).
#include <cstdio>
#include <memory>
#include <optional>

#include "cli/commands.h"
#include "core/progress.h"
#include "io/synth.h"
#include "lowbit/error.h"

namespace lowbit::cli {

namespace {

struct SynthArgs {
  std::string arch = "tiny", size, dtype = "f32", out;
  uint64_t seed = 0;
  int layers = 0;
};

void synth(const SynthArgs& a) {
  io::SynthOptions o;
  // --size: --arch is llama.cpp's architecture string (qwen3 + tiny = qwen3-tiny); rejects unknown names early.
  o.arch = a.size.empty() ? io::synth_arch(a.arch).name : io::synth_arch(a.arch, a.size).name;
  const std::optional<DType> dt = dtype_from_name(a.dtype);
  if (!dt || (*dt != DType::F32 && *dt != DType::F16 && *dt != DType::BF16))
    fail("", "--dtype", "expected f32, f16 or bf16, got \"" + a.dtype + "\"");
  o.dtype = *dt;
  o.seed = a.seed;
  o.layers = a.layers;
  o.out = a.out;
  std::unique_ptr<ProgressBar> bar;
  o.progress = [&](size_t done, size_t total) {
    if (!bar) bar = std::make_unique<ProgressBar>("synth " + o.arch, static_cast<int64_t>(total));
    bar->update(static_cast<int64_t>(done));
  };
  const io::SynthResult r = io::write_synth_model(o);
  if (bar) bar->finish();
  std::printf("wrote %s: %s %s, seed %llu, %zu tensors, %lld parameters, %.1f MiB\n", a.out.c_str(), o.arch.c_str(),
              a.dtype.c_str(), static_cast<unsigned long long>(a.seed), r.tensors, static_cast<long long>(r.params),
              static_cast<double>(r.file_bytes) / (1 << 20));
}

}  // namespace

void add_synth(CLI::App& app) {
  auto a = std::make_shared<SynthArgs>();
  std::string archs;
  for (const auto& s : io::synth_archs()) archs += (archs.empty() ? "" : ", ") + s.name;
  auto* cmd = app.add_subcommand("synth", "Write a GGUF model with real shapes and seeded random weights");
  cmd->add_option("--arch", a->arch, "architecture: " + archs)->capture_default_str();
  cmd->add_option("--size", a->size, "with --arch as llama.cpp's architecture string (llama, qwen2, qwen3, gemma2, gemma3, phi3): tiny, 1b, ...");
  cmd->add_option("--dtype", a->dtype, "weight type: f32, f16 or bf16")->capture_default_str();
  cmd->add_option("-o,--output", a->out, "the .gguf file to write")->required();
  cmd->add_option("--seed", a->seed, "random seed")->capture_default_str();
  cmd->add_option("--layers", a->layers, "override the layer count (small-but-wide test models)")
      ->check(CLI::Range(1, 4096));
  cmd->callback([a] { synth(*a); });
}

}  // namespace lowbit::cli
