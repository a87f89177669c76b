#include "tools/commands.h"

namespace colt5::tools {

std::vector<Command>& command_table() {
  static std::vector<Command> t;
  return t;
}

void register_commands(CLI::App& app) {
  add_info_command(app);
  add_bench_command(app);
  add_train_command(app);
  add_generate_command(app);
  add_eval_command(app);
  add_run_command(app);
}

int run_selected(CLI::App& app) {
  for (const Command& c : command_table())
    if (c.app->parsed()) return c.run();
  return 1;
}

}  // namespace colt5::tools
