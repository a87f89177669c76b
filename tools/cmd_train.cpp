// colt5 train: train the CoLT5 language model on the built-in key-value recall
// task (or --text FILE), then the two controls (light-only, random-route) with
// the same budget, and print their task accuracies side by side.
#include <cstdio>
#include <filesystem>

#include "colt5.h"
#include "tools/commands.h"
#include "tools/train_util.h"

namespace colt5::tools {
namespace {

struct TrainArgs {
  TrainOptions o;
  std::string preset = "cpu";
  bool controls = true, light_only = false;
  int64_t steps = -1, batch = -1, seq_len = -1, dim = -1, depth = -1, window = -1, ntq = -1, ntkv = -1, nff = -1;
  int64_t pairs = -1;
  double lr = -1;
  int64_t warmup = -1, eval_every = -1;
  bool no_progress = false;
};

// Presets: cpu finishes (model + 2 controls) within 5 minutes on 2 cores.
void apply_preset(TrainArgs& a) {
  TrainOptions& o = a.o;
  if (a.preset == "gpu") {
    o.steps = 1000, o.batch = 16, o.lr = 1e-3, o.warmup = 100, o.eval_every = 100;
    o.task.seq_len = 4096, o.task.num_pairs = 8, o.task.min_distance = 1024;
    o.model.dim = 256, o.model.depth = 4, o.model.light_heads = 8, o.model.light_dim_head = 32;
    o.model.heavy_heads = 8, o.model.heavy_dim_head = 32;
    o.model.light_window_size = 128, o.model.heavy_window_size = 128;
    o.model.num_heavy_tokens_q = 16, o.model.num_heavy_tokens_kv = 64, o.model.num_heavy_ff_tokens = 256;
  } else {
    COLT5_CHECK(a.preset == "cpu", "--preset must be cpu or gpu, got ", a.preset);
    o.steps = 200, o.batch = 8, o.lr = 3e-3, o.warmup = 20, o.eval_every = 50;
    o.task.seq_len = 512, o.task.num_pairs = 4, o.task.min_distance = 192;
    o.model.dim = 64, o.model.depth = 2;
    o.model.light_window_size = 64, o.model.heavy_window_size = 64;
    o.model.num_heavy_tokens_q = 8, o.model.num_heavy_tokens_kv = 16, o.model.num_heavy_ff_tokens = 32;
  }
  if (a.steps > 0) o.steps = a.steps;
  if (a.batch > 0) o.batch = a.batch;
  if (a.seq_len > 0) o.task.seq_len = a.seq_len;
  if (a.dim > 0) o.model.dim = a.dim;
  if (a.depth > 0) o.model.depth = a.depth;
  if (a.window > 0) o.model.light_window_size = o.model.heavy_window_size = a.window;
  if (a.ntq > 0) o.model.num_heavy_tokens_q = a.ntq;
  if (a.ntkv > 0) o.model.num_heavy_tokens_kv = a.ntkv;
  if (a.nff > 0) o.model.num_heavy_ff_tokens = a.nff;
  if (a.pairs > 0) o.task.num_pairs = a.pairs;
  if (a.lr > 0) o.lr = a.lr;
  if (a.warmup >= 0) o.warmup = a.warmup;
  if (a.eval_every >= 0) o.eval_every = a.eval_every;
  o.model.light_only = a.light_only;
  o.progress = !a.no_progress;
  if (o.warmup > o.steps / 2) o.warmup = o.steps / 10;
}

int run_train(TrainArgs& a) {
  apply_preset(a);
  TrainOptions& o = a.o;
  o.label = o.model.light_only ? "light-only" : o.random_route ? "random-route" : "routed";
  std::printf("colt5 train: %s, seq %lld, batch %lld x %lld, %lld steps, dim %lld, depth %lld, window %lld, "
              "heavy q/kv/ff tokens %lld/%lld/%lld, device %s, out %s\n",
              o.text.empty() ? "key-value recall" : ("text " + o.text).c_str(), (long long)o.task.seq_len,
              (long long)o.batch, (long long)o.grad_accum, (long long)o.steps, (long long)o.model.dim,
              (long long)o.model.depth, (long long)o.model.light_window_size, (long long)o.model.num_heavy_tokens_q,
              (long long)o.model.num_heavy_tokens_kv, (long long)o.model.num_heavy_ff_tokens, o.device.c_str(),
              o.out.c_str());
  TrainResult main_r = train_run(o);
  std::printf("%s: eval accuracy %.3f (chance %.3f), eval loss %.4f, %.0f tokens/s, %.1f s\n", o.label.c_str(),
              main_r.eval_acc, main_r.chance, main_r.eval_loss, main_r.tokens_per_s, main_r.seconds);
  namespace fs = std::filesystem;
  std::printf("wrote %s/{checkpoint.safetensors,config.json,metrics.csv,loss.svg%s}\n", o.out.c_str(),
              o.model.light_only ? "" : ",routing.svg");
  if (!a.controls || o.model.light_only || o.random_route) return 0;

  TrainOptions lo = o;
  lo.model.light_only = true, lo.random_route = false, lo.resume = false, lo.label = "light-only";
  lo.out = (fs::path(o.out) / "control-light-only").string();
  TrainResult lr = train_run(lo);
  TrainOptions rr = o;
  rr.random_route = true, rr.resume = false, rr.label = "random-route";
  rr.out = (fs::path(o.out) / "control-random-route").string();
  TrainResult rrr = train_run(rr);
  std::printf("\ntask accuracy after %lld steps (%s, chance %.3f):\n", (long long)o.steps,
              o.text.empty() ? "answers of the recall queries" : "next character", main_r.chance);
  std::printf("  routed (CoLT5)   %.3f   %s\n", main_r.eval_acc, o.out.c_str());
  std::printf("  light-only       %.3f   %s\n", lr.eval_acc, lo.out.c_str());
  std::printf("  random-route     %.3f   %s\n", rrr.eval_acc, rr.out.c_str());
  return 0;
}

}  // namespace

void add_train_command(CLI::App& app) {
  auto a = std::make_shared<TrainArgs>();
  CLI::App* s = app.add_subcommand("train", "Train CoLT5 on a long-range key-value recall task (or --text FILE)");
  s->add_option("--preset", a->preset, "cpu (default: within 5 minutes on 2 cores) or gpu (larger)");
  s->add_option("--steps", a->steps, "optimiser steps");
  s->add_option("--batch", a->batch, "sequences per micro-batch");
  s->add_option("--grad-accum", a->o.grad_accum, "micro-batches per optimiser step")->capture_default_str();
  s->add_option("--seq-len", a->seq_len, "tokens per sequence");
  s->add_option("--lr", a->lr, "peak learning rate (AdamW)");
  s->add_option("--warmup", a->warmup, "warmup steps (then cosine decay to lr/10)");
  s->add_option("--seed", a->o.seed, "seed (model init, data, routing noise)")->capture_default_str();
  s->add_option("--device", a->o.device, "cpu or cuda[:i]")->capture_default_str();
  s->add_option("--out", a->o.out, "output folder")->capture_default_str();
  s->add_flag("--resume", a->o.resume, "continue from OUT/checkpoint.safetensors");
  s->add_option("--eval-every", a->eval_every, "evaluate every N steps");
  s->add_option("--eval-batches", a->o.eval_batches, "eval batches")->capture_default_str();
  s->add_option("--text", a->o.text, "character-level LM on this text file instead of the recall task");
  s->add_option("--dim", a->dim, "model width");
  s->add_option("--depth", a->depth, "blocks");
  s->add_option("--window", a->window, "light and heavy window size");
  s->add_option("--heavy-q", a->ntq, "routed queries per window");
  s->add_option("--heavy-kv", a->ntkv, "routed key/values per window");
  s->add_option("--heavy-ff", a->nff, "routed feed-forward tokens per sequence");
  s->add_option("--pairs", a->pairs, "key-value pairs per sequence");
  s->add_flag("--light-only", a->light_only, "no heavy branches (control)");
  s->add_flag("--random-route", a->o.random_route, "routers pick random tokens (control)");
  s->add_flag("--controls,!--no-controls", a->controls, "also train the light-only and random-route controls")
      ->capture_default_str();
  s->add_flag("--no-progress", a->no_progress, "no progress output");
  command_table().push_back({s, [a]() { return run_train(*a); }});
}

}  // namespace colt5::tools
