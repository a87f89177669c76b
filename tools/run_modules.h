// `colt5 run`: the interop and research entry point. One layer (or a bare op)
// built from the PyTorch package's constructor keyword arguments (a JSON file),
// weights from a safetensors file (or a fresh initialisation from a seed),
// forward on .npy inputs, and optionally backward with a given output gradient.
//
// This file holds everything but the command-line parsing (tools/cmd_run.cpp),
// so the tests drive it directly: the table of module names -> constructor and
// forward, the config parsing, the file handling and the checks.
#pragma once
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "engine/generator.h"
#include "engine/json.h"
#include "engine/tensor.h"
#include "layers/module.h"

namespace colt5::tools {

// What `colt5 run` was asked to do; paths empty = not given.
struct RunOptions {
  std::string module;        // --module: class name (SPEC §2-4) or coor_descent / topk
  std::string config;        // --config: JSON object of constructor keyword arguments
  std::string weights;       // --weights: safetensors (state-dict names); empty: fresh init from seed
  std::string input;         // --input: .npy
  std::string mask;          // --mask: .npy, bool
  std::string context;       // --context: .npy
  std::string context_mask;  // --context-mask: .npy, bool
  std::string grad_output;   // --grad-output: .npy (primary output) or .safetensors (named outputs)
  std::string output;        // --output: .npy or .safetensors
  std::string grads;         // --grads: .safetensors
  std::string save_weights;  // --save-weights: .safetensors
  std::string device = "cpu";
  std::string dtype = "f32";
  uint64_t seed = 0;
};

// What one run produced (already written to the files asked for).
struct RunResult {
  std::vector<std::pair<std::string, Tensor>> outputs;  // named outputs, on the CPU
  std::map<std::string, Tensor> grads;                   // "input", "context", parameter names
};

// The inputs of one forward, converted to the run's dtype and device.
struct RunInputs {
  Tensor input, mask, context, context_mask;
};

// A built module (or op) ready to run.
struct Runnable {
  std::string name;
  std::shared_ptr<Module> module;  // null for the bare ops
  // Forward; the named outputs, differentiable ones first in `differentiable`.
  std::function<std::vector<std::pair<std::string, Tensor>>(const RunInputs&)> forward;
  std::vector<std::string> differentiable;  // outputs a gradient may be given for; [0] is the primary one
  bool takes_mask = false, takes_context = false, takes_context_mask = false;
};

// Every accepted --module name, sorted.
std::vector<std::string> run_module_names();
// Builds `name` from `config` (a JSON object; `what` names it in messages, e.g.
// the file). Throws colt5::Error for an unknown name, unknown or missing keys,
// wrongly typed values and invalid configurations.
Runnable build_runnable(const std::string& name, const Json& config, Generator& gen,
                        const std::string& what = "config");

// Does everything `colt5 run` does; errors (colt5::Error) name the file and the problem.
RunResult run_module(const RunOptions& opt);

// The help text's description of the modules and files.
std::string run_help_text();

}  // namespace colt5::tools
