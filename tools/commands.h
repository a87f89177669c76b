// Command registry for the colt5 tool.
#pragma once
#include <CLI/CLI.hpp>

#include <functional>
#include <string>
#include <vector>

namespace colt5::tools {

struct Command {
  CLI::App* app;
  std::function<int()> run;
};

// Registry filled by register_commands; run_selected runs the parsed one.
std::vector<Command>& command_table();
void register_commands(CLI::App& app);
int run_selected(CLI::App& app);

// Each command file provides one of these.
void add_info_command(CLI::App& app);
void add_bench_command(CLI::App& app);
void add_train_command(CLI::App& app);
void add_generate_command(CLI::App& app);
void add_eval_command(CLI::App& app);
void add_run_command(CLI::App& app);

}  // namespace colt5::tools
