// The colt5 command line: colt5 <command> [options]. Each command lives in
// its own file (tools/cmd_*.cpp) and registers itself here.
#include <CLI/CLI.hpp>

#include <cstdio>
#include <exception>

#include "engine/error.h"
#include "tools/commands.h"

int main(int argc, char** argv) {
  CLI::App app{"colt5: a C++ tensor and autograd engine for conditionally routed long-range transformers (CoLT5)"};
  app.require_subcommand(1);
  app.set_help_all_flag("--help-all", "Show help for every command");
  colt5::tools::register_commands(app);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  try {
    return colt5::tools::run_selected(app);
  } catch (const colt5::Error& e) {
    std::fprintf(stderr, "colt5: error: %s\n", e.what());
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "colt5: error: %s\n", e.what());
    return 1;
  }
}
