// lowbit perplexity -m MODEL -f TEXT [--ctx 512] [--chunks N]: llama.cpp's perplexity method.
#include <cstdio>

#include "cli/commands.h"
#include "cli/common.h"
#include "core/progress.h"
#include "lowbit/error.h"
#include "lowbit/perplexity.h"
#include "lowbit/threads.h"

namespace lowbit::cli {

namespace {

struct PplArgs {
  std::string model, tokenizer, file;
  int ctx = 512, chunks = -1, threads = 0, batch = 0;
  bool json = false;
};

void perplexity_cmd(const PplArgs& a) {
  set_num_threads(a.threads);
  Loaded m = load(a.model, a.tokenizer);
  const Tokenizer& tok = need_tokenizer(m);
  const std::string text = read_text_file(a.file);
  Model model(m.file, std::max(a.ctx, 1));
  std::vector<int32_t> tokens = tok.encode(text, tok.add_bos());
  const int64_t chunks = window_count(a.file, tokens.size(), a.ctx, a.chunks);
  if (!a.json)
    std::fprintf(stderr, "%s: %zu tokens, %lld chunks of %d (scoring the second half of each)\n", a.file.c_str(),
                 tokens.size(), static_cast<long long>(chunks), a.ctx);
  ProgressBar bar("perplexity", chunks, !a.json);
  PerplexityOptions o;
  o.ctx = a.ctx;
  o.chunks = a.chunks;
  o.batch = a.batch;
  std::string running;
  o.on_chunk = [&](int c, double ppl) {
    char buf[64];
    std::snprintf(buf, sizeof buf, "[%d]%.4f,", c + 1, ppl);
    running += buf;
    char s[48];
    std::snprintf(s, sizeof s, "PPL %.4f", ppl);
    bar.update(c + 1, s);
  };
  PerplexityResult r = perplexity_tokens(model, tokens, tok.add_bos() ? tok.bos() : -1, o);
  bar.finish();
  if (a.json) {
    nlohmann::json j = {{"model", a.model}, {"text", a.file}, {"ctx", r.ctx}, {"chunks", r.chunks}, {"batch", a.batch},
                        {"text_tokens", r.text_tokens}, {"scored", r.scored}, {"ppl", r.ppl},
                        {"ppl_stderr", r.ppl_stderr}, {"mean_nll", r.mean_nll}, {"running_ppl", r.running},
                        {"seconds", r.seconds}};
    print_json(j);
    return;
  }
  std::printf("%s\n", running.c_str());
  std::printf("Final estimate: PPL = %.4f +/- %.5f\n", r.ppl, r.ppl_stderr);
  std::fprintf(stderr, "%lld predictions scored in %.2fs (%.1f tokens/s)\n", static_cast<long long>(r.scored),
               r.seconds, r.chunks * static_cast<double>(r.ctx) / r.seconds);
}

}  // namespace

void add_perplexity(CLI::App& app) {
  auto a = std::make_shared<PplArgs>();
  auto* cmd = app.add_subcommand("perplexity", "Perplexity over a text file (llama.cpp's method)");
  cmd->add_option("-m,--model", a->model, "model: GGUF file, Hugging Face directory or llama2.c checkpoint")->required();
  cmd->add_option("-f,--file", a->file, "UTF-8 text file")->required();
  cmd->add_option("-c,--ctx", a->ctx, "window size in tokens")->check(CLI::Range(4, 1 << 20));
  cmd->add_option("--chunks", a->chunks, "number of windows (default: all)");
  cmd->add_option("-b,--batch", a->batch, "tokens per forward call (default: the whole window; 1 = the decode path)")
      ->check(CLI::Range(0, 1 << 20));
  cmd->add_option("-t,--threads", a->threads, "threads (default: all cores)")->check(CLI::Range(0, 1024));
  cmd->add_option("--tokenizer", a->tokenizer, "llama2.c tokenizer.bin (default: beside the checkpoint)");
  cmd->add_flag("--json", a->json, "machine-readable output");
  cmd->callback([a] { perplexity_cmd(*a); });
}

}  // namespace lowbit::cli
