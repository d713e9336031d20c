// lowbit imatrix: llama-imatrix's importance matrix computed by lowbit's forward pass, written as a file
// llama-quantize reads (GGUF, as llama-imatrix writes by default since 2025; or the legacy .dat format).
#include <cstdio>
#include <memory>

#include "calib/imatrix_collect.h"
#include "cli/commands.h"
#include "cli/common.h"
#include "core/progress.h"
#include "io/imatrix_write.h"
#include "lowbit/error.h"
#include "lowbit/threads.h"

namespace lowbit::cli {

namespace {

struct ImatrixArgs {
  std::string model, file, out, output_format;
  int ctx = 512, chunks = -1, threads = 0;
  bool json = false;
};

void imatrix_cmd(const ImatrixArgs& a) {
  set_num_threads(a.threads);
  // The format first, so a bad value fails before any work: by --output-format, else by the name (.dat: legacy).
  std::string fmt = a.output_format;
  if (fmt.empty()) fmt = a.out.size() >= 4 && a.out.compare(a.out.size() - 4, 4, ".dat") == 0 ? "dat" : "gguf";
  if (fmt != "gguf" && fmt != "dat") fail("", "--output-format", "expected gguf or dat, got '" + fmt + "'");
  Loaded m = load(a.model, "");
  const Tokenizer& tok = need_tokenizer(m);
  const std::vector<int32_t> tokens = tok.encode(read_text_file(a.file), tok.add_bos());
  Model model(m.file, a.ctx);
  // llama-imatrix's attention reads its F16 KV cache: the same rounding here keeps the entries at llama.cpp's.
  model.set_f16_attention(true);
  calib::ImatrixOptions o;
  o.chunk_size = a.ctx;
  o.chunks = a.chunks;
  o.bos = tok.add_bos() ? tok.bos() : -1;
  o.dataset = a.file;
  std::unique_ptr<ProgressBar> bar;
  const io::ImatrixSums s = calib::collect_imatrix(model, tokens, o, [&](int done, int total) {
    if (!bar) bar = std::make_unique<ProgressBar>("imatrix", total, !a.json);
    bar->update(done, "");
  });
  if (bar) bar->finish();
  if (fmt == "gguf") io::write_imatrix_gguf(a.out, s);
  else io::write_imatrix_legacy(a.out, s);
  if (a.json) {
    print_json({{"model", a.model}, {"text", a.file}, {"output", a.out}, {"output_format", fmt},
                {"chunks", s.chunk_count}, {"chunk_size", s.chunk_size}, {"entries", s.entries.size()}});
    return;
  }
  std::printf("wrote %s (%s): %zu entries, %lld chunks of %lld tokens\n", a.out.c_str(), fmt.c_str(), s.entries.size(),
              static_cast<long long>(s.chunk_count), static_cast<long long>(s.chunk_size));
}

}  // namespace

void add_imatrix(CLI::App& app) {
  auto a = std::make_shared<ImatrixArgs>();
  auto* cmd = app.add_subcommand("imatrix", "Importance matrix (llama-imatrix's statistics) for llama-quantize / lowbit --imatrix");
  cmd->add_option("-m,--model", a->model, "model: GGUF file, Hugging Face directory or llama2.c checkpoint")->required();
  cmd->add_option("-f,--file", a->file, "UTF-8 text (calibrate on text you will not evaluate on)")->required();
  cmd->add_option("-o,--output", a->out, "output file (written atomically)")->required();
  cmd->add_option("-c,--ctx", a->ctx, "tokens per chunk (llama-imatrix -c)")->check(CLI::Range(2, 1 << 20));
  cmd->add_option("--chunks", a->chunks, "chunks to use (default: all that fit)");
  cmd->add_option("--output-format", a->output_format,
                  "gguf (llama-imatrix's default since 2025) or dat (the legacy format; also chosen by a .dat name)");
  cmd->add_option("-t,--threads", a->threads, "threads (default: all cores)")->check(CLI::Range(0, 1024));
  cmd->add_flag("--json", a->json, "machine-readable summary");
  cmd->callback([a] { imatrix_cmd(*a); });
}

}  // namespace lowbit::cli
