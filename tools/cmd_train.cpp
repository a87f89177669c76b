// colt5 train: train the CoLT5 language model on the built-in key-value recall
// task (or --text FILE), then the two controls (light-only, random-route) with
// the same budget, and print their task accuracies side by side.
#include <algorithm>
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
  int64_t routes = -1, pairs = -1, filler = -1, min_distance = -1, eval_batches = -1;
  double lr = -1;
  int64_t warmup = -1, eval_every = -1;
  bool rotary = false, no_progress = false;
};

// Presets: cpu finishes (model + 2 controls) within 5 minutes on 2 cores.
void apply_preset(TrainArgs& a) {
  TrainOptions& o = a.o;
  auto& m = o.model;
  if (a.preset == "gpu") {
    o.steps = 500, o.batch = 16, o.lr = 1e-3, o.warmup = 50, o.eval_every = 50, o.eval_batches = 8;
    o.task.seq_len = 4096;
    m.dim = 256, m.depth = 4, m.light_heads = 8, m.light_dim_head = 32, m.heavy_heads = 8, m.heavy_dim_head = 32;
    m.light_window_size = 128, m.heavy_window_size = 128;
    m.num_heavy_tokens_q = 16, m.num_heavy_tokens_kv = 32, m.num_routed_kv = 4, m.num_heavy_ff_tokens = 512;
  } else {
    COLT5_CHECK(a.preset == "cpu", "--preset must be cpu or gpu, got ", a.preset);
    o.steps = 150, o.batch = 16, o.lr = 3e-3, o.warmup = 15, o.eval_every = 25, o.eval_batches = 8;
    o.task.seq_len = 512;
    m.dim = 64, m.depth = 2, m.light_heads = 4, m.light_dim_head = 16, m.heavy_heads = 8, m.heavy_dim_head = 16;
    m.light_window_size = 64, m.heavy_window_size = 64;
    m.num_heavy_tokens_q = 8, m.num_heavy_tokens_kv = 8, m.num_routed_kv = 4, m.num_heavy_ff_tokens = 32;
  }
  o.task.num_pairs = 1, o.task.num_filler = 1, o.task.num_keys = 8, o.task.num_values = 16;
  if (a.steps > 0) o.steps = a.steps;
  if (a.batch > 0) o.batch = a.batch;
  if (a.seq_len > 0) o.task.seq_len = a.seq_len;
  if (a.dim > 0) m.dim = a.dim;
  if (a.depth > 0) m.depth = a.depth;
  if (a.window > 0) m.light_window_size = m.heavy_window_size = a.window;
  if (a.ntq > 0) m.num_heavy_tokens_q = a.ntq;
  if (a.ntkv > 0) m.num_heavy_tokens_kv = a.ntkv;
  if (a.routes > 0) m.num_routed_kv = a.routes;
  if (a.nff > 0) m.num_heavy_ff_tokens = a.nff;
  if (a.rotary) m.rotary = true;
  if (a.pairs > 0) o.task.num_pairs = a.pairs, o.task.num_keys = std::max<int64_t>(o.task.num_keys, a.pairs);
  if (a.filler > 0) o.task.num_filler = a.filler;
  if (a.lr > 0) o.lr = a.lr;
  if (a.warmup >= 0) o.warmup = a.warmup;
  if (a.eval_every >= 0) o.eval_every = a.eval_every;
  if (a.eval_batches > 0) o.eval_batches = a.eval_batches;
  m.light_only = a.light_only;
  o.progress = !a.no_progress;
  if (o.warmup > o.steps / 2) o.warmup = o.steps / 10;
  // the values lie beyond what the light branches reach, unless asked otherwise
  const int64_t reach = light_reach(m);
  o.task.min_distance = a.min_distance >= 0 ? a.min_distance : reach;
  if (o.text.empty() && o.task.min_distance < reach)
    std::printf("note: --min-distance %lld is within the light branches' reach (%lld tokens): the light-only "
                "control can see the values\n",
                (long long)o.task.min_distance, (long long)reach);
}

int run_train(TrainArgs& a) {
  apply_preset(a);
  TrainOptions& o = a.o;
  const auto& m = o.model;
  o.label = m.light_only ? "light-only" : o.random_route ? "random-route" : "routed";
  const std::string task =
      o.text.empty() ? "key-value recall (" + std::to_string(o.task.num_pairs) + " pair" +
                           (o.task.num_pairs > 1 ? "s" : "") + ", values >= " + std::to_string(o.task.min_distance) +
                           " tokens back)"
                     : "text " + o.text;
  std::printf("colt5 train: %s, seq %lld, batch %lld x %lld, %lld steps, dim %lld, depth %lld, window %lld, "
              "heavy tokens q %lld / kv %lld x %lld routes / ff %lld, device %s, out %s\n",
              task.c_str(), (long long)o.task.seq_len, (long long)o.batch, (long long)o.grad_accum,
              (long long)o.steps, (long long)m.dim, (long long)m.depth, (long long)m.light_window_size,
              (long long)m.num_heavy_tokens_q, (long long)m.num_heavy_tokens_kv, (long long)m.num_routed_kv,
              (long long)m.num_heavy_ff_tokens, o.device.c_str(), o.out.c_str());
  namespace fs = std::filesystem;
  auto pictures = [](const TrainOptions& t) {
    std::string p = (fs::path(t.out) / "loss.svg").string();
    if (!t.model.light_only) p += "  " + (fs::path(t.out) / "routing.svg").string();
    return p;
  };
  auto report = [](const TrainOptions& t, const TrainResult& r) {
    std::printf("%s: eval accuracy %.3f (chance %.3f), eval loss %.4f, %.0f tokens/s, %.1f s\n", t.label.c_str(),
                r.eval_acc, r.chance, r.eval_loss, r.tokens_per_s, r.seconds);
    if (r.value_routed.empty()) return;
    std::string v, q;
    for (size_t l = 0; l < r.value_routed.size(); ++l) {
      char buf[64];
      std::snprintf(buf, sizeof buf, "%s layer %zu %.0f%%", l ? "," : "", l, 100 * r.value_routed[l]);
      v += buf;
      std::snprintf(buf, sizeof buf, "%s layer %zu %.0f%%", l ? "," : "", l, 100 * r.answer_routed[l]);
      q += buf;
    }
    std::printf("%s routing on the eval answers: value among the routed key/values:%s; answer routed as a heavy "
                "query:%s\n",
                t.label.c_str(), v.c_str(), q.c_str());
  };
  TrainResult main_r = train_run(o);
  report(o, main_r);
  std::printf("wrote %s/{checkpoint.safetensors,config.json,metrics.csv} and %s\n", o.out.c_str(),
              pictures(o).c_str());
  if (!a.controls || m.light_only || o.random_route) return 0;

  TrainOptions lo = o;
  lo.model.light_only = true, lo.random_route = false, lo.resume = false, lo.label = "light-only";
  lo.out = (fs::path(o.out) / "control-light-only").string();
  TrainResult lr = train_run(lo);
  report(lo, lr);
  TrainOptions rr = o;
  rr.random_route = true, rr.resume = false, rr.label = "random-route";
  rr.out = (fs::path(o.out) / "control-random-route").string();
  TrainResult rrr = train_run(rr);
  report(rr, rrr);
  // the three runs' eval curves in one picture
  const std::string compare = (fs::path(o.out) / "compare.svg").string();
  {
    auto curve = [](const char* name, const char* color, const TrainResult& r, bool acc) {
      Series se{name, color};
      se.x = r.eval_steps;
      se.y = acc ? r.eval_accs : r.eval_losses;
      return se;
    };
    Series ch{"chance", "#888888"};
    ch.dashed = true;
    ch.x = {0.0, static_cast<double>(o.steps)};
    ch.y = {main_r.chance, main_r.chance};
    Panel acc{"eval accuracy", "optimiser step", o.text.empty() ? "answer accuracy" : "next-char accuracy",
              {curve("routed (CoLT5)", "#1f77b4", main_r, true), curve("light-only", "#ff7f0e", lr, true),
               curve("random-route", "#9467bd", rrr, true), ch}};
    acc.ymin = 0, acc.ymax = 1;
    Panel loss{"eval loss", "optimiser step", "cross-entropy (nats)",
               {curve("routed (CoLT5)", "#1f77b4", main_r, false), curve("light-only", "#ff7f0e", lr, false),
                curve("random-route", "#9467bd", rrr, false)}};
    loss.ymin = 0;
    write_svg_panels(compare, "colt5 train: routed model vs the two controls (same budget)", {acc, loss});
  }
  std::printf("\ntask accuracy after %lld steps (%s, chance %.3f), same budget for all three:\n", (long long)o.steps,
              o.text.empty() ? "the recalled values" : "next character", main_r.chance);
  std::printf("  %-16s %6s %13s %9s %8s   %s\n", "model", "acc", "value routed", "tokens/s", "time", "pictures");
  auto row = [&](const char* name, const TrainResult& r, const TrainOptions& t) {
    // the best layer's fraction of answers whose value the kv routers picked
    char routed[16] = "-";
    if (!r.value_routed.empty())
      std::snprintf(routed, sizeof routed, "%.0f%%",
                    100 * *std::max_element(r.value_routed.begin(), r.value_routed.end()));
    std::printf("  %-16s %6.3f %13s %9.0f %7.1fs   %s\n", name, r.eval_acc, routed, r.tokens_per_s, r.seconds,
                pictures(t).c_str());
  };
  row("routed (CoLT5)", main_r, o);
  row("light-only", lr, lo);
  row("random-route", rrr, rr);
  std::printf("  the three eval curves: %s\n", compare.c_str());
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
  s->add_option("--eval-batches", a->eval_batches, "eval batches (of --batch sequences)");
  s->add_option("--text", a->o.text, "character-level LM on this text file instead of the recall task");
  s->add_option("--dim", a->dim, "model width");
  s->add_option("--depth", a->depth, "blocks");
  s->add_option("--window", a->window, "light and heavy window size");
  s->add_option("--heavy-q", a->ntq, "routed queries per window");
  s->add_option("--heavy-kv", a->ntkv, "routed key/values per window and route");
  s->add_option("--routes", a->routes, "key/value routes (heavy heads are split among them)");
  s->add_option("--heavy-ff", a->nff, "routed feed-forward tokens per sequence");
  s->add_flag("--rotary", a->rotary, "rotary positions in the heavy attention");
  s->add_option("--pairs", a->pairs, "key-value pairs per sequence (each is asked for at the end)");
  s->add_option("--filler", a->filler, "filler token types");
  s->add_option("--min-distance", a->min_distance,
                "tokens between the values and the answers (default: just beyond the light branches' reach)");
  s->add_flag("--light-only", a->light_only, "no heavy branches (control)");
  s->add_flag("--random-route", a->o.random_route, "routers pick random tokens (control)");
  s->add_flag("--controls,!--no-controls", a->controls, "also train the light-only and random-route controls")
      ->capture_default_str();
  s->add_flag("--no-progress", a->no_progress, "no progress output");
  command_table().push_back({s, [a]() { return run_train(*a); }});
}

}  // namespace colt5::tools
