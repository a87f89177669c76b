// colt5 train: the recall task places its answers where it says, training is
// deterministic, and a checkpoint resumes to the same loss curve.
#include <doctest/doctest.h>

#include <filesystem>

#include "colt5.h"
#include "layers/lm.h"
#include "layers/recall_task.h"
// The training loop lives with the tool; the test compiles it in.
#include "tools/train_util.cpp"

using namespace colt5;
namespace fs = std::filesystem;

TEST_CASE("recall task: pairs, queries and answers by hand") {
  RecallTaskConfig c{.seq_len = 40, .num_pairs = 2, .num_filler = 3, .num_keys = 4, .num_values = 5, .min_distance = 10};
  RecallTask task(c);
  CHECK(task.vocab_size() == 3 + 4 + 5 + 1);
  CHECK(task.query_token() == 12);
  std::vector<int64_t> kp, vp, ap;
  std::vector<int64_t> s = task.sequence(7, 3, &kp, &vp, &ap);
  REQUIRE(s.size() == 41);
  REQUIRE(kp.size() == 2);
  REQUIRE(ap.size() == 2);
  // tail: Q k v k v at the last 5 tokens
  CHECK(s[36] == 12);
  CHECK(ap[0] == 37);
  CHECK(ap[1] == 39);
  for (int j = 0; j < 2; ++j) {
    CHECK(vp[j] == kp[j] + 1);
    CHECK(kp[j] + 1 < 41 - 5 - 10 + 1);  // at least min_distance before the tail
    CHECK(s[kp[j]] >= 3);
    CHECK(s[kp[j]] < 7);
    CHECK(task.is_value(s[vp[j]]));
  }
  // each query key's answer is the value that followed the same key earlier
  for (int64_t a : ap) {
    int found = 0;
    for (int j = 0; j < 2; ++j)
      if (s[kp[j]] == s[a]) {
        CHECK(s[a + 1] == s[vp[j]]);
        ++found;
      }
    CHECK(found == 1);
  }
  // everything else is filler
  for (int64_t i = 0; i < 36; ++i)
    if (i != kp[0] && i != kp[1] && i != vp[0] && i != vp[1]) CHECK(s[i] < 3);
  // the batch scores exactly the answers
  TaskBatch b = task.batch(7, 3, 2);
  std::vector<int64_t> tg = b.targets.to_vector<int64_t>(), in = b.inputs.to_vector<int64_t>();
  int scored = 0;
  for (int64_t i = 0; i < 40; ++i)
    if (tg[i] != kIgnoreIndex) {
      ++scored;
      CHECK(tg[i] == s[i + 1]);
      CHECK(in[i] == s[i]);
    }
  CHECK(scored == 2);
  // same (seed, index) -> same sequence; another index differs
  CHECK(task.sequence(7, 3) == s);
  CHECK(task.sequence(7, 4) != s);
}

static tools::TrainOptions tiny(const std::string& out) {
  tools::TrainOptions o;
  o.steps = 6, o.batch = 2, o.warmup = 2, o.lr = 3e-3, o.eval_every = 0, o.eval_batches = 1;
  o.out = out, o.progress = false, o.plots = false;
  o.task = {.seq_len = 64, .num_pairs = 2, .num_filler = 8, .num_keys = 4, .num_values = 4, .min_distance = 20};
  o.model.dim = 16, o.model.depth = 2, o.model.light_heads = 2, o.model.light_dim_head = 8;
  o.model.heavy_heads = 2, o.model.heavy_dim_head = 8, o.model.light_window_size = 16;
  o.model.heavy_window_size = 16, o.model.num_heavy_tokens_q = 4, o.model.num_heavy_tokens_kv = 8;
  o.model.num_heavy_ff_tokens = 8, o.model.router_iters = 5;
  return o;
}

TEST_CASE("train: same seed, same losses; checkpoint + resume continues the same curve") {
  const fs::path dir = fs::temp_directory_path() / ("colt5_test_train_" + std::to_string(::getpid()));
  fs::remove_all(dir);
  for (bool random_route : {false, true}) {
    tools::TrainOptions o = tiny((dir / "a").string());
    o.random_route = random_route;
    tools::TrainResult a = tools::train_run(o);
    REQUIRE(a.losses.size() == 6);
    for (double l : a.losses) CHECK(std::isfinite(l));
    o.out = (dir / "b").string();
    tools::TrainResult b = tools::train_run(o);
    CHECK(a.losses == b.losses);
    // half, checkpoint, resume for the other half
    o.out = (dir / "c").string();
    o.stop_after = 3;
    tools::TrainResult c1 = tools::train_run(o);
    REQUIRE(c1.losses.size() == 3);
    o.stop_after = -1;
    o.resume = true;
    tools::TrainResult c2 = tools::train_run(o);
    REQUIRE(c2.losses.size() == 3);
    std::vector<double> joined = c1.losses;
    joined.insert(joined.end(), c2.losses.begin(), c2.losses.end());
    CHECK(joined == a.losses);
    CHECK(c2.eval_acc == doctest::Approx(a.eval_acc));
    // another seed, other losses
    o = tiny((dir / "d").string());
    o.random_route = random_route;
    o.seed = 1;
    CHECK(tools::train_run(o).losses != a.losses);
    fs::remove_all(dir);
  }
}

TEST_CASE("train: the model's causal attention does not look ahead") {
  Generator g(3);
  ColT5LMConfig c{.vocab_size = 10, .dim = 16, .depth = 2, .light_heads = 2, .light_dim_head = 8, .heavy_heads = 2,
                  .heavy_dim_head = 8, .light_window_size = 8, .heavy_window_size = 8, .num_heavy_tokens_q = 2,
                  .num_heavy_tokens_kv = 4, .num_heavy_ff_tokens = 40};  // ff routes nothing at N = 32
  ColT5LM lm(c, g);
  std::vector<int64_t> t(32);
  for (int i = 0; i < 32; ++i) t[i] = (i * 7) % 10;
  Tensor a = lm.forward(from_vector_i64(t, {1, 32}));
  t[31] = (t[31] + 1) % 10;  // change the last token only
  Tensor b = lm.forward(from_vector_i64(t, {1, 32}));
  // the routers choose queries within a window (SPEC §4), so only earlier windows are untouched
  CHECK(max(abs(a.narrow(1, 0, 24) - b.narrow(1, 0, 24))).item<double>() < 1e-5);
  CHECK(max(abs(a.narrow(1, 24, 8) - b.narrow(1, 24, 8))).item<double>() > 0);
}
