// `colt5 run`: module table, config parsing, file handling (see run_modules.h).
#include "tools/run_modules.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <optional>
#include <set>
#include <sstream>

#include "colt5.h"

#include "layers/routed_autoregressive_attention.h"
#include "layers/routed_cross_attention.h"
#include "layers/routed_image_attention.h"
#include "layers/vit.h"

namespace colt5::tools {
namespace {

using Outputs = std::vector<std::pair<std::string, Tensor>>;

[[noreturn]] void fail(const std::string& msg) { throw Error(msg); }

std::string join(const std::vector<std::string>& v, const char* sep = ", ") {
  std::string s;
  for (size_t i = 0; i < v.size(); ++i) s += (i ? sep : "") + v[i];
  return s;
}

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// ------------------------------------------------------------------ config
// The keyword arguments of one constructor (or call): typed access that
// remembers every accepted key, so finish() can name the unknown ones.
class Kwargs {
 public:
  Kwargs(const Json& obj, std::string who, std::string what) : who_(std::move(who)), what_(std::move(what)) {
    if (!obj.is_object()) err(std::string("expected a JSON object of keyword arguments, got ") + obj.type_name());
    obj_ = &obj.as_object();
    std::set<std::string> seen;
    for (const auto& [k, v] : *obj_)
      if (!seen.insert(k).second) err("duplicate key '" + k + "'");
  }

  [[noreturn]] void err(const std::string& msg) const { fail(what_ + ": " + who_ + ": " + msg); }

  const Json* find(const std::string& key) {
    if (std::find(known_.begin(), known_.end(), key) == known_.end()) known_.push_back(key);
    return find_in(key);
  }
  bool has(const std::string& key) { return find(key) != nullptr; }

  int64_t to_int(const std::string& key, const Json& v) const {
    if (v.is_integer()) return v.as_int();
    if (v.is_number()) {
      double d = v.as_double();
      if (std::isfinite(d) && d == std::floor(d) && std::fabs(d) < 9e15) return static_cast<int64_t>(d);
    }
    err("'" + key + "' must be an integer, got " + v.dump());
  }
  double to_double(const std::string& key, const Json& v) const {
    if (!v.is_number()) err("'" + key + "' must be a number, got " + v.dump());
    return v.as_double();
  }

  int64_t get_int(const std::string& key, int64_t def) {
    const Json* v = find(key);
    return v ? to_int(key, *v) : def;
  }
  int64_t req_int(const std::string& key) {
    const Json* v = find(key);
    if (!v) missing(key);
    return to_int(key, *v);
  }
  double get_double(const std::string& key, double def) {
    const Json* v = find(key);
    return v ? to_double(key, *v) : def;
  }
  double req_double(const std::string& key) {
    const Json* v = find(key);
    if (!v) missing(key);
    return to_double(key, *v);
  }
  bool get_bool(const std::string& key, bool def) {
    const Json* v = find(key);
    if (!v) return def;
    if (!v->is_bool()) err("'" + key + "' must be true or false, got " + v->dump());
    return v->as_bool();
  }
  // null -> nullopt (the package's None).
  std::optional<double> get_opt_double(const std::string& key, std::optional<double> def) {
    const Json* v = find(key);
    if (!v) return def;
    if (v->is_null()) return std::nullopt;
    return to_double(key, *v);
  }
  std::optional<int64_t> get_opt_int(const std::string& key, std::optional<int64_t> def) {
    const Json* v = find(key);
    if (!v) return def;
    if (v->is_null()) return std::nullopt;
    return to_int(key, *v);
  }
  // Accepted for compatibility; only `allowed` (a JSON value) is supported.
  void accept_only(const std::string& key, const Json& allowed, const std::string& why) {
    const Json* v = find(key);
    if (v && !(*v == allowed) && !(v->is_number() && allowed.is_number() && v->as_double() == allowed.as_double()))
      err("'" + key + "' = " + v->dump() + " is not supported (" + why + ")");
  }
  const Json* get_object(const std::string& key) {
    const Json* v = find(key);
    if (v && !v->is_object()) err("'" + key + "' must be a JSON object, got " + v->dump());
    return v;
  }

  // Unknown keys, this object's and those adopted from nested ones ("router_kwargs.x").
  std::vector<std::string> unknown() const {
    std::vector<std::string> u;
    for (const auto& [k, v] : *obj_)
      if (std::find(known_.begin(), known_.end(), k) == known_.end()) u.push_back(k);
    u.insert(u.end(), extra_unknown_.begin(), extra_unknown_.end());
    return u;
  }
  // A nested object's unknown keys are reported with this object's (by finish()).
  void adopt(const Kwargs& child, const std::string& prefix) {
    std::vector<std::string> u = child.unknown();
    if (u.empty()) return;
    for (const std::string& k : u) extra_unknown_.push_back(prefix + "." + k);
    child_accepted_.push_back(prefix + " accepts: " + join(child.known_));
  }

  // Unknown keys are one error listing all of them (and the accepted ones).
  void finish() const {
    std::vector<std::string> unknown_keys = unknown();
    if (unknown_keys.empty()) return;
    for (std::string& k : unknown_keys) k = "'" + k + "'";
    std::string accepted = "accepted: " + join(known_);
    for (const std::string& c : child_accepted_) accepted += "; " + c;
    err(std::string("unknown key") + (unknown_keys.size() > 1 ? "s " : " ") + join(unknown_keys) + " (" + accepted + ")");
  }

  const std::string& what() const { return what_; }
  const std::string& who() const { return who_; }

 private:
  const Json* find_in(const std::string& key) const {
    for (const auto& [k, v] : *obj_)
      if (k == key) return &v;
    return nullptr;
  }
  [[noreturn]] void missing(const std::string& key) const { err("missing required key '" + key + "'"); }

  const Json::Object* obj_ = nullptr;
  std::string who_, what_;
  std::vector<std::string> known_;
  std::vector<std::string> extra_unknown_, child_accepted_;
};

// The call-time keyword arguments live under "forward" (an object).
Kwargs forward_kwargs(Kwargs& k, const Json& empty) {
  const Json* f = k.get_object("forward");
  return Kwargs(f ? *f : empty, k.who() + " forward", k.what());
}

const Json& empty_object() {
  static const Json e = Json::object();
  return e;
}

// CoordinateDescentRouter's keyword arguments (besides dim), the package's names.
void parse_router_config(Kwargs& k, RouterConfig& c) {
  c.straight_through = k.get_bool("straight_through", c.straight_through);
  c.n_iters = static_cast<int>(k.get_int("n_iters", c.n_iters));
  c.fetch_k_ratio = k.get_double("fetch_k_ratio", c.fetch_k_ratio);
  c.eps = k.get_double("eps", c.eps);
  c.eps_decay = k.get_double("eps_decay", c.eps_decay);
  c.eps_init = k.get_opt_double("eps_init", c.eps_init);
  c.num_routing_tokens = k.get_int("num_routing_tokens", c.num_routing_tokens);
  c.learned_routing_tokens = k.get_bool("learned_routing_tokens", c.learned_routing_tokens);
  c.use_triton = k.get_bool("use_triton", c.use_triton);
  c.cosine_sim_routing = k.get_bool("cosine_sim_routing", c.cosine_sim_routing);
  c.cosine_sim_scale = k.get_double("cosine_sim_scale", c.cosine_sim_scale);
  c.route_block_size = k.get_opt_int("route_block_size", c.route_block_size);
  auto seg = k.get_opt_int("triton_checkpoint_segments", std::nullopt);
  if (seg) c.triton_checkpoint_segments = static_cast<int>(*seg);
}

RouterConfig parse_router_kwargs(Kwargs& k, RouterConfig c = {}) {
  const Json* rk = k.get_object("router_kwargs");
  if (!rk) return c;
  Kwargs sub(*rk, k.who() + " router_kwargs", k.what());
  parse_router_config(sub, c);
  k.adopt(sub, "router_kwargs");
  return c;
}

// The keyword arguments the routed attention layers share (same names in the
// package and in our config structs).
template <class Config>
void read_routed_attention_kwargs(Kwargs& k, Config& c) {
  c.light_dim_head = k.get_int("light_dim_head", c.light_dim_head);
  c.light_heads = k.get_int("light_heads", c.light_heads);
  c.light_window_size = k.get_int("light_window_size", c.light_window_size);
  c.heavy_dim_head = k.get_int("heavy_dim_head", c.heavy_dim_head);
  c.heavy_heads = k.get_int("heavy_heads", c.heavy_heads);
  c.router_straight_through = k.get_bool("router_straight_through", c.router_straight_through);
  c.router_kwargs = parse_router_kwargs(k);
  c.multiply_keys_by_score = k.get_bool("multiply_keys_by_score", c.multiply_keys_by_score);
  c.multiply_queries_by_score = k.get_bool("multiply_queries_by_score", c.multiply_queries_by_score);
  c.use_triton = k.get_bool("use_triton", c.use_triton);
  c.use_null_q_tokens = k.get_bool("use_null_q_tokens", c.use_null_q_tokens);
  c.use_flash_attn = k.get_bool("use_flash_attn", c.use_flash_attn);
  c.rotary_emb = k.get_bool("rotary_emb", c.rotary_emb);
}

// ------------------------------------------------------------------ shape checks
// Names of the inputs in messages ("--input x.npy"), set by run_module.
struct InputNames {
  std::string input = "--input", mask = "--mask", context = "--context", context_mask = "--context-mask";
};
thread_local InputNames g_names;

[[noreturn]] void bad_shape(const std::string& name, const Tensor& t, const std::string& expected) {
  fail(name + ": expected shape " + expected + ", got " + shape_str(t.shape()));
}

std::string dim_str(int64_t d, const char* from = "dim") { return std::string(from) + " = " + std::to_string(d); }

// (B, N, dim)
void check_seq(const Tensor& x, const std::string& name, int64_t dim) {
  if (x.dim() != 3 || x.size(2) != dim) bad_shape(name, x, "(B, N, " + std::to_string(dim) + ") (" + dim_str(dim) + " from the config)");
}
void check_last(const Tensor& x, const std::string& name, int64_t dim) {
  if (x.dim() < 1 || x.size(-1) != dim)
    bad_shape(name, x, "(..., " + std::to_string(dim) + ") (" + dim_str(dim) + " from the config)");
}
// mask (B, N) for x (B, N, D)
void check_mask(const Tensor& m, const std::string& name, const Tensor& x, const std::string& xname) {
  if (!m.defined()) return;
  if (m.dim() != 2 || m.size(0) != x.size(0) || m.size(1) != x.size(1))
    bad_shape(name, m, "(B, N) = (" + std::to_string(x.size(0)) + ", " + std::to_string(x.size(1)) + ") to match " + xname);
}

void refuse(const Tensor& t, const std::string& flag, const std::string& module) {
  if (t.defined()) fail(module + " takes no " + flag);
}

// ------------------------------------------------------------------ the table
using Builder = std::function<Runnable(Kwargs&, Generator&)>;

Runnable make_simple(const std::string& name, std::shared_ptr<Module> m,
                     std::function<Outputs(const RunInputs&)> fwd, bool takes_mask = false) {
  Runnable r;
  r.name = name;
  r.module = std::move(m);
  r.forward = std::move(fwd);
  r.differentiable = {"output"};
  r.takes_mask = takes_mask;
  return r;
}

RouteOptions route_options(Kwargs& f, const std::shared_ptr<Generator>& g) {
  RouteOptions o;
  o.random_route = f.get_bool("random_route", false);
  o.generator = g.get();
  return o;
}

const std::map<std::string, Builder>& table() {
  static const std::map<std::string, Builder> t = [] {
    std::map<std::string, Builder> t;

    t["RMSNorm"] = [](Kwargs& k, Generator&) {
      int64_t dim = k.req_int("dim");
      auto m = std::make_shared<RMSNorm>(dim);
      return make_simple("RMSNorm", m, [m, dim](const RunInputs& in) {
        check_last(in.input, g_names.input, dim);
        return Outputs{{"output", m->forward(in.input)}};
      });
    };

    t["FeedForward"] = [](Kwargs& k, Generator& gen) {
      int64_t dim = k.req_int("dim");
      double mult = k.get_double("mult", 4.0);
      auto m = std::make_shared<FeedForward>(dim, mult, gen);
      return make_simple("FeedForward", m, [m, dim](const RunInputs& in) {
        check_last(in.input, g_names.input, dim);
        return Outputs{{"output", m->forward(in.input)}};
      });
    };

    t["Attention"] = [](Kwargs& k, Generator& gen) {
      AttentionConfig c;
      c.dim = k.req_int("dim");
      c.dim_head = k.get_int("dim_head", c.dim_head);
      c.heads = k.get_int("heads", c.heads);
      c.use_flash = k.get_bool("use_flash", c.use_flash);
      c.multiply_keys_by_score = k.get_bool("multiply_keys_by_score", c.multiply_keys_by_score);
      auto m = std::make_shared<Attention>(c, gen);
      int64_t dim = c.dim;
      Runnable r = make_simple("Attention", m, [m, dim](const RunInputs& in) {
        check_seq(in.input, g_names.input, dim);
        AttentionCall call;
        if (in.context.defined()) {
          const Tensor& c = in.context;
          if ((c.dim() != 3 && c.dim() != 4) || c.size(0) != in.input.size(0) || c.size(-1) != dim)
            bad_shape(g_names.context, c, "(B, Nk, " + std::to_string(dim) + ") or (B, R, Nk, " + std::to_string(dim) +
                                              ") with B = " + std::to_string(in.input.size(0)));
          call.context = c;
        }
        if (in.mask.defined()) {
          Shape want = in.context.defined() ? Shape(in.context.shape().begin(), in.context.shape().end() - 1)
                                            : Shape{in.input.size(0), in.input.size(1)};
          if (in.mask.shape() != want)
            bad_shape(g_names.mask, in.mask, shape_str(want) + " (the keys: the context's, else the input's, without D)");
          call.mask = in.mask;
        }
        return Outputs{{"output", m->forward(in.input, call)}};
      }, true);
      r.takes_context = true;
      return r;
    };

    t["LocalMHA"] = [](Kwargs& k, Generator& gen) {
      LocalMHAConfig c;
      c.dim = k.req_int("dim");
      c.window_size = k.req_int("window_size");
      c.dim_head = k.get_int("dim_head", c.dim_head);
      c.heads = k.get_int("heads", c.heads);
      c.causal = k.get_bool("causal", c.causal);
      c.prenorm = k.get_bool("prenorm", c.prenorm);
      if (const Json* v = k.find("exact_windowsize"); v && !v->is_null()) c.exact_windowsize = k.get_bool("exact_windowsize", true);
      c.look_backward = static_cast<int>(k.get_int("look_backward", c.look_backward));
      if (auto lf = k.get_opt_int("look_forward", std::nullopt)) c.look_forward = static_cast<int>(*lf);
      k.accept_only("dropout", Json(0.0), "no dropout here");
      k.accept_only("autopad", Json(true), "the sequence is always padded to the window");
      k.accept_only("qk_rmsnorm", Json(false), "not implemented");
      k.accept_only("use_xpos", Json(false), "not implemented");
      k.accept_only("gate_values_per_head", Json(false), "not implemented");
      // local-attention's default is use_rotary_pos_emb = True, which this engine's
      // LocalMHA does not implement (CoLT5 passes False): it must be said.
      const Json* rot = k.find("use_rotary_pos_emb");
      if (!rot || !(rot->is_bool() && !rot->as_bool()))
        k.err("'use_rotary_pos_emb' must be given as false (the local-attention package defaults to true, which "
              "this engine's LocalMHA does not implement; CoLT5's light attention passes false)");
      auto m = std::make_shared<LocalMHA>(c, gen);
      int64_t dim = c.dim;
      return make_simple("LocalMHA", m, [m, dim](const RunInputs& in) {
        check_seq(in.input, g_names.input, dim);
        check_mask(in.mask, g_names.mask, in.input, g_names.input);
        return Outputs{{"output", m->forward(in.input, in.mask)}};
      }, true);
    };

    t["SelfAttention"] = [](Kwargs& k, Generator& gen) {
      SelfAttentionConfig c;
      c.dim = k.req_int("dim");
      c.dim_head = k.get_int("dim_head", c.dim_head);
      c.heads = k.get_int("heads", c.heads);
      c.use_flash = k.get_bool("use_flash", c.use_flash);
      c.prenorm = k.get_bool("prenorm", c.prenorm);
      auto m = std::make_shared<SelfAttention>(c, gen);
      int64_t dim = c.dim;
      return make_simple("SelfAttention", m, [m, dim](const RunInputs& in) {
        check_seq(in.input, g_names.input, dim);
        return Outputs{{"output", m->forward(in.input)}};
      });
    };

    t["CoordinateDescentRouter"] = [](Kwargs& k, Generator& gen) {
      int64_t dim = k.req_int("dim");
      RouterConfig c;
      parse_router_config(k, c);
      Kwargs f = forward_kwargs(k, empty_object());
      int64_t num_tokens = f.req_int("num_tokens");
      auto g = std::make_shared<Generator>(gen.seed() + 1);
      RouteOptions ro = route_options(f, g);
      ro.keep_one_route_dim = f.get_bool("keep_one_route_dim", false);
      k.adopt(f, "forward");
      auto m = std::make_shared<CoordinateDescentRouter>(dim, c, gen);
      Runnable r;
      r.name = "CoordinateDescentRouter";
      r.module = m;
      r.takes_mask = true;
      r.takes_context = c.learned_routing_tokens;
      r.differentiable = {"scores", "routed_tokens"};
      bool learned = c.learned_routing_tokens;
      r.forward = [m, dim, num_tokens, ro, g, learned](const RunInputs& in) {
        check_seq(in.input, g_names.input, dim);
        check_mask(in.mask, g_names.mask, in.input, g_names.input);
        RouteOptions o = ro;
        if (learned) {
          if (!in.context.defined())
            fail("CoordinateDescentRouter with learned_routing_tokens needs the routing tokens as --context, "
                 "shape (B, D) or (B, R, D)");
          o.routing_tokens = in.context;
        }
        RouterReturn rr = m->forward(in.input, num_tokens, in.mask, o);
        Outputs out;
        if (rr.indices.defined()) out.push_back({"indices", rr.indices});
        out.push_back({"scores", rr.scores});
        out.push_back({"routed_tokens", rr.routed_tokens});
        if (rr.routed_mask.defined()) out.push_back({"routed_mask", rr.routed_mask});
        return out;
      };
      return r;
    };

    t["ConditionalRoutedFeedForward"] = [](Kwargs& k, Generator& gen) {
      ConditionalRoutedFeedForwardConfig c;
      c.dim = k.req_int("dim");
      c.num_heavy_tokens = k.req_int("num_heavy_tokens");
      c.light_ff_mult = k.get_double("light_ff_mult", c.light_ff_mult);
      c.heavy_ff_mult = k.get_double("heavy_ff_mult", c.heavy_ff_mult);
      c.router_straight_through = k.get_bool("router_straight_through", c.router_straight_through);
      c.use_triton = k.get_bool("use_triton", c.use_triton);
      c.router_kwargs = parse_router_kwargs(k);
      Kwargs f = forward_kwargs(k, empty_object());
      auto g = std::make_shared<Generator>(gen.seed() + 1);
      RoutedFeedForwardCall call;
      call.route = route_options(f, g);
      call.num_heavy_tokens = f.get_opt_int("num_heavy_tokens", std::nullopt);
      k.adopt(f, "forward");
      auto m = std::make_shared<ConditionalRoutedFeedForward>(c, gen);
      int64_t dim = c.dim;
      return make_simple("ConditionalRoutedFeedForward", m, [m, dim, call, g](const RunInputs& in) {
        check_seq(in.input, g_names.input, dim);
        check_mask(in.mask, g_names.mask, in.input, g_names.input);
        return Outputs{{"output", m->forward(in.input, in.mask, call)}};
      }, true);
    };

    t["ConditionalRoutedAttention"] = [](Kwargs& k, Generator& gen) {
      ConditionalRoutedAttentionConfig c;
      c.dim = k.req_int("dim");
      c.num_heavy_tokens_q = k.req_int("num_heavy_tokens_q");
      c.num_heavy_tokens_kv = k.req_int("num_heavy_tokens_kv");
      c.num_routed_kv = k.get_int("num_routed_kv", c.num_routed_kv);
      read_routed_attention_kwargs(k, c);
      c.has_light_attn = k.get_bool("has_light_attn", c.has_light_attn);
      Kwargs f = forward_kwargs(k, empty_object());
      auto g = std::make_shared<Generator>(gen.seed() + 1);
      RoutedAttentionCall call;
      call.route = route_options(f, g);
      call.num_heavy_tokens_q = f.get_opt_int("num_heavy_tokens_q", std::nullopt);
      call.num_heavy_tokens_kv = f.get_opt_int("num_heavy_tokens_kv", std::nullopt);
      k.adopt(f, "forward");
      auto m = std::make_shared<ConditionalRoutedAttention>(c, gen);
      int64_t dim = c.dim;
      return make_simple("ConditionalRoutedAttention", m, [m, dim, call, g](const RunInputs& in) {
        check_seq(in.input, g_names.input, dim);
        check_mask(in.mask, g_names.mask, in.input, g_names.input);
        return Outputs{{"output", m->forward(in.input, in.mask, call)}};
      }, true);
    };

    t["ConditionalRoutedTransformerBlock"] = [](Kwargs& k, Generator& gen) {
      ConditionalRoutedTransformerBlockConfig c;
      c.dim = k.req_int("dim");
      c.num_heavy_attn_tokens_q = k.req_int("num_heavy_attn_tokens_q");
      c.num_heavy_attn_tokens_kv = k.req_int("num_heavy_attn_tokens_kv");
      c.num_routed_kv = k.get_int("num_routed_kv", c.num_routed_kv);
      read_routed_attention_kwargs(k, c);
      c.num_heavy_ff_tokens = k.req_int("num_heavy_ff_tokens");
      c.light_ff_mult = k.get_double("light_ff_mult", c.light_ff_mult);
      c.heavy_ff_mult = k.get_double("heavy_ff_mult", c.heavy_ff_mult);
      c.has_light_attn = k.get_bool("has_light_attn", c.has_light_attn);
      Kwargs f = forward_kwargs(k, empty_object());
      auto g = std::make_shared<Generator>(gen.seed() + 1);
      TransformerBlockCall call;
      call.route = route_options(f, g);
      call.num_heavy_attn_tokens_q = f.get_opt_int("num_heavy_attn_tokens_q", std::nullopt);
      call.num_heavy_attn_tokens_kv = f.get_opt_int("num_heavy_attn_tokens_kv", std::nullopt);
      call.num_heavy_ff_tokens = f.get_opt_int("num_heavy_ff_tokens", std::nullopt);
      k.adopt(f, "forward");
      auto m = std::make_shared<ConditionalRoutedTransformerBlock>(c, gen);
      int64_t dim = c.dim;
      return make_simple("ConditionalRoutedTransformerBlock", m, [m, dim, call, g](const RunInputs& in) {
        check_seq(in.input, g_names.input, dim);
        check_mask(in.mask, g_names.mask, in.input, g_names.input);
        return Outputs{{"output", m->forward(in.input, in.mask, call)}};
      }, true);
    };

    t["ConditionalRoutedAutoregressiveAttention"] = [](Kwargs& k, Generator& gen) {
      ConditionalRoutedAutoregressiveAttentionConfig c;
      c.dim = k.req_int("dim");
      c.num_heavy_tokens_q = k.req_int("num_heavy_tokens_q");
      c.num_heavy_tokens_kv = k.req_int("num_heavy_tokens_kv");
      c.num_routed_kv = k.get_int("num_routed_kv", c.num_routed_kv);
      read_routed_attention_kwargs(k, c);
      c.heavy_window_size = k.get_opt_int("heavy_window_size", c.heavy_window_size);
      Kwargs f = forward_kwargs(k, empty_object());
      auto g = std::make_shared<Generator>(gen.seed() + 1);
      RoutedAttentionCall call;
      call.route = route_options(f, g);
      call.num_heavy_tokens_q = f.get_opt_int("num_heavy_tokens_q", std::nullopt);
      call.num_heavy_tokens_kv = f.get_opt_int("num_heavy_tokens_kv", std::nullopt);
      k.adopt(f, "forward");
      auto m = std::make_shared<ConditionalRoutedAutoregressiveAttention>(c, gen);
      int64_t dim = c.dim;
      return make_simple("ConditionalRoutedAutoregressiveAttention", m, [m, dim, call, g](const RunInputs& in) {
        check_seq(in.input, g_names.input, dim);
        return Outputs{{"output", m->forward(in.input, call)}};
      });
    };

    t["ConditionalRoutedCrossAttention"] = [](Kwargs& k, Generator& gen) {
      ConditionalRoutedCrossAttentionConfig c;
      c.dim = k.req_int("dim");
      c.num_tokens_q = k.req_int("num_tokens_q");
      c.num_tokens_kv = k.req_int("num_tokens_kv");
      c.num_sets_kv = k.get_int("num_sets_kv", c.num_sets_kv);
      c.dim_head = k.get_int("dim_head", c.dim_head);
      c.heads = k.get_int("heads", c.heads);
      c.router_straight_through = k.get_bool("router_straight_through", c.router_straight_through);
      c.router_kwargs = parse_router_kwargs(k);
      c.kv_routing_tokens = k.get_int("kv_routing_tokens", c.kv_routing_tokens);
      c.multiply_keys_by_score = k.get_bool("multiply_keys_by_score", c.multiply_keys_by_score);
      c.use_triton = k.get_bool("use_triton", c.use_triton);
      c.use_null_q_tokens = k.get_bool("use_null_q_tokens", c.use_null_q_tokens);
      c.use_flash_attn = k.get_bool("use_flash_attn", c.use_flash_attn);
      c.route_block_size = k.get_opt_int("route_block_size", c.route_block_size);
      Kwargs f = forward_kwargs(k, empty_object());
      auto g = std::make_shared<Generator>(gen.seed() + 1);
      RoutedCrossAttentionCall call;
      call.route = route_options(f, g);
      call.num_tokens_q = f.get_opt_int("num_tokens_q", std::nullopt);
      call.num_tokens_kv = f.get_opt_int("num_tokens_kv", std::nullopt);
      k.adopt(f, "forward");
      auto m = std::make_shared<ConditionalRoutedCrossAttention>(c, gen);
      int64_t dim = c.dim;
      Runnable r = make_simple("ConditionalRoutedCrossAttention", m, [m, dim, call, g](const RunInputs& in) {
        check_seq(in.input, g_names.input, dim);
        check_mask(in.mask, g_names.mask, in.input, g_names.input);
        if (!in.context.defined()) fail("ConditionalRoutedCrossAttention needs --context (B, Nk, D)");
        check_seq(in.context, g_names.context, dim);
        if (in.context.size(0) != in.input.size(0))
          bad_shape(g_names.context, in.context, "(B, Nk, D) with B = " + std::to_string(in.input.size(0)) + " (the input's)");
        check_mask(in.context_mask, g_names.context_mask, in.context, g_names.context);
        return Outputs{{"output", m->forward(in.input, in.context, in.mask, in.context_mask, call)}};
      }, true);
      r.takes_context = r.takes_context_mask = true;
      return r;
    };

    t["ConditionalRoutedImageAttention"] = [](Kwargs& k, Generator& gen) {
      ConditionalRoutedImageAttentionConfig c;
      c.dim = k.req_int("dim");
      c.num_heavy_tokens_q = k.req_int("num_heavy_tokens_q");
      c.num_heavy_tokens_kv = k.req_int("num_heavy_tokens_kv");
      c.num_routed_kv = k.get_int("num_routed_kv", c.num_routed_kv);
      c.light_dim_head = k.get_int("light_dim_head", c.light_dim_head);
      c.light_heads = k.get_int("light_heads", c.light_heads);
      c.light_window_size = k.get_int("light_window_size", c.light_window_size);
      c.heavy_dim_head = k.get_int("heavy_dim_head", c.heavy_dim_head);
      c.heavy_heads = k.get_int("heavy_heads", c.heavy_heads);
      c.router_straight_through = k.get_bool("router_straight_through", c.router_straight_through);
      c.router_kwargs = parse_router_kwargs(k);
      c.multiply_keys_by_score = k.get_bool("multiply_keys_by_score", c.multiply_keys_by_score);
      c.multiply_queries_by_score = k.get_bool("multiply_queries_by_score", c.multiply_queries_by_score);
      c.use_triton = k.get_bool("use_triton", c.use_triton);
      c.use_null_q_tokens = k.get_bool("use_null_q_tokens", c.use_null_q_tokens);
      c.use_flash_attn = k.get_bool("use_flash_attn", c.use_flash_attn);
      c.channel_first = k.get_bool("channel_first", c.channel_first);
      c.global_routing = k.get_bool("global_routing", c.global_routing);
      Kwargs f = forward_kwargs(k, empty_object());
      auto g = std::make_shared<Generator>(gen.seed() + 1);
      RoutedAttentionCall call;
      call.route = route_options(f, g);
      call.num_heavy_tokens_q = f.get_opt_int("num_heavy_tokens_q", std::nullopt);
      call.num_heavy_tokens_kv = f.get_opt_int("num_heavy_tokens_kv", std::nullopt);
      k.adopt(f, "forward");
      auto m = std::make_shared<ConditionalRoutedImageAttention>(c, gen);
      int64_t dim = c.dim, w = c.light_window_size;
      bool cf = c.channel_first;
      return make_simple("ConditionalRoutedImageAttention", m, [m, dim, w, cf, call, g](const RunInputs& in) {
        const Tensor& x = in.input;
        std::string ws = std::to_string(w), ds = std::to_string(dim);
        std::string want = cf ? "(B, " + ds + ", H, W)" : "(B, H, W, " + ds + ")";
        want += " (dim = " + ds + ", H and W multiples of light_window_size = " + ws + ", from the config)";
        if (x.dim() != 4 || x.size(cf ? 1 : 3) != dim) bad_shape(g_names.input, x, want);
        int64_t H = x.size(cf ? 2 : 1), W = x.size(cf ? 3 : 2);
        if (H % w != 0 || W % w != 0) bad_shape(g_names.input, x, want);
        if (in.mask.defined() && in.mask.shape() != Shape{x.size(0), H, W})
          bad_shape(g_names.mask, in.mask, "(B, H, W) = " + shape_str({x.size(0), H, W}));
        return Outputs{{"output", m->forward(x, in.mask, call)}};
      }, true);
    };

    t["ConditionalRoutedViT"] = [](Kwargs& k, Generator& gen) {
      ConditionalRoutedViTConfig c;
      // image_size / patch_size: an integer or a pair [h, w] (the package's pair()).
      auto pair_of = [&k](const std::string& key) -> std::pair<int64_t, int64_t> {
        const Json* v = k.find(key);
        if (!v) k.err("missing required key '" + key + "'");
        if (v->is_array()) {
          if (v->size() != 2) k.err("'" + key + "' must be an integer or a pair [h, w], got " + v->dump());
          return {k.to_int(key, v->at(size_t{0})), k.to_int(key, v->at(size_t{1}))};
        }
        int64_t n = k.to_int(key, *v);
        return {n, n};
      };
      auto [ih, iw] = pair_of("image_size");
      auto [ph, pw] = pair_of("patch_size");
      if (ph != pw) k.err("'patch_size' must be square here, got [" + std::to_string(ph) + ", " + std::to_string(pw) + "]");
      c.image_height = ih;
      c.image_width = iw;
      c.image_size = ih == iw ? ih : 0;
      c.patch_size = ph;
      c.num_classes = k.req_int("num_classes");
      c.dim = k.req_int("dim");
      c.depth = k.req_int("depth");
      c.attn_num_heavy_tokens_q = k.req_int("attn_num_heavy_tokens_q");
      c.attn_num_heavy_tokens_kv = k.req_int("attn_num_heavy_tokens_kv");
      c.attn_light_dim_head = k.get_int("attn_light_dim_head", c.attn_light_dim_head);
      c.attn_light_heads = k.get_int("attn_light_heads", c.attn_light_heads);
      c.attn_light_window_size = k.get_int("attn_light_window_size", c.attn_light_window_size);
      c.attn_heavy_dim_head = k.get_int("attn_heavy_dim_head", c.attn_heavy_dim_head);
      c.attn_heavy_heads = k.get_int("attn_heavy_heads", c.attn_heavy_heads);
      c.ff_num_heavy_tokens = k.req_int("ff_num_heavy_tokens");
      c.ff_light_mult = k.get_double("ff_light_mult", c.ff_light_mult);
      c.ff_heavy_mult = k.get_double("ff_heavy_mult", c.ff_heavy_mult);
      c.channels = k.get_int("channels", c.channels);
      c.default_coor_descent_eps = k.get_double("default_coor_descent_eps", c.default_coor_descent_eps);
      if (const Json* rk = k.get_object("router_kwargs")) c.router_kwargs_has_eps = rk->contains("eps");
      c.router_kwargs = parse_router_kwargs(k);
      auto m = std::make_shared<ConditionalRoutedViT>(c, gen);
      int64_t C = c.channels, IH = ih, IW = iw;
      return make_simple("ConditionalRoutedViT", m, [m, C, IH, IW](const RunInputs& in) {
        const Tensor& x = in.input;
        if (x.dim() != 4 || x.size(1) != C || x.size(2) != IH || x.size(3) != IW)
          bad_shape(g_names.input, x, "(B, " + std::to_string(C) + ", " + std::to_string(IH) + ", " + std::to_string(IW) +
                                          ") (channels, image_size from the config)");
        return Outputs{{"output", m->forward(x)}};
      });
    };

    // ---- bare ops (the package's function keyword arguments, flat)
    t["coor_descent"] = [](Kwargs& k, Generator&) {
      CoorDescentOptions o;
      double kk = k.req_double("k");
      o.n_iters = static_cast<int>(k.req_int("n_iters"));
      o.eps = k.get_double("eps", 0.1);  // the package's coor_descent default
      o.eps_init = k.get_opt_double("eps_init", std::nullopt).value_or(0.0);
      o.eps_decay = k.get_double("eps_decay", 1.0);
      o.checkpoint_segments = static_cast<int>(k.get_int("checkpoint_segments", 1));
      o.reference = k.get_bool("reference", false);
      if (kk <= 0) k.err("'k' must be > 0, got " + std::to_string(kk));
      if (o.n_iters < 1) k.err("'n_iters' must be >= 1");
      if (o.eps <= 0) k.err("'eps' must be > 0");
      if (o.eps_decay <= 0 || o.eps_decay > 1) k.err("'eps_decay' must be in (0, 1]");
      Runnable r = make_simple("coor_descent", nullptr, [o, kk](const RunInputs& in) {
        if (in.mask.defined() && in.mask.shape() != in.input.shape())
          bad_shape(g_names.mask, in.mask, shape_str(in.input.shape()) + " (the input's)");
        return Outputs{{"output", coor_descent(in.input, kk, in.mask, o)}};
      }, true);
      return r;
    };

    t["topk"] = [](Kwargs& k, Generator&) {
      TopkOptions o;
      int64_t kk = k.req_int("k");
      o.coor_descent_k_ratio = k.get_double("coor_descent_k_ratio", o.coor_descent_k_ratio);
      o.n_iters = static_cast<int>(k.get_int("n_iters", o.n_iters));
      o.eps = k.get_double("eps", o.eps);
      o.eps_init = k.get_opt_double("eps_init", std::nullopt).value_or(0.0);
      o.eps_decay = k.get_double("eps_decay", o.eps_decay);
      o.non_differentiable = k.get_bool("non_differentiable", o.non_differentiable);
      k.get_bool("fused", false);  // accepted: the fused kernel is always used
      if (kk < 1) k.err("'k' must be >= 1");
      Runnable r;
      r.name = "topk";
      r.takes_mask = true;
      r.differentiable = {"values", "coor_descent_values", "gates"};
      r.forward = [o, kk](const RunInputs& in) {
        if (in.input.dim() < 1 || in.input.size(-1) < kk)
          bad_shape(g_names.input, in.input, "(..., n) with n >= k = " + std::to_string(kk));
        if (in.mask.defined() && in.mask.shape() != in.input.shape())
          bad_shape(g_names.mask, in.mask, shape_str(in.input.shape()) + " (the input's)");
        TopkOptions oo = o;
        oo.mask = in.mask;
        DiffTopK t = topk(in.input, kk, oo);
        Outputs out{{"values", t.values}, {"indices", t.indices}};
        if (t.coor_descent_values.defined()) out.push_back({"coor_descent_values", t.coor_descent_values});
        if (t.gates.defined()) out.push_back({"gates", t.gates});
        return out;
      };
      return r;
    };

    return t;
  }();
  return t;
}

// ------------------------------------------------------------------ files
bool file_exists(const std::string& path) {
  std::error_code ec;
  return std::filesystem::is_regular_file(path, ec);
}

Tensor read_npy_arg(const std::string& flag, const std::string& path) {
  if (!file_exists(path)) fail(flag + " " + path + ": no such file");
  try {
    return load_npy(path);
  } catch (const Error& e) {
    std::string m = e.what();
    fail(m.find(path) == std::string::npos ? flag + " " + path + ": " + m : flag + ": " + m);
  }
}

// A floating input converted to the run's dtype and device.
Tensor float_input(const std::string& flag, const std::string& path, DType dt, Device dev) {
  Tensor t = read_npy_arg(flag, path);
  if (!is_floating(t.dtype()))
    fail(flag + " " + path + ": expected a floating array (float32/float64/float16), got dtype " +
         dtype_name(t.dtype()));
  return t.to(dt).to(dev);
}

Tensor mask_input(const std::string& flag, const std::string& path, Device dev) {
  Tensor t = read_npy_arg(flag, path);
  if (t.dtype() != DType::b8)
    fail(flag + " " + path + ": a mask must be a bool array (numpy dtype bool, '|b1'), got dtype " +
         dtype_name(t.dtype()));
  return t.to(dev);
}

std::string read_text(const std::string& flag, const std::string& path) {
  if (!file_exists(path)) fail(flag + " " + path + ": no such file");
  std::ifstream f(path, std::ios::binary);
  if (!f) fail(flag + " " + path + ": cannot open");
  std::ostringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

std::string npy_stem(const std::string& path) { return ends_with(path, ".npy") ? path.substr(0, path.size() - 4) : path; }

}  // namespace

// ------------------------------------------------------------------ public
std::vector<std::string> run_module_names() {
  std::vector<std::string> v;
  for (const auto& [k, b] : table()) v.push_back(k);
  return v;
}

Runnable build_runnable(const std::string& name, const Json& config, Generator& gen, const std::string& what) {
  auto it = table().find(name);
  if (it == table().end()) fail("--module: unknown module '" + name + "' (known: " + join(run_module_names()) + ")");
  Kwargs k(config, name, what);
  Runnable r;
  try {
    r = it->second(k, gen);
  } catch (const Error& e) {
    std::string m = e.what();
    if (m.rfind(what, 0) == 0) throw;  // a config error (every key read so far), already named
    // The layer refused the configuration: unknown keys first (a misspelt key
    // often explains it), all of them having been read by now.
    k.finish();
    fail(what + ": " + name + ": invalid configuration: " + m);
  }
  k.finish();
  return r;
}

RunResult run_module(const RunOptions& opt) {
  if (opt.module.empty()) fail("--module is required");
  if (opt.config.empty()) fail("--config is required");
  if (opt.input.empty()) fail("--input is required");
  if (opt.output.empty()) fail("--output is required");
  if (!opt.grads.empty() && opt.grad_output.empty()) fail("--grads needs --grad-output (the output gradient to run backward with)");
  if (!opt.grad_output.empty() && opt.grads.empty()) fail("--grad-output needs --grads (the file the gradients go to)");
  if (!opt.grads.empty() && !ends_with(opt.grads, ".safetensors"))
    fail("--grads " + opt.grads + ": must be a .safetensors file");
  if (!opt.save_weights.empty() && !ends_with(opt.save_weights, ".safetensors"))
    fail("--save-weights " + opt.save_weights + ": must be a .safetensors file");
  if (!ends_with(opt.output, ".npy") && !ends_with(opt.output, ".safetensors"))
    fail("--output " + opt.output + ": must end in .npy or .safetensors");
  DType dt;
  if (opt.dtype == "f32") dt = DType::f32;
  else if (opt.dtype == "f64") dt = DType::f64;
  else fail("--dtype: expected f32 or f64, got '" + opt.dtype + "'");
  Device dev = Device::cpu();
  if (opt.device == "cpu") dev = Device::cpu();
  else if (opt.device == "cuda" || opt.device.rfind("cuda:", 0) == 0) {
    dev = Device::parse(opt.device);
    if (!cuda_available()) fail("--device " + opt.device + ": no CUDA device available in this build/machine");
    if (dt == DType::f64) fail("--dtype f64 is for exact comparisons on the CPU; use --device cpu (or --dtype f32 on cuda)");
  } else fail("--device: expected cpu or cuda, got '" + opt.device + "'");

  // Config and module.
  Json config;
  {
    std::string text = read_text("--config", opt.config);
    config = Json::parse(text, "--config " + opt.config);
  }
  Generator gen(opt.seed);
  Runnable r = build_runnable(opt.module, config, gen, "--config " + opt.config);

  if (r.module) {
    r.module->to(dt);
    if (!opt.weights.empty()) {
      if (!file_exists(opt.weights)) fail("--weights " + opt.weights + ": no such file");
      try {
        r.module->load_weights(opt.weights, true);
      } catch (const Error& e) {
        std::string m = e.what();
        if (m.find(opt.weights) == std::string::npos) m = opt.weights + ": " + m;
        fail("--weights " + m);
      }
    }
    if (!opt.save_weights.empty()) r.module->save_weights(opt.save_weights, {{"format", "pt"}, {"module", opt.module}});
    r.module->to(dev);
  } else {
    if (!opt.weights.empty()) fail("--weights: " + opt.module + " is an op and has no weights");
    if (!opt.save_weights.empty()) fail("--save-weights: " + opt.module + " is an op and has no weights");
  }

  // Inputs.
  g_names = InputNames{"--input " + opt.input, "--mask " + opt.mask, "--context " + opt.context,
                       "--context-mask " + opt.context_mask};
  RunInputs in;
  bool want_grad = !opt.grad_output.empty();
  in.input = float_input("--input", opt.input, dt, dev);
  if (want_grad) in.input.requires_grad_(true);
  if (!opt.mask.empty()) {
    if (!r.takes_mask) fail(opt.module + " takes no --mask");
    in.mask = mask_input("--mask", opt.mask, dev);
  }
  if (!opt.context.empty()) {
    if (!r.takes_context) fail(opt.module + " takes no --context (with this config)");
    in.context = float_input("--context", opt.context, dt, dev);
    if (want_grad) in.context.requires_grad_(true);
  }
  if (!opt.context_mask.empty()) {
    if (!r.takes_context_mask) fail(opt.module + " takes no --context-mask");
    in.context_mask = mask_input("--context-mask", opt.context_mask, dev);
  }

  Outputs outs = r.forward(in);

  RunResult res;
  if (want_grad) {
    // The output gradients: .npy = the primary output's, .safetensors = by output name.
    std::map<std::string, Tensor> gout;
    if (ends_with(opt.grad_output, ".safetensors")) {
      if (!file_exists(opt.grad_output)) fail("--grad-output " + opt.grad_output + ": no such file");
      gout = load_safetensors(opt.grad_output);
      std::vector<std::string> bad;
      for (const auto& [k, v] : gout)
        if (std::find(r.differentiable.begin(), r.differentiable.end(), k) == r.differentiable.end())
          bad.push_back("'" + k + "'");
      if (!bad.empty())
        fail("--grad-output " + opt.grad_output + ": unknown output name(s) " + join(bad) + " (" + opt.module +
             " has differentiable outputs: " + join(r.differentiable) + ")");
    } else {
      gout[r.differentiable[0]] = read_npy_arg("--grad-output", opt.grad_output);
    }
    Tensor loss;
    std::vector<std::pair<Tensor, Tensor>> pairs;
    for (auto& [name, g] : gout) {
      auto it = std::find_if(outs.begin(), outs.end(), [&](const auto& p) { return p.first == name; });
      if (it == outs.end())
        fail("--grad-output " + opt.grad_output + ": output '" + name + "' was not produced by this run");
      if (!is_floating(g.dtype()))
        fail("--grad-output " + opt.grad_output + ": gradient '" + name + "' must be floating, got dtype " +
             dtype_name(g.dtype()));
      if (g.shape() != it->second.shape())
        fail("--grad-output " + opt.grad_output + ": gradient '" + name + "' has shape " + shape_str(g.shape()) +
             ", the output has shape " + shape_str(it->second.shape()));
      if (it->second.requires_grad()) pairs.push_back({it->second, g.to(dt).to(dev)});
    }
    if (pairs.size() == 1) {
      pairs[0].first.backward(pairs[0].second);
    } else if (!pairs.empty()) {
      for (auto& [o, g] : pairs) {
        Tensor term = sum(o * g);
        loss = loss.defined() ? loss + term : term;
      }
      loss.backward();
    }
    auto grad_or_zeros = [](const Tensor& t) { return (t.grad().defined() ? t.grad() : zeros_like(t)).to(Device::cpu()); };
    res.grads["input"] = grad_or_zeros(in.input);
    if (in.context.defined()) res.grads["context"] = grad_or_zeros(in.context);
    if (r.module)
      for (const auto& [name, p] : r.module->named_parameters()) res.grads[name] = grad_or_zeros(p);
    save_safetensors(opt.grads, res.grads);
  }

  for (auto& [name, t] : outs) res.outputs.push_back({name, t.detach().to(Device::cpu()).contiguous()});
  if (ends_with(opt.output, ".safetensors")) {
    std::map<std::string, Tensor> m;
    for (auto& [name, t] : res.outputs) m[name] = t;
    save_safetensors(opt.output, m);
  } else if (res.outputs.size() == 1) {
    save_npy(opt.output, res.outputs[0].second);
  } else {
    for (auto& [name, t] : res.outputs) save_npy(npy_stem(opt.output) + "." + name + ".npy", t);
  }
  return res;
}

std::string run_help_text() {
  return "Modules (--module): " + join(run_module_names()) +
         ".\n"
         "CONFIG.json: the package's constructor keyword arguments with its names (router_kwargs nested); call\n"
         "arguments under \"forward\" (e.g. the router's {\"forward\": {\"num_tokens\": 64}}); the ops' arguments flat.\n"
         "--output: .npy (one output; several outputs go to Y.<name>.npy) or .safetensors (every output by name).\n"
         "--grad-output: .npy (gradient of the first output) or .safetensors (by output name).";
}

}  // namespace colt5::tools
