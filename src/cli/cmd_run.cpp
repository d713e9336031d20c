// lowbit run -m MODEL -p PROMPT -n N: streams generated text to stdout; timings to stderr.
#include <chrono>
#include <cstdio>

#include "cli/commands.h"
#include "cli/common.h"
#include "lowbit/error.h"
#include "lowbit/model.h"
#include "lowbit/sampler.h"
#include "lowbit/threads.h"

namespace lowbit::cli {

namespace {

struct RunArgs {
  std::string model, tokenizer, prompt;
  int n = 128, threads = 0, ctx = 0;
  SamplerParams sp;
  bool no_bos = false, json = false, stop_at_eos = true;
};

void run(const RunArgs& a) {
  using clock = std::chrono::steady_clock;
  set_num_threads(a.threads);
  Loaded m = load(a.model, a.tokenizer);
  const Tokenizer& tok = need_tokenizer(m);
  if (int64_t bad = first_invalid_utf8(a.prompt); bad >= 0) fail("--prompt", "text", "invalid UTF-8 at byte " + std::to_string(bad));
  Model model(m.file, a.ctx);
  std::vector<int32_t> ids = tok.encode(a.prompt, tok.add_bos() && !a.no_bos);
  if (ids.empty()) {
    if (tok.bos() < 0) fail(a.model, "prompt", "empty prompt and the model has no BOS token to start from");
    ids.push_back(tok.bos());
  }
  if (static_cast<int>(ids.size()) + a.n > model.max_context())
    fail(a.model, "-n", "prompt (" + std::to_string(ids.size()) + " tokens) + " + std::to_string(a.n) +
                            " new tokens exceed the context of " + std::to_string(model.max_context()));
  const int n_vocab = model.config().n_vocab;
  std::vector<float> logits(static_cast<size_t>(n_vocab));
  Sampler sampler(a.sp);
  StreamDecoder out(tok);
  std::string text;
  auto emit = [&](const std::string& s) {
    if (s.empty()) return;
    text += s;
    if (!a.json) {
      std::fwrite(s.data(), 1, s.size(), stdout);
      std::fflush(stdout);
    }
  };
  // Echo the prompt (without BOS) so the stream reads as one text.
  for (int32_t id : ids) emit(out.push(id));

  auto t0 = clock::now();
  model.forward(ids, 0, logits.data(), false);
  auto t1 = clock::now();
  int pos = static_cast<int>(ids.size());
  std::vector<int32_t> generated;
  for (int i = 0; i < a.n; ++i) {
    int32_t next = sampler.sample(logits.data(), n_vocab);
    if (a.stop_at_eos && next == tok.eos()) break;
    generated.push_back(next);
    emit(out.push(next));
    if (i + 1 == a.n) break;
    model.forward(std::span<const int32_t>(&next, 1), pos++, logits.data(), false);
  }
  emit(out.flush());
  auto t2 = clock::now();
  const double pp_s = std::chrono::duration<double>(t1 - t0).count();
  const double tg_s = std::chrono::duration<double>(t2 - t1).count();
  if (a.json) {
    nlohmann::json j = {{"prompt_tokens", ids.size()}, {"generated_tokens", generated.size()}, {"text", text},
                        {"token_ids", generated}, {"prefill_tok_s", ids.size() / pp_s},
                        {"decode_tok_s", generated.empty() ? 0.0 : generated.size() / tg_s}};
    print_json(j);
  } else {
    std::fputc('\n', stdout);
    std::fflush(stdout);
    std::fprintf(stderr, "prompt: %zu tokens in %.3fs (%.1f tok/s); generated %zu tokens in %.3fs (%.1f tok/s)\n",
                 ids.size(), pp_s, ids.size() / pp_s, generated.size(), tg_s,
                 generated.empty() ? 0.0 : generated.size() / tg_s);
  }
}

}  // namespace

void add_run(CLI::App& app) {
  auto a = std::make_shared<RunArgs>();
  auto* cmd = app.add_subcommand("run", "Generate text from a prompt");
  cmd->add_option("-m,--model", a->model, "model: GGUF file, Hugging Face directory or llama2.c checkpoint")->required();
  cmd->add_option("-p,--prompt", a->prompt, "prompt text (default: start from BOS)");
  cmd->add_option("-n,--n-predict", a->n, "tokens to generate")->check(CLI::Range(0, 1 << 20));
  cmd->add_option("--temp", a->sp.temperature, "temperature (0 = greedy)")->check(CLI::Range(0.0, 100.0));
  cmd->add_option("--top-k", a->sp.top_k, "top-k (0 = off)")->check(CLI::Range(0, 1 << 30));
  cmd->add_option("--top-p", a->sp.top_p, "top-p (1 = off)")->check(CLI::Range(0.0, 1.0));
  cmd->add_option("-s,--seed", a->sp.seed, "random seed");
  cmd->add_option("-t,--threads", a->threads, "threads (default: all cores)")->check(CLI::Range(0, 1024));
  cmd->add_option("-c,--ctx", a->ctx, "context size (default: the model's)")->check(CLI::Range(0, 1 << 24));
  cmd->add_option("--tokenizer", a->tokenizer, "llama2.c tokenizer.bin (default: beside the checkpoint)");
  cmd->add_flag("--no-bos", a->no_bos, "do not prepend BOS to the prompt");
  cmd->add_flag("!--ignore-eos", a->stop_at_eos, "keep generating after EOS");
  cmd->add_flag("--json", a->json, "print one JSON object at the end instead of streaming");
  cmd->callback([a] { run(*a); });
}

}  // namespace lowbit::cli
