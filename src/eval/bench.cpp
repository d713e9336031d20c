#include "lowbit/bench.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <functional>

#include "lowbit/threads.h"
#include "ops/ops.h"

namespace lowbit {

BenchResult run_bench(Model& model, const BenchOptions& o) {
  using clock = std::chrono::steady_clock;
  BenchResult r;
  r.threads = num_threads();
  r.prompt_tokens = o.prompt_tokens;
  r.gen_tokens = o.gen_tokens;
  r.bytes_per_token = model.weight_bytes_per_token();
  const int n_vocab = model.config().n_vocab;
  std::vector<int32_t> ids(static_cast<size_t>(std::max(o.prompt_tokens, o.gen_tokens)));
  uint64_t s = 0x9e3779b97f4a7c15ull;
  for (auto& id : ids) {
    s = s * 6364136223846793005ull + 1442695040888963407ull;
    id = static_cast<int32_t>((s >> 33) % static_cast<uint64_t>(n_vocab));
  }
  std::vector<float> logits(static_cast<size_t>(n_vocab));
  const int reps = std::max(1, o.reps);

  // Warm-up: touch every weight once so page faults do not count -- including the embedding rows of every token
  // the runs use (a forward reads only its own token's row; a first touch of a row costs a page fault, 2.7% of a
  // 1B model's decode time when left in).
  model.forward(std::span<const int32_t>(ids.data(), 1), 0, logits.data(), false);
  {
    std::vector<float> row(static_cast<size_t>(model.config().dim));
    for (const int32_t id : ids) model.embed(std::span<const int32_t>(&id, 1), row.data());
  }

  // Mean and sample standard deviation of tokens/s over the repetitions, after one untimed warm-up (llama-bench).
  auto stats = [](const std::vector<double>& v, double& mean, double& sd) {
    mean = 0;
    for (double x : v) mean += x;
    mean /= static_cast<double>(v.size());
    double ss = 0;
    for (double x : v) ss += (x - mean) * (x - mean);
    sd = v.size() > 1 ? std::sqrt(ss / static_cast<double>(v.size() - 1)) : 0.0;
  };
  auto timed = [&](int tokens, const std::function<void()>& run, std::vector<double>& samples,
                   std::vector<std::pair<std::string, double>>& profile) {
    run();  // warm-up
    for (int rep = 0; rep < reps; ++rep) {
      model.reset_profile();
      model.enable_profile(o.profile);
      const auto t0 = clock::now();
      run();
      samples.push_back(tokens / std::chrono::duration<double>(clock::now() - t0).count());
      profile = model.profile();
    }
  };
  if (o.prompt_tokens > 0) {
    timed(o.prompt_tokens, [&] {
      model.forward(std::span<const int32_t>(ids.data(), static_cast<size_t>(o.prompt_tokens)), 0, logits.data(), false);
    }, r.pp_samples, r.pp_profile);
    stats(r.pp_samples, r.pp_tok_s, r.pp_tok_s_std);
  }
  if (o.gen_tokens > 0) {
    timed(o.gen_tokens, [&] {
      for (int i = 0; i < o.gen_tokens; ++i)
        model.forward(std::span<const int32_t>(ids.data() + i, 1), i, logits.data(), false);
    }, r.tg_samples, r.tg_profile);
    stats(r.tg_samples, r.tg_tok_s, r.tg_tok_s_std);
  }
  model.enable_profile(false);
  r.tg_gb_s = static_cast<double>(r.bytes_per_token) * r.tg_tok_s / 1e9;
  if (o.roofline && o.gen_tokens > 0) r.machine_gb_s = ops::measure_read_bandwidth(size_t{1} << 30, r.threads);
  r.roofline_pct = r.machine_gb_s > 0 ? 100.0 * r.tg_gb_s / r.machine_gb_s : 0;
  return r;
}

}  // namespace lowbit
