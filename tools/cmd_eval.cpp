// colt5 eval: score a checkpoint folder (written by colt5 train) on its task
// (fresh sequences from --seed) and, for routed recall runs, say per layer how
// often the routers picked the value each answer needs.
#include <cstdio>

#include "colt5.h"
#include "tools/commands.h"
#include "tools/train_util.h"

namespace colt5::tools {

void add_eval_command(CLI::App& app) {
  struct Args {
    std::string dir = "runs/train", device = "cpu";
    int64_t batches = 8, batch = 8;
    uint64_t seed = 12345;
  };
  auto a = std::make_shared<Args>();
  CLI::App* s = app.add_subcommand("eval", "Score a checkpoint (a colt5 train output folder) on its task");
  s->add_option("dir", a->dir, "output folder of colt5 train")->capture_default_str();
  s->add_option("--device", a->device, "cpu or cuda[:i]")->capture_default_str();
  s->add_option("--batches", a->batches, "eval batches")->capture_default_str();
  s->add_option("--batch", a->batch, "sequences per batch")->capture_default_str();
  s->add_option("--seed", a->seed, "eval stream seed (fresh sequences)")->capture_default_str();
  command_table().push_back({s, [a]() {
                               LoadedRun r = load_run(a->dir, a->device);
                               EvalResult e = evaluate(*r.model, r.recall.get(), r.text.get(), a->batches, a->batch,
                                                       a->seed, r.opt.random_route, Device::parse(a->device));
                               std::printf("%s: %s accuracy %.4f over %lld scored positions, loss %.4f\n",
                                           a->dir.c_str(), r.recall ? "answer" : "next-char", e.acc,
                                           (long long)e.scored, e.loss);
                               if (r.recall && !r.opt.model.light_only) {
                                 RoutingStats st = routing_stats(*r.model, *r.recall, a->batches, a->batch, a->seed,
                                                                 r.opt.random_route, Device::parse(a->device));
                                 for (size_t l = 0; l < st.value_routed.size(); ++l)
                                   std::printf("  layer %zu: value among the routed key/values for %.1f%% of the "
                                               "answers, answer routed as a heavy query for %.1f%%\n",
                                               l, 100 * st.value_routed[l], 100 * st.answer_routed[l]);
                               }
                               return 0;
                             }});
}

}  // namespace colt5::tools
