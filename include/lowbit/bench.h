// lowbit: end-to-end speed of a model: prefill (ppN) and decode (tgN) tokens/s, the weight bytes each decode
// step reads and the bandwidth that achieves, against the machine's measured read bandwidth (the roofline).
#pragma once
#include <string>
#include <vector>

#include "lowbit/model.h"

namespace lowbit {

struct BenchOptions {
  int prompt_tokens = 512;   // pp: one batch of this many tokens (0: none)
  int gen_tokens = 128;      // tg: this many single-token decode steps (0: none)
  int reps = 5;              // timed repetitions of each, after one untimed warm-up (llama-bench -r)
  bool profile = false;      // per-op time breakdown
  bool roofline = true;      // measure the machine's read bandwidth for the decode's roofline
};

struct BenchResult {
  int threads = 0;
  int prompt_tokens = 0, gen_tokens = 0;
  // Tokens/s: the mean over the repetitions and its sample standard deviation (llama-bench's avg_ts / stddev_ts),
  // and each repetition's figure.
  double pp_tok_s = 0, pp_tok_s_std = 0;
  double tg_tok_s = 0, tg_tok_s_std = 0;
  std::vector<double> pp_samples, tg_samples;
  uint64_t bytes_per_token = 0;   // weight bytes read per decode step
  double tg_gb_s = 0;             // bytes_per_token * tg_tok_s / 1e9
  double machine_gb_s = 0;        // measured read bandwidth at the same thread count (0: not measured)
  double roofline_pct = 0;        // tg_gb_s / machine_gb_s * 100
  std::vector<std::pair<std::string, double>> pp_profile, tg_profile;  // op -> seconds, last repetition (profile only)
};

// Runs the benchmark with the current thread count (lowbit::set_num_threads). Token ids are deterministic
// pseudo-random ids in the vocabulary.
BenchResult run_bench(Model& model, const BenchOptions& o);

}  // namespace lowbit
