// `colt5 run` (tools/run_modules.cpp): configs and inputs written to a temp
// directory, run_module (what the command runs), and its outputs and
// gradients checked against calling the C++ layer directly with the same
// weights; config and input errors; save-weights then load is bit-identical.
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <string>

#include "helpers.h"
#include "tools/run_modules.h"

using namespace colt5;
using namespace colt5::testing;
using colt5::tools::RunOptions;
using colt5::tools::RunResult;
using colt5::tools::run_module;

namespace {

namespace fs = std::filesystem;

struct TempDir {
  fs::path dir;
  TempDir() {
    static int counter = 0;
    dir = fs::temp_directory_path() /
          ("colt5_cli_run_" + std::to_string(::getpid()) + "_" + std::to_string(counter++));
    fs::create_directories(dir);
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(dir, ec);
  }
  std::string operator()(const std::string& name) const { return (dir / name).string(); }
  std::string write(const std::string& name, const std::string& text) const {
    std::ofstream(dir / name) << text;
    return (*this)(name);
  }
};

// Exactly equal (same dtype, shape and values).
void check_same(const Tensor& a, const Tensor& b) {
  REQUIRE(a.shape() == b.shape());
  REQUIRE(a.dtype() == b.dtype());
  std::vector<double> x = a.to_vector<double>(), y = b.to_vector<double>();
  size_t bad = 0;
  for (size_t i = 0; i < x.size(); ++i) bad += x[i] != y[i];
  CHECK(bad == 0);
}

std::string error_of(const RunOptions& o) {
  try {
    run_module(o);
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

Tensor randn_f32(const Shape& s, uint64_t seed) {
  Generator g(seed);
  return randn(s, g);
}

std::set<std::string> keys_of(const std::map<std::string, Tensor>& m) {
  std::set<std::string> s;
  for (const auto& [k, v] : m) s.insert(k);
  return s;
}

// Runs `m` through run_module with the weights of `layer` and checks output
// and gradients against calling `forward` directly.
template <class Layer, class Fwd>
void check_module_against_layer(const std::string& name, const std::string& config, Layer& layer, Fwd forward,
                                const Shape& xshape, const Tensor& mask = {}) {
  TempDir t;
  layer.save_weights(t("w.safetensors"));
  Tensor x = randn_f32(xshape, 7);
  save_npy(t("x.npy"), x);
  RunOptions o;
  o.module = name;
  o.config = t.write("config.json", config);
  o.weights = t("w.safetensors");
  o.input = t("x.npy");
  if (mask.defined()) {
    save_npy(t("m.npy"), mask);
    o.mask = t("m.npy");
  }
  o.output = t("y.npy");
  // The same forward directly.
  Tensor xl = x.detach().requires_grad_(true);
  Tensor y = forward(xl);
  Tensor g = randn_f32(y.shape(), 8);
  save_npy(t("g.npy"), g);
  o.grad_output = t("g.npy");
  o.grads = t("grads.safetensors");
  RunResult r = run_module(o);
  Tensor y_run = load_npy(t("y.npy"));
  check_same(y_run, y.detach());

  y.backward(g);
  std::map<std::string, Tensor> grads = load_safetensors(t("grads.safetensors"));
  std::set<std::string> want{"input"};
  for (const auto& [k, p] : layer.named_parameters()) want.insert(k);
  CHECK(keys_of(grads) == want);
  // Every state-dict key of these modules is a parameter (no buffers).
  for (const auto& [k, v] : layer.state_dict()) CHECK(grads.count(k) == 1);
  check_close(grads.at("input"), xl.grad(), 1e-5, 1e-6);
  for (const auto& [k, p] : layer.named_parameters()) {
    INFO(k);
    Tensor gp = p.grad().defined() ? p.grad() : zeros_like(p);
    check_close(grads.at(k), gp, 1e-5, 1e-6);
  }
}

}  // namespace

TEST_CASE("colt5 run: FeedForward matches the layer, grads keys are input + state dict") {
  Generator gen(3);
  FeedForward ff(8, 2.0, gen);
  check_module_against_layer("FeedForward", R"({"dim": 8, "mult": 2})", ff,
                             [&](const Tensor& x) { return ff.forward(x); }, {2, 5, 8});
}

TEST_CASE("colt5 run: ConditionalRoutedFeedForward (routing active, with mask)") {
  Generator gen(4);
  ConditionalRoutedFeedForwardConfig c{.dim = 8, .num_heavy_tokens = 4, .light_ff_mult = 0.5, .heavy_ff_mult = 2};
  c.router_kwargs.n_iters = 10;
  ConditionalRoutedFeedForward ff(c, gen);
  Tensor mask = ones({2, 12}, {.dtype = DType::b8});
  mask.select(0, 1).narrow(0, 9, 3).fill_(0.0);
  check_module_against_layer(
      "ConditionalRoutedFeedForward",
      R"({"dim": 8, "num_heavy_tokens": 4, "light_ff_mult": 0.5, "heavy_ff_mult": 2, "router_kwargs": {"n_iters": 10}})",
      ff, [&](const Tensor& x) { return ff.forward(x, mask); }, {2, 12, 8}, mask);
}

TEST_CASE("colt5 run: ConditionalRoutedAttention (routing active, 2 kv routes)") {
  Generator gen(5);
  ConditionalRoutedAttentionConfig c{.dim = 8,
                                     .num_heavy_tokens_q = 3,
                                     .num_heavy_tokens_kv = 5,
                                     .num_routed_kv = 2,
                                     .light_dim_head = 4,
                                     .light_heads = 2,
                                     .light_window_size = 4,
                                     .heavy_dim_head = 4,
                                     .heavy_heads = 2};
  ConditionalRoutedAttention attn(c, gen);
  check_module_against_layer("ConditionalRoutedAttention",
                             R"({"dim": 8, "num_heavy_tokens_q": 3, "num_heavy_tokens_kv": 5, "num_routed_kv": 2,
                                 "light_dim_head": 4, "light_heads": 2, "light_window_size": 4,
                                 "heavy_dim_head": 4, "heavy_heads": 2})",
                             attn, [&](const Tensor& x) { return attn.forward(x); }, {2, 10, 8});
}

TEST_CASE("colt5 run: CoordinateDescentRouter writes every output, grads through scores") {
  Generator gen(6);
  RouterConfig rc;
  rc.num_routing_tokens = 2;
  CoordinateDescentRouter router(8, rc, gen);
  TempDir t;
  router.save_weights(t("w.safetensors"));
  Tensor x = randn_f32({2, 9, 8}, 9);
  save_npy(t("x.npy"), x);
  RunOptions o;
  o.module = "CoordinateDescentRouter";
  o.config = t.write("c.json", R"({"dim": 8, "num_routing_tokens": 2, "forward": {"num_tokens": 3}})");
  o.weights = t("w.safetensors");
  o.input = t("x.npy");
  o.output = t("r.safetensors");
  RouterReturn want = router.forward(x, 3);
  Tensor gs = randn_f32(want.scores.shape(), 10);
  save_npy(t("gs.npy"), gs);
  o.grad_output = t("gs.npy");
  o.grads = t("grads.safetensors");
  run_module(o);
  std::map<std::string, Tensor> out = load_safetensors(t("r.safetensors"));
  CHECK(keys_of(out) == std::set<std::string>{"indices", "scores", "routed_tokens"});
  check_same(out.at("indices"), want.indices);
  check_same(out.at("scores"), want.scores.detach());
  check_same(out.at("routed_tokens"), want.routed_tokens.detach());
  std::map<std::string, Tensor> grads = load_safetensors(t("grads.safetensors"));
  CHECK(keys_of(grads) == std::set<std::string>{"input", "routing_token"});
  want.scores.backward(gs);
  check_close(grads.at("routing_token"), router.routing_token.grad(), 1e-5, 1e-6);

  // .npy output: one file per output, Y.<name>.npy.
  o.output = t("r.npy");
  o.grad_output.clear();
  o.grads.clear();
  run_module(o);
  check_same(load_npy(t("r.indices.npy")), want.indices);
  check_same(load_npy(t("r.routed_tokens.npy")), want.routed_tokens.detach());
  CHECK(!fs::exists(t("r.npy")));
}

TEST_CASE("colt5 run: coor_descent and topk ops (f64)") {
  TempDir t;
  Generator g(11);
  Tensor s = randn({3, 16}, g, {.dtype = DType::f64});
  save_npy(t("s.npy"), s);
  Tensor gout = randn({3, 16}, g, {.dtype = DType::f64});
  save_npy(t("g.npy"), gout);
  RunOptions o;
  o.module = "coor_descent";
  o.config = t.write("c.json", R"({"k": 4, "n_iters": 20, "eps": 0.1, "eps_init": 2.0, "eps_decay": 0.8})");
  o.input = t("s.npy");
  o.output = t("y.npy");
  o.dtype = "f64";
  o.grad_output = t("g.npy");
  o.grads = t("grads.safetensors");
  run_module(o);
  Tensor sl = s.detach().requires_grad_(true);
  Tensor want = coor_descent(sl, 4.0, {}, {.n_iters = 20, .eps = 0.1, .eps_init = 2.0, .eps_decay = 0.8});
  check_same(load_npy(t("y.npy")), want.detach());
  want.backward(gout);
  std::map<std::string, Tensor> grads = load_safetensors(t("grads.safetensors"));
  CHECK(keys_of(grads) == std::set<std::string>{"input"});
  check_same(grads.at("input"), sl.grad());

  // topk: several outputs in one safetensors file; gradient of `values`.
  RunOptions o2;
  o2.module = "topk";
  o2.config = t.write("t.json", R"({"k": 3, "eps": 0.1, "eps_init": null})");
  o2.input = t("s.npy");
  o2.output = t("t.safetensors");
  o2.dtype = "f64";
  DiffTopK tk = topk(s, 3, {.eps = 0.1});
  std::map<std::string, Tensor> gv{{"values", randn({3, 3}, g, {.dtype = DType::f64})}};
  save_safetensors(t("gv.safetensors"), gv);
  o2.grad_output = t("gv.safetensors");
  o2.grads = t("tgrads.safetensors");
  run_module(o2);
  std::map<std::string, Tensor> out = load_safetensors(t("t.safetensors"));
  CHECK(keys_of(out) == std::set<std::string>{"values", "indices", "coor_descent_values", "gates"});
  check_same(out.at("values"), tk.values.detach());
  check_same(out.at("indices"), tk.indices);
  Tensor sl2 = s.detach().requires_grad_(true);
  DiffTopK tk2 = topk(sl2, 3, {.eps = 0.1});
  tk2.values.backward(gv.at("values"));
  check_same(load_safetensors(t("tgrads.safetensors")).at("input"), sl2.grad());
}

TEST_CASE("colt5 run: clear errors for configs and inputs") {
  TempDir t;
  save_npy(t("x.npy"), randn_f32({2, 5, 8}, 1));
  RunOptions o;
  o.module = "ConditionalRoutedFeedForward";
  o.input = t("x.npy");
  o.output = t("y.npy");

  // Unknown keys: all listed, with the file name.
  o.config = t.write("bad.json", R"({"dim": 8, "num_heavy_tokens": 2, "foo": 1, "router_kwargs": {"n_iter": 3}})");
  std::string e = error_of(o);
  INFO(e);
  CHECK(e.find("bad.json") != std::string::npos);
  CHECK(e.find("'router_kwargs.n_iter'") != std::string::npos);  // nested and top-level unknown keys in one message
  CHECK(e.find("'foo'") != std::string::npos);
  o.config = t.write("bad2.json", R"({"dim": 8, "num_heavy_tokens": 2, "foo": 1, "bar": true})");
  e = error_of(o);
  CHECK(e.find("'foo'") != std::string::npos);
  CHECK(e.find("'bar'") != std::string::npos);
  CHECK(e.find("unknown keys") != std::string::npos);

  // Missing required key.
  o.config = t.write("miss.json", R"({"dim": 8})");
  e = error_of(o);
  CHECK(e.find("missing required key 'num_heavy_tokens'") != std::string::npos);

  // Wrong type.
  o.config = t.write("type.json", R"({"dim": "8", "num_heavy_tokens": 2})");
  e = error_of(o);
  CHECK(e.find("'dim' must be an integer") != std::string::npos);

  // Wrong input shape vs config: names the file, the expected and actual shape.
  o.config = t.write("c16.json", R"({"dim": 16, "num_heavy_tokens": 2})");
  e = error_of(o);
  CHECK(e.find("x.npy") != std::string::npos);
  CHECK(e.find("(B, N, 16)") != std::string::npos);
  CHECK(e.find("[2, 5, 8]") != std::string::npos);

  // Missing file, wrong mask dtype, wrong mask shape.
  o.config = t.write("c.json", R"({"dim": 8, "num_heavy_tokens": 2})");
  o.mask = t("nope.npy");
  e = error_of(o);
  CHECK(e.find("nope.npy: no such file") != std::string::npos);
  save_npy(t("fmask.npy"), ones({2, 5}));
  o.mask = t("fmask.npy");
  e = error_of(o);
  CHECK(e.find("fmask.npy") != std::string::npos);
  CHECK(e.find("bool") != std::string::npos);
  save_npy(t("smask.npy"), ones({2, 4}, {.dtype = DType::b8}));
  o.mask = t("smask.npy");
  e = error_of(o);
  CHECK(e.find("smask.npy") != std::string::npos);
  CHECK(e.find("[2, 4]") != std::string::npos);
  o.mask.clear();

  // Weights with a wrong shape: the file and the key named.
  Generator gen(0);
  ConditionalRoutedFeedForward other({.dim = 8, .num_heavy_tokens = 2, .heavy_ff_mult = 2}, gen);
  other.save_weights(t("w.safetensors"));
  o.weights = t("w.safetensors");
  e = error_of(o);
  CHECK(e.find("w.safetensors") != std::string::npos);
  CHECK(e.find("heavy_ff.1.weight") != std::string::npos);
  o.weights.clear();

  // Unknown module, and a flag the module does not take.
  o.module = "Nope";
  e = error_of(o);
  CHECK(e.find("unknown module 'Nope'") != std::string::npos);
  o.module = "FeedForward";
  o.config = t.write("ff.json", R"({"dim": 8})");
  save_npy(t("ctx.npy"), randn_f32({2, 5, 8}, 2));
  o.context = t("ctx.npy");
  e = error_of(o);
  CHECK(e.find("takes no --context") != std::string::npos);
  o.context.clear();
  // Invalid configuration from the layer's constructor, prefixed by the file.
  o.module = "ConditionalRoutedAttention";
  o.config = t.write("att.json", R"({"dim": 8, "num_heavy_tokens_q": 2, "num_heavy_tokens_kv": 2, "num_routed_kv": 3,
                                     "heavy_heads": 2})");
  e = error_of(o);
  CHECK(e.find("att.json") != std::string::npos);
  CHECK(e.find("invalid configuration") != std::string::npos);
}

TEST_CASE("colt5 run: fresh init, --save-weights, then --weights reproduces the output bit-identically") {
  for (const char* dtype : {"f32", "f64"}) {
    TempDir t;
    save_npy(t("x.npy"), randn_f32({2, 12, 8}, 1));
    RunOptions o;
    o.module = "ConditionalRoutedTransformerBlock";
    o.config = t.write("c.json", R"({"dim": 8, "num_heavy_attn_tokens_q": 3, "num_heavy_attn_tokens_kv": 5,
                                     "num_heavy_ff_tokens": 4, "light_dim_head": 4, "light_heads": 2,
                                     "light_window_size": 4, "heavy_dim_head": 4, "heavy_heads": 2})");
    o.input = t("x.npy");
    o.output = t("y1.npy");
    o.seed = 42;
    o.dtype = dtype;
    o.save_weights = t("w.safetensors");
    run_module(o);
    RunOptions o2 = o;
    o2.save_weights.clear();
    o2.seed = 1;  // weights from the file, not the seed
    o2.weights = t("w.safetensors");
    o2.output = t("y2.npy");
    run_module(o2);
    Tensor y1 = load_npy(t("y1.npy")), y2 = load_npy(t("y2.npy"));
    CHECK(y1.dtype() == (std::string(dtype) == "f64" ? DType::f64 : DType::f32));
    check_same(y1, y2);
    // A different seed without weights gives different outputs.
    o2.weights.clear();
    o2.output = t("y3.npy");
    run_module(o2);
    CHECK(sum(abs(load_npy(t("y3.npy")) - y1)).item<double>() > 0);
  }
}

TEST_CASE("colt5 run: every module name builds and runs") {
  TempDir t;
  save_npy(t("x.npy"), randn_f32({1, 12, 8}, 1));
  const std::map<std::string, std::string> configs = {
      {"RMSNorm", R"({"dim": 8})"},
      {"FeedForward", R"({"dim": 8})"},
      {"Attention", R"({"dim": 8, "dim_head": 4, "heads": 2})"},
      {"LocalMHA", R"({"dim": 8, "window_size": 4, "dim_head": 4, "heads": 2, "prenorm": true,
                       "use_rotary_pos_emb": false, "look_forward": 1})"},
      {"SelfAttention", R"({"dim": 8, "dim_head": 4, "heads": 2, "prenorm": true})"},
      {"CoordinateDescentRouter", R"({"dim": 8, "forward": {"num_tokens": 4}})"},
      {"ConditionalRoutedFeedForward", R"({"dim": 8, "num_heavy_tokens": 4})"},
      {"ConditionalRoutedAttention", R"({"dim": 8, "num_heavy_tokens_q": 4, "num_heavy_tokens_kv": 4,
          "light_window_size": 4, "light_dim_head": 4, "light_heads": 2, "heavy_dim_head": 4, "heavy_heads": 2,
          "rotary_emb": true})"},
      {"ConditionalRoutedTransformerBlock", R"({"dim": 8, "num_heavy_attn_tokens_q": 4,
          "num_heavy_attn_tokens_kv": 4, "num_heavy_ff_tokens": 4, "light_window_size": 4})"},
      {"ConditionalRoutedAutoregressiveAttention", R"({"dim": 8, "num_heavy_tokens_q": 2,
          "num_heavy_tokens_kv": 3, "light_window_size": 4, "light_dim_head": 4, "light_heads": 2,
          "heavy_dim_head": 4, "heavy_heads": 2})"},
      {"coor_descent", R"({"k": 3, "n_iters": 5})"},
      {"topk", R"({"k": 3})"},
  };
  for (const std::string& name : tools::run_module_names()) {
    auto it = configs.find(name);
    if (it == configs.end()) continue;  // covered elsewhere (needs other inputs)
    INFO(name);
    RunOptions o;
    o.module = name;
    o.config = t.write(name + ".json", it->second);
    o.input = t("x.npy");
    o.output = t(name + ".safetensors");
    std::string e = error_of(o);
    if (e.find("not available in this build") != std::string::npos) continue;
    CHECK(e == "");
    CHECK(fs::exists(t(name + ".safetensors")));
  }
}

#include "layers/routed_cross_attention.h"
TEST_CASE("colt5 run: ConditionalRoutedCrossAttention with context, masks and context gradient") {
  Generator gen(12);
  ConditionalRoutedCrossAttentionConfig c{.dim = 8, .num_tokens_q = 3, .num_tokens_kv = 6, .dim_head = 4, .heads = 2};
  c.kv_routing_tokens = 2;
  ConditionalRoutedCrossAttention xattn(c, gen);
  TempDir t;
  xattn.save_weights(t("w.safetensors"));
  Tensor x = randn_f32({2, 7, 8}, 1), ctx = randn_f32({2, 16, 8}, 2);
  Tensor cmask = ones({2, 16}, {.dtype = DType::b8});
  cmask.select(0, 0).narrow(0, 12, 4).fill_(0.0);
  save_npy(t("x.npy"), x);
  save_npy(t("c.npy"), ctx);
  save_npy(t("cm.npy"), cmask);
  Tensor xl = x.detach().requires_grad_(true), cl = ctx.detach().requires_grad_(true);
  Tensor y = xattn.forward(xl, cl, {}, cmask);
  Tensor g = randn_f32(y.shape(), 3);
  save_npy(t("g.npy"), g);
  RunOptions o;
  o.module = "ConditionalRoutedCrossAttention";
  o.config = t.write("c.json", R"({"dim": 8, "num_tokens_q": 3, "num_tokens_kv": 6, "dim_head": 4, "heads": 2,
                                   "kv_routing_tokens": 2})");
  o.weights = t("w.safetensors");
  o.input = t("x.npy");
  o.context = t("c.npy");
  o.context_mask = t("cm.npy");
  o.output = t("y.npy");
  o.grad_output = t("g.npy");
  o.grads = t("grads.safetensors");
  run_module(o);
  check_same(load_npy(t("y.npy")), y.detach());
  y.backward(g);
  std::map<std::string, Tensor> grads = load_safetensors(t("grads.safetensors"));
  std::set<std::string> want{"input", "context"};
  for (const auto& [k, v] : xattn.state_dict()) want.insert(k);
  CHECK(keys_of(grads) == want);
  check_close(grads.at("input"), xl.grad(), 1e-5, 1e-6);
  check_close(grads.at("context"), cl.grad(), 1e-5, 1e-6);
  // Without --context: a clear error.
  o.context.clear();
  o.context_mask.clear();
  CHECK(error_of(o).find("needs --context") != std::string::npos);
}

#include "layers/routed_image_attention.h"
TEST_CASE("colt5 run: ConditionalRoutedImageAttention (channel_first) and its shape errors") {
  Generator gen(13);
  ConditionalRoutedImageAttentionConfig c{.dim = 8, .num_heavy_tokens_q = 4, .num_heavy_tokens_kv = 6,
                                          .light_dim_head = 4, .light_heads = 2, .light_window_size = 4,
                                          .heavy_dim_head = 4, .heavy_heads = 2};
  c.channel_first = true;
  ConditionalRoutedImageAttention attn(c, gen);
  const char* cfg = R"({"dim": 8, "num_heavy_tokens_q": 4, "num_heavy_tokens_kv": 6, "light_dim_head": 4,
                        "light_heads": 2, "light_window_size": 4, "heavy_dim_head": 4, "heavy_heads": 2,
                        "channel_first": true})";
  check_module_against_layer("ConditionalRoutedImageAttention", cfg, attn,
                             [&](const Tensor& x) { return attn.forward(x); }, {1, 8, 8, 4});
  TempDir t;
  save_npy(t("x.npy"), randn_f32({1, 8, 6, 8}, 1));  // W = 8 fine, H = 6 not a multiple of 4
  RunOptions o;
  o.module = "ConditionalRoutedImageAttention";
  o.config = t.write("c.json", cfg);
  o.input = t("x.npy");
  o.output = t("y.npy");
  std::string e = error_of(o);
  INFO(e);
  CHECK(e.find("x.npy") != std::string::npos);
  CHECK(e.find("multiples of light_window_size = 4") != std::string::npos);
}

#include "layers/vit.h"
TEST_CASE("colt5 run: ConditionalRoutedViT matches the model") {
  Generator gen(14);
  ConditionalRoutedViTConfig c{.image_size = 16, .patch_size = 2, .num_classes = 5, .dim = 16, .depth = 1,
                               .attn_num_heavy_tokens_q = 4, .attn_num_heavy_tokens_kv = 8,
                               .attn_light_dim_head = 4, .attn_light_heads = 2, .attn_light_window_size = 4,
                               .attn_heavy_dim_head = 4, .attn_heavy_heads = 2, .ff_num_heavy_tokens = 8};
  ConditionalRoutedViT vit(c, gen);
  check_module_against_layer("ConditionalRoutedViT",
                             R"({"image_size": 16, "patch_size": 2, "num_classes": 5, "dim": 16, "depth": 1,
                                 "attn_num_heavy_tokens_q": 4, "attn_num_heavy_tokens_kv": 8,
                                 "attn_light_dim_head": 4, "attn_light_heads": 2, "attn_light_window_size": 4,
                                 "attn_heavy_dim_head": 4, "attn_heavy_heads": 2, "ff_num_heavy_tokens": 8})",
                             vit, [&](const Tensor& x) { return vit.forward(x); }, {2, 3, 16, 16});
}

#include "layers/routed_autoregressive_attention.h"
TEST_CASE("colt5 run: ConditionalRoutedAutoregressiveAttention matches the layer") {
  Generator gen(15);
  ConditionalRoutedAutoregressiveAttentionConfig c{.dim = 8, .num_heavy_tokens_q = 2, .num_heavy_tokens_kv = 3,
                                                   .num_routed_kv = 2, .light_dim_head = 4, .light_heads = 2,
                                                   .light_window_size = 4, .heavy_dim_head = 4, .heavy_heads = 2};
  ConditionalRoutedAutoregressiveAttention attn(c, gen);
  check_module_against_layer("ConditionalRoutedAutoregressiveAttention",
                             R"({"dim": 8, "num_heavy_tokens_q": 2, "num_heavy_tokens_kv": 3, "num_routed_kv": 2,
                                 "light_dim_head": 4, "light_heads": 2, "light_window_size": 4,
                                 "heavy_dim_head": 4, "heavy_heads": 2})",
                             attn, [&](const Tensor& x) { return attn.forward(x); }, {2, 14, 8});
}
