// colt5 run: one layer (or op) of the CoLT5 package from its constructor
// keyword arguments, weights and .npy inputs; forward, optionally backward.
// The work is in tools/run_modules.cpp (shared with the tests).
#include <cstdio>

#include "tools/commands.h"
#include "tools/run_modules.h"

namespace colt5::tools {
namespace {

RunOptions g_run;

int run_run() {
  RunResult r = run_module(g_run);
  for (const auto& [name, t] : r.outputs)
    std::fprintf(stderr, "colt5 run: %s %s %s\n", name.c_str(), shape_str(t.shape()).c_str(), dtype_name(t.dtype()));
  if (!r.grads.empty()) std::fprintf(stderr, "colt5 run: %zu gradients -> %s\n", r.grads.size(), g_run.grads.c_str());
  return 0;
}

}  // namespace

void add_run_command(CLI::App& app) {
  CLI::App* sub = app.add_subcommand(
      "run", "Run one CoLT5 layer (or coor_descent / topk) on .npy inputs: the interop and research entry point");
  sub->footer(run_help_text());
  RunOptions& o = g_run;
  sub->add_option("--module", o.module, "Class name (SPEC §2-4, e.g. ConditionalRoutedAttention) or coor_descent / topk")
      ->required();
  sub->add_option("--config", o.config, "JSON object: the package's constructor keyword arguments")->required();
  sub->add_option("--weights", o.weights, "safetensors file with the state dict (absent: fresh init from --seed)");
  sub->add_option("--input", o.input, "Input .npy (float32/float64)")->required();
  sub->add_option("--mask", o.mask, "Mask .npy (bool, true = keep)");
  sub->add_option("--context", o.context, "Context .npy (cross attention; the router's learned routing tokens)");
  sub->add_option("--context-mask", o.context_mask, "Context mask .npy (bool)");
  sub->add_option("--grad-output", o.grad_output, "Output gradient (.npy, or .safetensors by output name): run backward");
  sub->add_option("--output", o.output, "Output .npy (several outputs: Y.<name>.npy) or .safetensors")->required();
  sub->add_option("--grads", o.grads, "safetensors file for the gradients: input, context, every parameter");
  sub->add_option("--device", o.device, "cpu or cuda")->capture_default_str();
  sub->add_option("--dtype", o.dtype, "f32 or f64 (f64: CPU, exact comparisons)")->capture_default_str();
  sub->add_option("--save-weights", o.save_weights, "Write the weights used (e.g. a fresh init) to this safetensors file");
  sub->add_option("--seed", o.seed, "Seed of the fresh initialisation (and random_route)")->capture_default_str();
  command_table().push_back({sub, run_run});
}

}  // namespace colt5::tools
