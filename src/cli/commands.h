// lowbit CLI (floor 6): one function per verb adds its subcommand to the app. Each verb's file is cmd_<verb>.cpp.
#pragma once
#include <CLI/CLI.hpp>

namespace lowbit::cli {

void add_inspect(CLI::App& app);
void add_run(CLI::App& app);
void add_perplexity(CLI::App& app);
void add_bench(CLI::App& app);
void add_synth(CLI::App& app);
void add_eval(CLI::App& app);
void add_quantize(CLI::App& app);
void add_imatrix(CLI::App& app);
void add_formats(CLI::App& app);

}  // namespace lowbit::cli
