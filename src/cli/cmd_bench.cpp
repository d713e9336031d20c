// lowbit bench -m MODEL [-p 512] [-n 128] [-t 1,2] [-r 5]: llama-bench's tests (ppN: one prefill batch of N tokens,
// tgN: N single-token decode steps), each as the mean ± standard deviation of tokens/s over -r repetitions after a
// warm-up, for every combination of the -p, -n and -t lists; a markdown table (or --json) with the weight bytes each
// decode step reads and the bandwidth that achieves against the machine's measured read bandwidth.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <string>

#include "cli/commands.h"
#include "cli/common.h"
#include "lowbit/bench.h"
#include "lowbit/threads.h"
#include "ops/ops.h"

namespace lowbit::cli {

namespace {

struct BenchArgs {
  std::string model, tokenizer;
  std::vector<int> threads, prompt = {512}, gen = {128};
  int reps = 5;
  bool profile = false, json = false, no_roofline = false;
};

// A "Key: N kB" line of a /proc file, in bytes (0 where unavailable).
uint64_t proc_kb_field(const char* path, const char* key) {
  std::FILE* f = std::fopen(path, "r");
  if (!f) return 0;
  char line[256];
  const std::string format = std::string(key) + ": %lu kB";
  uint64_t kb = 0;
  while (std::fgets(line, sizeof line, f))
    if (std::sscanf(line, format.c_str(), &kb) == 1) break;
  std::fclose(f);
  return kb * 1024;
}
// The resident set, and the part of it in transparent huge pages (the repacked weights ask for them: decode on 4 KiB
// pages measured less than half the speed, so a run that did not get them should say so).
uint64_t resident_bytes() { return proc_kb_field("/proc/self/status", "VmRSS"); }
uint64_t huge_page_bytes() { return proc_kb_field("/proc/self/smaps_rollup", "AnonHugePages"); }

void bench_cmd(const BenchArgs& a) {
  const auto t_load = std::chrono::steady_clock::now();
  auto file = load_model(a.model, LoadOptions{a.tokenizer});
  const double load_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t_load).count();
  std::vector<int> threads = a.threads;
  if (threads.empty()) threads.push_back(physical_cores());
  const int max_p = *std::max_element(a.prompt.begin(), a.prompt.end());
  const int max_n = *std::max_element(a.gen.begin(), a.gen.end());
  int64_t params = 0;
  for (const auto& t : file->tensors) params += t.numel();
  const double bytes = static_cast<double>(file->total_bytes());
  char size[32];  // as llama-bench prints it
  if (bytes >= (1 << 30)) std::snprintf(size, sizeof size, "%.2f GiB", bytes / (1 << 30));
  else std::snprintf(size, sizeof size, "%.2f MiB", bytes / (1 << 20));
  nlohmann::json rows = nlohmann::json::array();
  if (!a.json) {
    std::printf("model: %s (%s, %d layers, dim %d)  SIMD: %s (kernels: llama.cpp types %s, intN %s)\n\n",
                a.model.c_str(), file->config.arch.c_str(), file->config.n_layers, file->config.dim,
                ops::simd_target(), ops::ggml_kernel_path(), ops::intn_kernel_path());
  }
  bool header = false;
  nlohmann::json load;
  auto show_profile = [](const char* what, const std::vector<std::pair<std::string, double>>& p) {
    double total = 0;
    for (const auto& [k, v] : p) total += v;
    std::printf("  %s profile:", what);
    for (const auto& [k, v] : p) std::printf(" %s %.1f%%", k.c_str(), total > 0 ? 100 * v / total : 0);
    std::printf("\n");
  };
  for (int t : threads) {
    set_num_threads(t);
    Model model(file, max_p + max_n + 1);
    if (!header) {  // load figures: the file, the repacking for this CPU's kernels, the resident set after both
      header = true;
      const Model::RepackStats rs = model.repack_stats();
      const uint64_t rss = resident_bytes(), huge = huge_page_bytes();
      load = {{"file_s", load_s}, {"repacked_matrices", rs.matrices}, {"repacked_bytes", rs.bytes},
              {"repack_s", rs.seconds}, {"resident_bytes", rss}, {"huge_page_bytes", huge}};
      if (!a.json) {
        std::printf("load: file %.2f s; repacked %d matrices, %.1f MiB, in %.2f s; resident after load %.1f MiB (%.1f MiB "
                    "in huge pages)\n\n",
                    load_s, rs.matrices, static_cast<double>(rs.bytes) / (1 << 20), rs.seconds,
                    static_cast<double>(rss) / (1 << 20), static_cast<double>(huge) / (1 << 20));
        std::printf("| size | params | threads | test | t/s | weights GB/s | machine GB/s | roofline |\n");
        std::printf("|---:|---:|---:|---|---:|---:|---:|---:|\n");
      }
    }
    // One test per -p and per -n value (llama-bench's pp / tg rows), in that order.
    std::vector<std::pair<int, int>> tests;
    for (int p : a.prompt)
      if (p > 0) tests.emplace_back(p, 0);
    for (int n : a.gen)
      if (n > 0) tests.emplace_back(0, n);
    for (const auto& [p, n] : tests) {
      BenchOptions o;
      o.prompt_tokens = p;
      o.gen_tokens = n;
      o.reps = a.reps;
      o.profile = a.profile;
      o.roofline = !a.no_roofline;
      const BenchResult r = run_bench(model, o);
      const bool pp = p > 0;
      const std::string test = pp ? "pp" + std::to_string(p) : "tg" + std::to_string(n);
      const double mean = pp ? r.pp_tok_s : r.tg_tok_s, sd = pp ? r.pp_tok_s_std : r.tg_tok_s_std;
      if (a.json) {
        nlohmann::json j = {{"threads", r.threads}, {"test", test}, {"n_prompt", p}, {"n_gen", n},
                            {"avg_ts", mean}, {"stddev_ts", sd}, {"samples_ts", pp ? r.pp_samples : r.tg_samples},
                            {"reps", a.reps}};
        if (!pp)
          j.update({{"bytes_per_token", r.bytes_per_token}, {"tg_gb_s", r.tg_gb_s}, {"machine_gb_s", r.machine_gb_s},
                    {"roofline_pct", r.roofline_pct}});
        if (a.profile) j["profile_s"] = pp ? r.pp_profile : r.tg_profile;
        rows.push_back(j);
        continue;
      }
      std::printf("| %s | %.2f M | %d | %s | %.2f ± %.2f |", size, static_cast<double>(params) / 1e6, r.threads,
                  test.c_str(), mean, sd);
      if (pp || r.machine_gb_s <= 0) std::printf(pp ? " | | |\n" : " %.2f | | |\n", r.tg_gb_s);
      else std::printf(" %.2f | %.2f | %.1f%% |\n", r.tg_gb_s, r.machine_gb_s, r.roofline_pct);
      if (a.profile) show_profile(test.c_str(), pp ? r.pp_profile : r.tg_profile);
    }
  }
  if (a.json)
    print_json({{"model", a.model}, {"size_bytes", file->total_bytes()}, {"params", params},
                {"simd", ops::simd_target()}, {"ggml_kernels", ops::ggml_kernel_path()},
                {"intn_kernels", ops::intn_kernel_path()}, {"load", load}, {"results", rows}});
}

}  // namespace

void add_bench(CLI::App& app) {
  auto a = std::make_shared<BenchArgs>();
  auto* cmd = app.add_subcommand("bench", "Prefill and decode speed (llama-bench's pp / tg tests) against the memory-bandwidth roofline");
  cmd->add_option("-m,--model", a->model, "model: GGUF file, Hugging Face directory or llama2.c checkpoint")->required();
  cmd->add_option("-t,--threads", a->threads, "thread counts, e.g. -t 1,2 (default: the physical cores)")
      ->delimiter(',')
      ->check(CLI::Range(1, 1024));
  cmd->add_option("-p,--n-prompt", a->prompt, "prefill batch sizes, e.g. -p 128,512 (ppN tests; 0: none)")
      ->delimiter(',')
      ->check(CLI::Range(0, 1 << 16));
  cmd->add_option("-n,--n-gen", a->gen, "decode lengths, e.g. -n 128 (tgN tests; 0: none)")
      ->delimiter(',')
      ->check(CLI::Range(0, 1 << 16));
  cmd->add_option("-r,--repetitions", a->reps, "timed repetitions of each test, after one warm-up (mean ± stddev)")
      ->check(CLI::Range(1, 1000));
  cmd->add_option("--tokenizer", a->tokenizer, "llama2.c tokenizer.bin");
  cmd->add_flag("--profile", a->profile, "per-op time breakdown (last repetition)");
  cmd->add_flag("--no-roofline", a->no_roofline, "skip measuring the machine's read bandwidth");
  cmd->add_flag("--json", a->json, "machine-readable output");
  cmd->callback([a] { bench_cmd(*a); });
}

}  // namespace lowbit::cli
