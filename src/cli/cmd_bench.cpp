// lowbit bench -m MODEL [-t 1,2]: prefill and decode tokens/s, weight bytes per token, achieved bandwidth
// against the machine's measured read bandwidth.
#include <cstdio>

#include "cli/commands.h"
#include "cli/common.h"
#include "lowbit/bench.h"
#include "lowbit/threads.h"
#include "ops/ops.h"

namespace lowbit::cli {

namespace {

struct BenchArgs {
  std::string model, tokenizer;
  std::vector<int> threads;
  BenchOptions o;
  bool json = false;
};

void bench_cmd(const BenchArgs& a) {
  auto file = load_model(a.model, LoadOptions{a.tokenizer});
  std::vector<int> threads = a.threads;
  if (threads.empty()) threads.push_back(hardware_threads());
  nlohmann::json rows = nlohmann::json::array();
  if (!a.json) {
    std::printf("model: %s  (%s, %d layers, dim %d, %.2f GiB)  SIMD: %s (kernels: llama.cpp types %s, intN %s)\n",
                a.model.c_str(), file->config.arch.c_str(), file->config.n_layers, file->config.dim,
                static_cast<double>(file->total_bytes()) / (1 << 30), ops::simd_target(), ops::ggml_kernel_path(),
                ops::intn_kernel_path());
  }
  bool header = false;
  for (int t : threads) {
    set_num_threads(t);
    Model model(file, a.o.prompt_tokens + a.o.gen_tokens + 1);
    BenchResult r = run_bench(model, a.o);
    if (a.json) {
      nlohmann::json j = {{"threads", r.threads}, {"pp_tokens", r.prompt_tokens}, {"pp_tok_s", r.pp_tok_s},
                          {"tg_tokens", r.gen_tokens}, {"tg_tok_s", r.tg_tok_s},
                          {"bytes_per_token", r.bytes_per_token}, {"tg_gb_s", r.tg_gb_s},
                          {"machine_gb_s", r.machine_gb_s}, {"roofline_pct", r.roofline_pct}};
      if (a.o.profile) {
        j["pp_profile_s"] = r.pp_profile;
        j["tg_profile_s"] = r.tg_profile;
      }
      rows.push_back(j);
      continue;
    }
    if (!header) {
      std::printf("weights read per decode step: %.1f MiB\n", static_cast<double>(r.bytes_per_token) / (1 << 20));
      std::printf("%7s %12s %12s %10s %12s %10s\n", "threads", "pp tok/s", "tg tok/s", "tg GB/s", "machine GB/s",
                  "roofline");
      header = true;
    }
    std::printf("%7d %12.2f %12.2f %10.2f %12.2f %9.1f%%\n", r.threads, r.pp_tok_s, r.tg_tok_s, r.tg_gb_s,
                r.machine_gb_s, r.roofline_pct);
    if (a.o.profile) {
      auto show = [](const char* what, const std::vector<std::pair<std::string, double>>& p) {
        double total = 0;
        for (const auto& [k, v] : p) total += v;
        std::printf("  %s profile:", what);
        for (const auto& [k, v] : p) std::printf(" %s %.1f%%", k.c_str(), total > 0 ? 100 * v / total : 0);
        std::printf("\n");
      };
      show("pp", r.pp_profile);
      show("tg", r.tg_profile);
    }
  }
  if (a.json) print_json({{"model", a.model}, {"simd", ops::simd_target()}, {"ggml_kernels", ops::ggml_kernel_path()},
                          {"intn_kernels", ops::intn_kernel_path()}, {"results", rows}});
}

}  // namespace

void add_bench(CLI::App& app) {
  auto a = std::make_shared<BenchArgs>();
  auto* cmd = app.add_subcommand("bench", "Prefill and decode speed against the memory-bandwidth roofline");
  cmd->add_option("-m,--model", a->model, "model: GGUF file, Hugging Face directory or llama2.c checkpoint")->required();
  cmd->add_option("-t,--threads", a->threads, "thread counts to test, e.g. -t 1,2 (default: all cores)")
      ->delimiter(',')
      ->check(CLI::Range(1, 1024));
  cmd->add_option("-p,--n-prompt", a->o.prompt_tokens, "prefill batch size (pp)")->check(CLI::Range(0, 1 << 16));
  cmd->add_option("-n,--n-gen", a->o.gen_tokens, "decode steps (tg)")->check(CLI::Range(0, 1 << 16));
  cmd->add_option("-r,--reps", a->o.reps, "repetitions (best is reported)")->check(CLI::Range(1, 100));
  cmd->add_option("--tokenizer", a->tokenizer, "llama2.c tokenizer.bin");
  cmd->add_flag("--profile", a->o.profile, "per-op time breakdown");
  cmd->add_flag("--json", a->json, "machine-readable output");
  cmd->callback([a] { bench_cmd(*a); });
}

}  // namespace lowbit::cli
