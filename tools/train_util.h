// Training for `colt5 train` / `eval` / `generate`: the run loop (AdamW,
// clipping, warmup-cosine, gradient accumulation, periodic eval, resumable
// checkpoints), a one-line progress bar, metrics CSV and SVG plots.
//
// Output folder of a run:
//   checkpoint.safetensors  "model.<name>" weights, "optim.<...>" AdamW state;
//                           metadata: step, route generator state
//   config.json             everything needed to rebuild model and task
//   metrics.csv             step,lr,loss,grad_norm,tokens_per_s,eval_loss,eval_acc
//   loss.svg, routing.svg   the pictures (see README "Training: colt5 train")
//
// Determinism: the batch of step s is rows [s * batch * accum, ...) of the
// task stream `seed`; the model is initialised from Generator(seed); the
// random-route generator's state is checkpointed. Same seed and device, same
// losses; a resumed run continues the same curve.
#pragma once
#include <cmath>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "engine/device.h"
#include "engine/json.h"
#include "layers/lm.h"
#include "layers/recall_task.h"

namespace colt5::tools {

struct TrainOptions {
  // schedule
  int64_t steps = 150, batch = 16, grad_accum = 1, warmup = 15;
  double lr = 3e-3, min_lr_ratio = 0.1, weight_decay = 0.01, clip = 1.0;
  uint64_t seed = 0;
  std::string device = "cpu";
  // output
  std::string out = "runs/train";
  bool resume = false;
  int64_t eval_every = 25, eval_batches = 8;
  bool progress = true;  // bar (TTY) or lines
  bool plots = true;
  int64_t stop_after = -1;  // stop (with a checkpoint) after this many steps (tests)
  // task
  std::string text;  // char-level LM on this file instead of recall
  RecallTaskConfig task{};
  // model
  ColT5LMConfig model{};
  bool random_route = false;
  std::string label = "routed";
};

struct TrainResult {
  std::vector<double> losses;  // per optimiser step (this process)
  double eval_loss = 0, eval_acc = 0, chance = 0;
  double tokens_per_s = 0, seconds = 0;
  int64_t step = 0;
  std::vector<double> eval_steps, eval_accs, eval_losses;  // every eval of the run (resumed part included)
  std::vector<double> value_routed, answer_routed;         // routing_stats per layer (recall, routed models)
};

TrainResult train_run(const TrainOptions& opt);

// config.json <-> options (model + task part)
Json options_to_json(const TrainOptions& opt);
TrainOptions options_from_json(const Json& j);

// What eval/generate need: the model built from OUT/config.json with OUT/checkpoint.safetensors loaded.
struct LoadedRun {
  TrainOptions opt;
  std::unique_ptr<RecallTask> recall;
  std::unique_ptr<TextTask> text;
  std::shared_ptr<ColT5LM> model;
};
LoadedRun load_run(const std::string& dir, const std::string& device);

// Accuracy / loss on `batches` fixed eval batches (answer positions for recall, every position for text).
struct EvalResult {
  double loss = 0, acc = 0;
  int64_t scored = 0;
};
EvalResult evaluate(const ColT5LM& model, const RecallTask* recall, const TextTask* text, int64_t batches,
                    int64_t batch, uint64_t seed, bool random_route, Device dev);

// Did the routers pick what the answers need? Over `batches` eval batches of
// the recall task, per layer: the fraction of answers whose value token is
// among the key/values routed (any route) for the answer's window, and the
// fraction of answer positions routed as heavy queries.
struct RoutingStats {
  std::vector<double> value_routed, answer_routed;  // per layer
  int64_t answers = 0;
};
RoutingStats routing_stats(const ColT5LM& model, const RecallTask& recall, int64_t batches, int64_t batch,
                           uint64_t seed, bool random_route, Device dev);

// ---- presentation
class Progress {
 public:
  Progress(std::string label, int64_t total, bool enabled);
  void update(int64_t step, double loss, double tokens_per_s, double elapsed_s);
  void note(const std::string& line);  // a full line (clears the bar first)
  void finish();

 private:
  std::string label_;
  int64_t total_;
  bool enabled_, tty_, dirty_ = false;
  int64_t last_line_step_ = -1;
};

struct Series {
  std::string name, color;
  std::vector<double> x, y;
  bool dashed = false;
};
// A plot with labelled axes; one or more panels side by side.
struct Panel {
  std::string title, xlabel, ylabel;
  std::vector<Series> series;
  double ymin = NAN, ymax = NAN;  // NAN: from the data
};
void write_svg_panels(const std::string& path, const std::string& title, const std::vector<Panel>& panels);

// Routing picture: per sequence, a strip of N positions; informative tokens
// (pairs) and answers marked; below, per layer, the key/value positions the
// kv router picked for the last window and the query positions picked there.
struct RoutingRow {
  int64_t n = 0;
  std::vector<int64_t> key_pos, value_pos, answer_pos;
  std::vector<std::vector<int64_t>> kv_picked, q_picked;  // per layer
};
void write_routing_svg(const std::string& path, const std::string& title, const std::vector<RoutingRow>& rows);

}  // namespace colt5::tools
