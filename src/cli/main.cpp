// lowbit: compress LLMs and run them on CPUs. `lowbit <verb> --help` for each verb.
#include <cstdio>
#include <exception>

#include "cli/commands.h"
#include "lowbit/error.h"

int main(int argc, char** argv) {
  CLI::App app{"lowbit: load, quantize, evaluate and run LLMs on CPUs"};
  app.require_subcommand(1);
  app.set_version_flag("--version", std::string("lowbit ") + LOWBIT_VERSION);
  lowbit::cli::add_inspect(app);
  lowbit::cli::add_run(app);
  lowbit::cli::add_perplexity(app);
  lowbit::cli::add_bench(app);
  lowbit::cli::add_synth(app);
  lowbit::cli::add_eval(app);
  lowbit::cli::add_quantize(app);
  lowbit::cli::add_imatrix(app);
  lowbit::cli::add_formats(app);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  } catch (const lowbit::Error& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  } catch (const std::bad_alloc&) {
    std::fprintf(stderr, "error: out of memory\n");
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
  return 0;
}
