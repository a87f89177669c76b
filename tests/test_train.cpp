// colt5 train: the recall task places its answers where it says, the light
// branches reach exactly as far as light_reach says, training is
// deterministic, a checkpoint resumes to the same loss curve, and a small
// routed model learns the task where the light-only control cannot.
#include <doctest/doctest.h>

#include <filesystem>

#include "colt5.h"
#include "layers/lm.h"
#include "layers/recall_task.h"
#include "layers/routed_autoregressive_attention.h"
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
  // tail: k Q v k Q v at the last 6 tokens; the answers are the markers
  CHECK(ap[0] == 36);
  CHECK(ap[1] == 39);
  for (int64_t a : ap) {
    CHECK(s[a] == 12);
    CHECK(task.is_key(s[a - 1]));
    CHECK(task.is_value(s[a + 1]));
  }
  CHECK(s[35] != s[38]);  // every key asked once
  for (int j = 0; j < 2; ++j) {
    CHECK(vp[j] == kp[j] + 1);
    CHECK(ap[0] - vp[j] >= 10);  // at least min_distance before the first answer
    CHECK(task.is_key(s[kp[j]]));
    CHECK(task.is_value(s[vp[j]]));
  }
  CHECK(kp[0] + 1 < kp[1]);  // the pairs do not overlap
  // each answer is the value that followed the same key earlier
  for (int64_t a : ap) {
    int found = 0;
    for (int j = 0; j < 2; ++j)
      if (s[kp[j]] == s[a - 1]) {
        CHECK(s[a + 1] == s[vp[j]]);
        ++found;
      }
    CHECK(found == 1);
  }
  // everything else is filler
  for (int64_t i = 0; i < 35; ++i)
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
  // too short for the distance: a clear error
  c.min_distance = 30;
  CHECK_THROWS_AS(RecallTask{c}, Error);
}

TEST_CASE("light_reach: how far back the light-only model sees, exactly") {
  Generator g(5);
  ColT5LMConfig c{.vocab_size = 10, .dim = 16, .depth = 2, .light_heads = 2, .light_dim_head = 8, .heavy_heads = 2,
                  .heavy_dim_head = 8, .light_window_size = 8, .heavy_window_size = 8, .num_heavy_tokens_q = 2,
                  .num_heavy_tokens_kv = 4, .num_routed_kv = 2, .num_heavy_ff_tokens = 4, .light_only = true};
  ColT5LM lm(c, g);
  const int64_t reach = light_reach(c), N = 40;
  REQUIRE(reach == 23);
  std::vector<int64_t> t(N);
  for (int64_t i = 0; i < N; ++i) t[i] = (i * 3) % 10;
  Tensor a = lm.forward(from_vector_i64(t, {1, N}));
  t[0] = (t[0] + 1) % 10;  // change the first token only
  Tensor b = lm.forward(from_vector_i64(t, {1, N}));
  Tensor d = max(abs(a - b), {-1}).squeeze(0);  // (N)
  std::vector<float> diff = d.to_vector<float>();
  CHECK(diff[reach] > 1e-4);  // the last position of window 2 still sees token 0
  for (int64_t i = reach + 1; i < N; ++i) CHECK(diff[i] == 0.0f);
}

static tools::TrainOptions tiny(const std::string& out) {
  tools::TrainOptions o;
  o.steps = 6, o.batch = 2, o.warmup = 2, o.lr = 3e-3, o.eval_every = 0, o.eval_batches = 1;
  o.out = out, o.progress = false, o.plots = false;
  o.task = {.seq_len = 64, .num_pairs = 2, .num_filler = 8, .num_keys = 4, .num_values = 4, .min_distance = 20};
  o.model.dim = 16, o.model.depth = 2, o.model.light_heads = 2, o.model.light_dim_head = 8;
  o.model.heavy_heads = 2, o.model.heavy_dim_head = 8, o.model.light_window_size = 16;
  o.model.heavy_window_size = 16, o.model.num_heavy_tokens_q = 4, o.model.num_heavy_tokens_kv = 4;
  o.model.num_routed_kv = 2, o.model.num_heavy_ff_tokens = 8, o.model.router_iters = 5;
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
    // the resumed run's metrics hold all six steps
    CHECK(tools::read_metrics((dir / "c" / "metrics.csv").string()).size() == 6);
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
                  .num_heavy_tokens_kv = 4, .num_routed_kv = 2,
                  .num_heavy_ff_tokens = 40};  // ff routes nothing at N = 32
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

TEST_CASE("train: the trace holds the positions the routers picked") {
  Generator g(4);
  ColT5LMConfig c{.vocab_size = 10, .dim = 16, .depth = 2, .light_heads = 2, .light_dim_head = 8, .heavy_heads = 2,
                  .heavy_dim_head = 8, .light_window_size = 8, .heavy_window_size = 8, .num_heavy_tokens_q = 2,
                  .num_heavy_tokens_kv = 3, .num_routed_kv = 2, .num_heavy_ff_tokens = 5};
  ColT5LM lm(c, g);
  std::vector<int64_t> t(30);  // 4 windows, the last one padded
  for (int i = 0; i < 30; ++i) t[i] = (i * 7 + 1) % 10;
  for (bool random_route : {false, true}) {
    std::vector<LayerTrace> trace;
    Generator rg(9);
    LMCall call;
    call.route.random_route = random_route;
    call.route.generator = &rg;
    call.trace = &trace;
    Tensor with = lm.forward(from_vector_i64(t, {1, 30}), call);
    // tracing does not change the output nor the routing-noise stream
    Generator rg2(9);
    LMCall plain;
    plain.route.random_route = random_route;
    plain.route.generator = &rg2;
    Tensor without = lm.forward(from_vector_i64(t, {1, 30}), plain);
    CHECK(max(abs(with - without)).item<double>() == 0.0);
    CHECK(rg.state() == rg2.state());
    REQUIRE(trace.size() == 2);
    for (const LayerTrace& tr : trace) {
      REQUIRE(tr.q_indices.shape() == Shape{1, 3, 2});
      REQUIRE(tr.kv_indices.shape() == Shape{1, 3, 6});
      REQUIRE(tr.ff_indices.shape() == Shape{1, 5});
      std::vector<int64_t> q = tr.q_indices.to_vector<int64_t>(), kv = tr.kv_indices.to_vector<int64_t>();
      for (int64_t w = 0; w < 3; ++w) {
        // queries of window w + 1 lie in it (and inside the sequence); key/values before it
        for (int64_t j = 0; j < 2; ++j) {
          CHECK(q[w * 2 + j] >= 8 * (w + 1));
          CHECK(q[w * 2 + j] < std::min<int64_t>(8 * (w + 2), 30));
        }
        for (int64_t j = 0; j < 6; ++j) {
          CHECK(kv[w * 6 + j] >= 0);
          CHECK(kv[w * 6 + j] < 8 * (w + 1));
        }
      }
    }
  }
}

TEST_CASE("train: the traced query positions are the ones the attention routed") {
  Generator g(6);
  ColT5LMConfig c{.vocab_size = 10, .dim = 16, .depth = 1, .light_heads = 2, .light_dim_head = 8, .heavy_heads = 2,
                  .heavy_dim_head = 8, .light_window_size = 8, .heavy_window_size = 8, .num_heavy_tokens_q = 3,
                  .num_heavy_tokens_kv = 4, .num_routed_kv = 2, .num_heavy_ff_tokens = 5};
  ColT5LM lm(c, g);
  std::vector<int64_t> t(32);
  for (int i = 0; i < 32; ++i) t[i] = (i * 5 + 3) % 10;
  Tensor tokens = from_vector_i64(t, {1, 32});
  std::vector<LayerTrace> trace;
  LMCall call;
  call.trace = &trace;
  lm.forward(tokens, call);
  // the block's attention on its input (the embedding): heavy = attention - light branch
  std::shared_ptr<ConditionalRoutedAutoregressiveAttention> attn;
  for (auto& [name, child] : (*lm.layers)[0]->named_children())
    if (name == "attn") attn = std::dynamic_pointer_cast<ConditionalRoutedAutoregressiveAttention>(child);
  REQUIRE(attn);
  Tensor x = embedding(lm.get("token_emb.weight"), tokens);
  Tensor heavy = (attn->forward(x) - attn->light_attn->forward(x)).squeeze(0);  // (32, 16)
  Tensor null_q = attn->null_q_token.view({1, 16});
  std::vector<float> off = max(abs(heavy - null_q), {-1}).to_vector<float>();  // 0 where not routed
  std::vector<int64_t> q = trace[0].q_indices.to_vector<int64_t>();
  REQUIRE(q.size() == 9);
  for (int64_t p = 8; p < 32; ++p) {
    const bool routed = std::find(q.begin(), q.end(), p) != q.end();
    CAPTURE(p);
    if (routed)
      CHECK(off[p] > 1e-4);
    else
      CHECK(off[p] < 1e-6);
  }
}

TEST_CASE("train: a small routed model learns the recall task; the light-only control stays at chance") {
  const fs::path dir = fs::temp_directory_path() / ("colt5_test_learn_" + std::to_string(::getpid()));
  fs::remove_all(dir);
  tools::TrainOptions o;
  o.steps = 60, o.batch = 16, o.warmup = 6, o.lr = 3e-3, o.eval_every = 0, o.eval_batches = 8;
  o.out = (dir / "routed").string(), o.progress = false, o.plots = false;
  o.model.dim = 64, o.model.depth = 2, o.model.light_window_size = o.model.heavy_window_size = 16;
  o.model.num_heavy_tokens_q = 4, o.model.num_heavy_tokens_kv = 4, o.model.num_routed_kv = 4;
  o.task = {.seq_len = 128, .num_pairs = 1, .num_filler = 1, .num_keys = 8, .num_values = 16,
            .min_distance = light_reach(o.model)};
  tools::TrainResult routed = tools::train_run(o);
  o.model.light_only = true;
  o.out = (dir / "light").string();
  tools::TrainResult light = tools::train_run(o);
  MESSAGE("routed ", routed.eval_acc, ", light-only ", light.eval_acc, " (chance ", routed.chance, ")");
  CHECK(routed.chance == doctest::Approx(1.0 / 16));
  CHECK(routed.eval_acc >= 0.8);
  CHECK(light.eval_acc <= 0.25);
  fs::remove_all(dir);
}
