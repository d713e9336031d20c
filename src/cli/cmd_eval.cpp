// lowbit eval -m QUANT --base ORIGINAL -f TEXT [--ctx 512] [--chunks N]: how far a (quantized) model is from its
// base over a text: PPL of both, KL(base || quant), top-1 agreement and Δp, like llama.cpp's --kl-divergence
// (definitions in include/lowbit/kld.h). The text is tokenized with the base model's tokenizer.
#include <cstdio>

#include "cli/commands.h"
#include "cli/common.h"
#include "core/progress.h"
#include "lowbit/error.h"
#include "lowbit/kld.h"
#include "lowbit/threads.h"

namespace lowbit::cli {

namespace {

struct EvalArgs {
  std::string model, base, tokenizer, base_tokenizer, file;
  int ctx = 512, chunks = -1, threads = 0;
  bool json = false;
};

void eval_cmd(const EvalArgs& a) {
  set_num_threads(a.threads);
  Loaded b = load(a.base, a.base_tokenizer);
  const Tokenizer& tok = need_tokenizer(b);
  Loaded q = load(a.model, a.tokenizer);
  if (q.file->config.n_vocab != b.file->config.n_vocab)
    fail(a.model, "n_vocab",
         "has a vocabulary of " + std::to_string(q.file->config.n_vocab) + " tokens but the base " + a.base +
             " has " + std::to_string(b.file->config.n_vocab) + "; both models must share one vocabulary");
  const std::string text = read_text_file(a.file);
  Model base(b.file, std::max(a.ctx, 1));
  Model quant(q.file, std::max(a.ctx, 1));
  std::vector<int32_t> tokens = tok.encode(text, tok.add_bos());
  const int64_t chunks = window_count(a.file, tokens.size(), a.ctx, a.chunks);
  if (!a.json)
    std::fprintf(stderr, "%s: %zu tokens (base tokenizer), %lld chunks of %d (scoring the second half of each)\n",
                 a.file.c_str(), tokens.size(), static_cast<long long>(chunks), a.ctx);
  ProgressBar bar("eval", chunks, !a.json);
  EvalOptions o;
  o.ctx = a.ctx;
  o.chunks = a.chunks;
  o.on_chunk = [&](int c, double kld, double same) {
    char s[64];
    std::snprintf(s, sizeof s, "KLD %.6f top-1 %.2f%%", kld, 100.0 * same);
    bar.update(c + 1, s);
  };
  EvalResult r = evaluate_pair(quant, base, tokens, tok.add_bos() ? tok.bos() : -1, o);
  bar.finish();
  if (a.json) {
    nlohmann::json j = {
        {"model", a.model}, {"base", a.base}, {"text", a.file}, {"ctx", r.ctx}, {"chunks", r.chunks},
        {"text_tokens", r.text_tokens}, {"scored", r.scored},
        {"ppl_quant", r.ppl_quant}, {"ppl_quant_stderr", r.ppl_quant_stderr},
        {"ppl_base", r.ppl_base}, {"ppl_base_stderr", r.ppl_base_stderr},
        {"cor_ln_ppl", r.cor_ln_ppl}, {"ln_ppl_ratio", r.ln_ppl_ratio},
        {"ln_ppl_ratio_stderr", r.ln_ppl_ratio_stderr}, {"ppl_ratio", r.ppl_ratio},
        {"ppl_ratio_stderr", r.ppl_ratio_stderr}, {"ppl_delta", r.ppl_delta},
        {"ppl_delta_stderr", r.ppl_delta_stderr},
        {"kld_mean", r.kld_mean}, {"kld_stderr", r.kld_stderr}, {"kld_median", r.kld_median},
        {"kld_p90", r.kld_p90}, {"kld_p99", r.kld_p99}, {"kld_max", r.kld_max}, {"kld_min", r.kld_min},
        {"same_top", r.same_top}, {"same_top_stderr", r.same_top_stderr},
        {"dp_mean", r.dp_mean}, {"dp_stderr", r.dp_stderr}, {"dp_rms", r.dp_rms},
        {"dp_rms_stderr", r.dp_rms_stderr}, {"dp_max_abs", r.dp_max_abs},
        {"running_kld", r.running_kld}, {"seconds", r.seconds}};
    print_json(j);
    return;
  }
  std::printf("====== Perplexity statistics ======\n");
  std::printf("Mean PPL(Q)                   : %10.6f +/- %10.6f\n", r.ppl_quant, r.ppl_quant_stderr);
  std::printf("Mean PPL(base)                : %10.6f +/- %10.6f\n", r.ppl_base, r.ppl_base_stderr);
  std::printf("Cor(ln(PPL(Q)), ln(PPL(base))): %9.2f%%\n", 100.0 * r.cor_ln_ppl);
  std::printf("Mean ln(PPL(Q)/PPL(base))     : %10.6f +/- %10.6f\n", r.ln_ppl_ratio, r.ln_ppl_ratio_stderr);
  std::printf("Mean PPL(Q)/PPL(base)         : %10.6f +/- %10.6f\n", r.ppl_ratio, r.ppl_ratio_stderr);
  std::printf("Mean PPL(Q)-PPL(base)         : %10.6f +/- %10.6f\n", r.ppl_delta, r.ppl_delta_stderr);
  std::printf("\n====== KL divergence statistics ======\n");
  std::printf("Mean    KLD: %10.6f +/- %10.6f\n", r.kld_mean, r.kld_stderr);
  std::printf("Maximum KLD: %10.6f\n", r.kld_max);
  std::printf("99.0%%   KLD: %10.6f\n", r.kld_p99);
  std::printf("90.0%%   KLD: %10.6f\n", r.kld_p90);
  std::printf("Median  KLD: %10.6f\n", r.kld_median);
  std::printf("Minimum KLD: %10.6f\n", r.kld_min);
  std::printf("\n====== Token probability statistics ======\n");
  std::printf("Mean    Δp: %8.3f +/- %.3f %%\n", 100.0 * r.dp_mean, 100.0 * r.dp_stderr);
  std::printf("Maximum |Δp|: %6.3f%%\n", 100.0 * r.dp_max_abs);
  std::printf("RMS Δp    : %8.3f +/- %.3f %%\n", 100.0 * r.dp_rms, 100.0 * r.dp_rms_stderr);
  std::printf("Same top p: %8.3f +/- %.3f %%\n", 100.0 * r.same_top, 100.0 * r.same_top_stderr);
  std::fprintf(stderr, "%lld positions compared in %.2fs\n", static_cast<long long>(r.scored), r.seconds);
}

}  // namespace

void add_eval(CLI::App& app) {
  auto a = std::make_shared<EvalArgs>();
  auto* cmd = app.add_subcommand("eval", "KL divergence, top-1 agreement and PPL of a model against its base");
  cmd->add_option("-m,--model", a->model, "model to evaluate (e.g. the quantized one)")->required();
  cmd->add_option("--base", a->base, "reference model (its tokenizer tokenizes the text)")->required();
  cmd->add_option("-f,--file", a->file, "UTF-8 text file")->required();
  cmd->add_option("-c,--ctx", a->ctx, "window size in tokens")->check(CLI::Range(4, 1 << 20));
  cmd->add_option("--chunks", a->chunks, "number of windows (default: all)");
  cmd->add_option("-t,--threads", a->threads, "threads (default: all cores)")->check(CLI::Range(0, 1024));
  cmd->add_option("--tokenizer", a->tokenizer, "llama2.c tokenizer.bin for -m (default: beside the checkpoint)");
  cmd->add_option("--base-tokenizer", a->base_tokenizer, "llama2.c tokenizer.bin for --base");
  cmd->add_flag("--json", a->json, "machine-readable output");
  cmd->callback([a] { eval_cmd(*a); });
}

}  // namespace lowbit::cli
