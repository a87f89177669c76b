// Module base: names, state dicts, loading, placement, modes; Linear and RMSNorm.
#include <doctest/doctest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <unistd.h>

#include "colt5.h"

using namespace colt5;

namespace {

std::string raw_bytes(const Tensor& t) {
  Tensor c = t.detach().to(Device::cpu()).contiguous();
  return std::string(static_cast<const char*>(c.data_ptr()), c.numel() * dtype_size(c.dtype()));
}

// Shaped like the package's heavy attention: own parameter, then children.
struct ToyAttn : Module {
  std::shared_ptr<RMSNorm> norm;
  std::shared_ptr<Linear> to_q, to_out;
  Tensor null_kv;  // (2, 2, 4)
  ToyAttn(int64_t dim, Generator& gen) {
    norm = register_module("norm", std::make_shared<RMSNorm>(dim));
    register_parameter("null_kv", null_kv, empty({2, 2, 4}));
    init_normal(null_kv, gen);
    to_q = register_module("to_q", std::make_shared<Linear>(dim, 8, false, gen));
    to_out = register_module("to_out", std::make_shared<Linear>(8, dim, false, gen));
  }
  Tensor forward(const Tensor& x) const { return to_out->forward(to_q->forward(norm->forward(x))) + sum(null_kv); }
};

// transformer.layers.{i} = [Linear, RMSNorm] as nested ModuleLists; a persistent buffer and
// a non-persistent one; a non-floating buffer.
struct Toy : Module {
  Tensor null_q_token, inv_freq, scratch, step;
  std::shared_ptr<ToyAttn> heavy_attn;
  std::shared_ptr<Module> transformer;
  std::shared_ptr<ModuleList> layers;
  explicit Toy(uint64_t seed, int64_t dim = 4, int depth = 2) {
    Generator gen(seed);
    register_parameter("null_q_token", null_q_token, empty({dim}));
    init_normal(null_q_token, gen);
    register_buffer("inv_freq", inv_freq, from_vector({1.0, 0.01}));
    register_buffer("scratch", scratch, zeros({3}), /*persistent=*/false);
    register_buffer("step", step, scalar_tensor(0, {.dtype = DType::i64}));
    heavy_attn = register_module("heavy_attn", std::make_shared<ToyAttn>(dim, gen));
    transformer = register_module("transformer", std::make_shared<Module>());
    layers = transformer->register_module("layers", std::make_shared<ModuleList>());
    for (int i = 0; i < depth; ++i) {
      auto layer = layers->push_back(std::make_shared<ModuleList>());
      layer->push_back(std::make_shared<Linear>(dim, dim, true, gen));
      layer->push_back(std::make_shared<RMSNorm>(dim));
    }
  }
  Tensor forward(const Tensor& x) const {
    Tensor h = x;
    for (const auto& l : *layers) {
      auto layer = std::dynamic_pointer_cast<ModuleList>(l);
      h = h + layer->at<RMSNorm>(1)->forward(layer->at<Linear>(0)->forward(h));
    }
    return heavy_attn->forward(h) + null_q_token;
  }
};

std::vector<std::string> names(const NamedTensors& v) {
  std::vector<std::string> out;
  for (const auto& [n, t] : v) out.push_back(n);
  return out;
}

}  // namespace

TEST_CASE("module: hierarchical names in PyTorch order, buffers, state dict") {
  Toy m(1);
  std::vector<std::string> want = {"null_q_token",
                                   "heavy_attn.null_kv",
                                   "heavy_attn.norm.gamma",
                                   "heavy_attn.to_q.weight",
                                   "heavy_attn.to_out.weight",
                                   "transformer.layers.0.0.weight",
                                   "transformer.layers.0.0.bias",
                                   "transformer.layers.0.1.gamma",
                                   "transformer.layers.1.0.weight",
                                   "transformer.layers.1.0.bias",
                                   "transformer.layers.1.1.gamma"};
  CHECK(names(m.named_parameters()) == want);
  CHECK(names(m.parameters()) == want);
  CHECK(names(m.named_buffers()) == std::vector<std::string>{"inv_freq", "scratch", "step"});
  auto sd = m.state_dict();
  CHECK(sd.size() == want.size() + 2);  // + inv_freq, step; scratch is not persistent
  CHECK(sd.count("inv_freq"));
  CHECK(sd.count("step"));
  CHECK(!sd.count("scratch"));
  for (const auto& [n, t] : m.named_parameters()) {
    INFO(n);
    CHECK(t.is_leaf());
    CHECK(t.requires_grad());
    CHECK(!sd.at(n).requires_grad());
    CHECK(sd.at(n).storage() == t.storage());  // detached views of the parameters
  }
  CHECK(!m.inv_freq.requires_grad());
  CHECK(m.get("heavy_attn.to_q.weight").storage() == m.heavy_attn->to_q->weight.storage());
  CHECK_THROWS_WITH_AS(m.get("heavy_attn.to_k.weight"), doctest::Contains("heavy_attn.to_q.weight"), Error);
  CHECK(names(m.heavy_attn->named_parameters()) ==
        std::vector<std::string>{"null_kv", "norm.gamma", "to_q.weight", "to_out.weight"});
  auto children = m.named_children();
  REQUIRE(children.size() == 2);
  CHECK(children[0].first == "heavy_attn");
  CHECK(children[1].first == "transformer");
  CHECK(m.layers->size() == 2);
}

TEST_CASE("module: num_parameters by hand") {
  Toy m(1);
  // null_q_token 4; heavy_attn: null_kv 16, norm 4, to_q 8*4, to_out 4*8; per layer: 4*4+4 + 4.
  CHECK(m.num_parameters() == 4 + (16 + 4 + 32 + 32) + 2 * (16 + 4 + 4));
  Linear nb(3, 5, false);
  CHECK(nb.num_parameters() == 15);
  CHECK(!nb.bias.defined());
  CHECK(names(nb.named_parameters()) == std::vector<std::string>{"weight"});
}

TEST_CASE("module: registration errors") {
  Module m;
  Tensor a, b, c;
  m.register_parameter("w", a, zeros({2}));
  CHECK_THROWS_WITH_AS(m.register_parameter("w", b, zeros({2})), doctest::Contains("\"w\" is already registered"),
                       Error);
  CHECK_THROWS_WITH_AS(m.register_buffer("w", b, zeros({2})), doctest::Contains("already registered"), Error);
  CHECK_THROWS_WITH_AS(m.register_module("w", std::make_shared<Module>()), doctest::Contains("already registered"),
                       Error);
  CHECK_THROWS_WITH_AS(m.register_parameter("a.b", b, zeros({2})), doctest::Contains("contains '.'"), Error);
  CHECK_THROWS_WITH_AS(m.register_parameter("", b, zeros({2})), doctest::Contains("non-empty name"), Error);
  CHECK_THROWS_WITH_AS(m.register_parameter("u", c, Tensor()), doctest::Contains("undefined"), Error);
  CHECK_THROWS_WITH_AS(m.register_module("n", std::shared_ptr<Module>()), doctest::Contains("null module"), Error);
  // A parameter is a detached leaf: registering a non-leaf value does not keep its history.
  Tensor x = from_vector({1, 2}, {2}, {.requires_grad = true});
  Tensor y;
  m.register_parameter("y", y, x * 2.0);
  CHECK(y.is_leaf());
  CHECK(y.requires_grad());
}

TEST_CASE("module: strict load reports missing, unexpected and mis-shaped keys in one message") {
  Toy m(1);
  Toy donor(2);
  auto sd = donor.state_dict();
  sd.erase("heavy_attn.to_q.weight");                 // missing
  sd.erase("transformer.layers.1.1.gamma");           // missing
  sd["heavy_attn.to_k.weight"] = zeros({8, 4});       // unexpected
  sd["null_q_token"] = zeros({5});                    // mis-shaped
  sd["transformer.layers.0.0.weight"] = zeros({4, 3});  // mis-shaped
  sd["step"] = scalar_tensor(1.0);                    // f32 into an i64 buffer: impossible
  std::string before = raw_bytes(m.null_q_token) + raw_bytes(m.heavy_attn->null_kv);
  std::string msg;
  try {
    m.load_state_dict(sd);
  } catch (const Error& e) {
    msg = e.what();
  }
  INFO(msg);
  CHECK(msg.find("missing keys (2): heavy_attn.to_q.weight, transformer.layers.1.1.gamma") != std::string::npos);
  CHECK(msg.find("unexpected keys (1): heavy_attn.to_k.weight") != std::string::npos);
  CHECK(msg.find("null_q_token: shape [5] in the checkpoint, [4] in the model") != std::string::npos);
  CHECK(msg.find("transformer.layers.0.0.weight: shape [4, 3] in the checkpoint, [4, 4] in the model") !=
        std::string::npos);
  CHECK(msg.find("step: dtype f32 in the checkpoint cannot load into i64") != std::string::npos);
  // Nothing was loaded.
  CHECK(raw_bytes(m.null_q_token) + raw_bytes(m.heavy_attn->null_kv) == before);

  // Non-strict: missing and unexpected are returned, shape mismatches still throw.
  auto sd2 = donor.state_dict();
  sd2.erase("heavy_attn.to_q.weight");
  sd2["extra"] = zeros({1});
  LoadResult r = m.load_state_dict(sd2, /*strict=*/false);
  CHECK(r.missing == std::vector<std::string>{"heavy_attn.to_q.weight"});
  CHECK(r.unexpected == std::vector<std::string>{"extra"});
  CHECK(raw_bytes(m.null_q_token) == raw_bytes(donor.null_q_token));
  CHECK(raw_bytes(m.heavy_attn->to_q->weight) != raw_bytes(donor.heavy_attn->to_q->weight));
  sd2["null_q_token"] = zeros({5});
  CHECK_THROWS_WITH_AS(m.load_state_dict(sd2, false), doctest::Contains("null_q_token: shape [5]"), Error);
  try {
    m.load_state_dict(sd2, false);
  } catch (const Error& e) {
    CHECK(std::string(e.what()).find("missing keys") == std::string::npos);
  }
}

TEST_CASE("module: a saved and re-loaded model gives bit-identical outputs") {
  Toy a(7), b(8);
  Generator g(3);
  Tensor x = randn({2, 5, 4}, g);
  Tensor ya = a.forward(x);
  CHECK(raw_bytes(b.forward(x)) != raw_bytes(ya));  // different initialisation

  auto dir = std::filesystem::temp_directory_path() / ("colt5_module_test_" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  std::string path = (dir / "toy.safetensors").string();
  save_safetensors(path, a.state_dict(), {{"format", "pt"}});
  auto loaded = load_safetensors(path);
  CHECK(loaded.size() == a.state_dict().size());
  b.load_state_dict(loaded);
  CHECK(raw_bytes(b.forward(x)) == raw_bytes(ya));
  for (const auto& [n, t] : b.named_parameters()) {
    INFO(n);
    CHECK(t.is_leaf());
    CHECK(t.requires_grad());
  }
  // The loaded model trains: gradients reach every parameter.
  sum(b.forward(x)).backward();
  for (const auto& [n, t] : b.named_parameters()) {
    INFO(n);
    CHECK(t.grad().defined());
  }
  b.zero_grad();
  for (const auto& [n, t] : b.named_parameters()) CHECK(!t.grad().defined());

  // The same through save_weights / load_weights; a wrong file is rejected naming it and every problem.
  Toy c(9);
  std::string p2 = (dir / "toy2.safetensors").string();
  a.save_weights(p2);
  c.load_weights(p2);
  CHECK(raw_bytes(c.forward(x)) == raw_bytes(ya));
  Toy deeper(1, 4, 3);
  try {
    deeper.load_weights(p2);
    FAIL("loaded a checkpoint with missing layers");
  } catch (const Error& e) {
    std::string msg = e.what();
    INFO(msg);
    CHECK(msg.find(p2 + ": load_state_dict") != std::string::npos);
    CHECK(msg.find("missing keys (3): transformer.layers.2.0.weight, transformer.layers.2.0.bias, "
                   "transformer.layers.2.1.gamma") != std::string::npos);
  }
  Toy wider(1, 5, 2);
  CHECK_THROWS_WITH_AS(wider.load_weights(p2), doctest::Contains("mismatched (10)"), Error);
  std::filesystem::remove_all(dir);
}

TEST_CASE("module: load converts f16, bf16 and f64 checkpoints to the parameters' dtype") {
  Toy src(5), m(6);
  for (DType dt : {DType::f64, DType::f16, DType::bf16}) {
    INFO(dtype_name(dt));
    std::map<std::string, Tensor> sd;
    for (auto& [n, t] : src.state_dict()) sd[n] = is_floating(t.dtype()) ? t.to(dt) : t;
    m.load_state_dict(sd);
    CHECK(m.null_q_token.dtype() == DType::f32);
    CHECK(m.null_q_token.to_vector<double>() == sd.at("null_q_token").to_vector<double>());
    CHECK(m.heavy_attn->to_q->weight.to_vector<double>() == sd.at("heavy_attn.to_q.weight").to_vector<double>());
  }
}

TEST_CASE("module: to(device) and to(dtype) move every tensor in place and keep parameters leaves") {
  Toy m(1);
  auto before = m.state_dict();
  Tensor w = m.heavy_attn->to_q->weight;
  m.to(Device::cpu());
  CHECK(m.device() == Device::cpu());
  CHECK(m.heavy_attn->to_q->weight.impl() == w.impl());  // already there: nothing replaced
  for (const auto& [n, t] : m.state_dict()) CHECK(raw_bytes(t) == raw_bytes(before.at(n)));

  Generator g(4);
  Tensor x = randn({1, 3, 4}, g);
  Tensor y32 = m.forward(x);
  m.to(DType::f64);
  for (const auto& [n, t] : m.named_parameters()) {
    INFO(n);
    CHECK(t.dtype() == DType::f64);
    CHECK(t.is_leaf());
    CHECK(t.requires_grad());
    CHECK(t.to_vector<double>() == before.at(n).to_vector<double>());
  }
  CHECK(m.inv_freq.dtype() == DType::f64);
  CHECK(m.scratch.dtype() == DType::f64);
  CHECK(m.step.dtype() == DType::i64);  // not floating: unchanged
  CHECK(!m.inv_freq.requires_grad());
  Tensor y64 = m.forward(x.to(DType::f64));
  CHECK(y64.dtype() == DType::f64);
  std::vector<double> a = y32.to_vector<double>(), b = y64.to_vector<double>();
  for (size_t i = 0; i < a.size(); ++i) CHECK(a[i] == doctest::Approx(b[i]).epsilon(1e-5));
  sum(y64).backward();
  CHECK(m.heavy_attn->to_q->weight.grad().dtype() == DType::f64);
  CHECK_THROWS_WITH_AS(m.to(DType::i64), doctest::Contains("floating"), Error);
  if (cuda_available()) {
    m.to(DType::f32).to(Device::cuda());
    CHECK(m.device() == Device::cuda());
    for (const auto& [n, t] : m.named_parameters()) CHECK(t.device() == Device::cuda());
    // Same weights on another device: same values up to the devices' summation
    // order (f32, TF32 off for these small matmuls): 1e-5 relative.
    std::vector<double> gy = m.forward(x.to(Device::cuda())).to(Device::cpu()).to_vector<double>();
    std::vector<double> cy = y32.to_vector<double>();
    REQUIRE(gy.size() == cy.size());
    for (size_t i = 0; i < gy.size(); ++i) CHECK(gy[i] == doctest::Approx(cy[i]).epsilon(1e-5));
  }
}

TEST_CASE("module: train and eval propagate to every descendant") {
  Toy m(1);
  std::vector<Module*> all = {&m, m.heavy_attn.get(), m.heavy_attn->norm.get(), m.heavy_attn->to_q.get(),
                              m.transformer.get(), m.layers.get()};
  for (const auto& l : *m.layers) {
    all.push_back(l.get());
    for (const auto& c : *std::dynamic_pointer_cast<ModuleList>(l)) all.push_back(c.get());
  }
  for (Module* x : all) CHECK(x->is_training());
  m.eval();
  for (Module* x : all) CHECK(!x->is_training());
  m.heavy_attn->train();
  CHECK(m.heavy_attn->to_q->is_training());
  CHECK(!m.is_training());
  m.train();
  for (Module* x : all) CHECK(x->is_training());
}

TEST_CASE("module: Linear and RMSNorm match the formulas; initialisation as SPEC §3") {
  Generator g1(11), g2(11), g3(12);
  Linear a(3, 2, true, g1), b(3, 2, true, g2), c(3, 2, true, g3);
  CHECK(raw_bytes(a.weight) == raw_bytes(b.weight));  // same seed, same values
  CHECK(raw_bytes(a.bias) == raw_bytes(b.bias));
  CHECK(raw_bytes(a.weight) != raw_bytes(c.weight));
  CHECK(a.weight.shape() == Shape{2, 3});
  CHECK(a.bias.shape() == Shape{2});
  Linear big(100, 50, true, g1);
  double bound = 1.0 / std::sqrt(100.0), wmax = 0, bmax = 0;
  for (double v : big.weight.to_vector<double>()) wmax = std::max(wmax, std::abs(v));
  for (double v : big.bias.to_vector<double>()) bmax = std::max(bmax, std::abs(v));
  CHECK(wmax <= bound);
  CHECK(wmax > 0.9 * bound);  // 5000 draws fill the range
  CHECK(bmax <= bound);
  CHECK(bmax > 0.5 * bound);

  // y = x W^T + b by hand.
  {
    NoGradGuard ng;
    a.weight.copy_(from_vector({1, 2, 3, -1, 0, 1}, {2, 3}));
    a.bias.copy_(from_vector({0.5, -0.5}));
  }
  Tensor x = from_vector({1, 1, 1, 2, 0, -1}, {2, 3});
  CHECK(a.forward(x).to_vector<float>() == std::vector<float>{6.5, -0.5, -0.5, -3.5});
  CHECK_THROWS_WITH_AS(a.forward(zeros({2, 4})), doctest::Contains("last dim must be 3"), Error);

  RMSNorm n(4);
  CHECK(n.gamma.to_vector<float>() == std::vector<float>{1, 1, 1, 1});
  {
    NoGradGuard ng;
    n.gamma.copy_(from_vector({1, 2, 3, 4}));
  }
  // ||(1, 1, 1, 1)|| = 2: x / 2 * sqrt(4) * gamma = gamma; a zero row stays zero (norm clamped).
  Tensor r = n.forward(from_vector({1, 1, 1, 1, 0, 0, 0, 0, 3, 0, 0, 4}, {3, 4}));
  std::vector<float> want = {1, 2, 3, 4, 0, 0, 0, 0, 1.2f, 0, 0, 6.4f};  // (3, 0, 0, 4) / 5 * 2 * gamma
  std::vector<float> got = r.to_vector<float>();
  for (size_t i = 0; i < want.size(); ++i) CHECK(got[i] == doctest::Approx(want[i]).epsilon(1e-6));
  CHECK(names(n.named_parameters()) == std::vector<std::string>{"gamma"});
}

TEST_CASE("module: init helpers are deterministic and in place") {
  Generator g1(5), g2(5);
  Tensor a = empty({1000}), b = empty({1000}, {.dtype = DType::f64});
  init_normal(a, g1, 2.0, 0.5);
  init_normal(b, g2, 2.0, 0.5);
  CHECK(a.to_vector<double>() == b.to(DType::f32).to_vector<double>());
  double m = mean(b).item<double>();
  CHECK(m == doctest::Approx(2.0).epsilon(0.05));
  init_uniform(b, -3, -2, g1);
  CHECK(max(b).item<double>() < -2);
  CHECK(min(b).item<double>() >= -3);
  init_ones(a);
  CHECK(sum(a).item<double>() == 1000);
  init_zeros(a);
  CHECK(sum(a).item<double>() == 0);
}
