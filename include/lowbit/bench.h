// lowbit: end-to-end speed of a model: prefill (ppN) and decode (tgN) tokens/s, the weight bytes each decode
// step reads and the bandwidth that achieves, against the machine's measured read bandwidth (the roofline).
#pragma once
#include <string>
#include <vector>

#include "lowbit/model.h"

namespace lowbit {

struct BenchOptions {
  int prompt_tokens = 512;   // pp: one batch of this many tokens
  int gen_tokens = 128;      // tg: this many single-token decode steps
  int reps = 1;              // best of
  bool profile = false;      // per-op time breakdown
};

struct BenchResult {
  int threads = 0;
  int prompt_tokens = 0, gen_tokens = 0;
  double pp_tok_s = 0;
  double tg_tok_s = 0;
  uint64_t bytes_per_token = 0;   // weight bytes read per decode step
  double tg_gb_s = 0;             // bytes_per_token * tg_tok_s / 1e9
  double machine_gb_s = 0;        // measured read bandwidth at the same thread count
  double roofline_pct = 0;        // tg_gb_s / machine_gb_s * 100
  std::vector<std::pair<std::string, double>> pp_profile, tg_profile;  // op -> seconds (profile only)
};

// Runs the benchmark with the current thread count (lowbit::set_num_threads). Token ids are deterministic
// pseudo-random ids in the vocabulary.
BenchResult run_bench(Model& model, const BenchOptions& o);

}  // namespace lowbit
