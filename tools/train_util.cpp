#include "tools/train_util.h"

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "engine/autograd.h"
#include "engine/error.h"
#include "engine/safetensors.h"
#include "layers/optimizer.h"
#include "ops/elementwise.h"
#include "ops/loss.h"
#include "ops/reduce.h"

namespace colt5::tools {
namespace fs = std::filesystem;

// ---------------------------------------------------------------- config
// Version of config.json and the checkpoint layout (2: the blocks are
// ConditionalRoutedAutoregressiveAttention with key/value routes).
static const char* const kFormat = "colt5-train-2";

Json options_to_json(const TrainOptions& o) {
  const auto& m = o.model;
  const auto& t = o.task;
  Json model = Json::object();
  model.set("vocab_size", m.vocab_size);
  model.set("dim", m.dim);
  model.set("depth", m.depth);
  model.set("light_heads", m.light_heads);
  model.set("light_dim_head", m.light_dim_head);
  model.set("heavy_heads", m.heavy_heads);
  model.set("heavy_dim_head", m.heavy_dim_head);
  model.set("light_window_size", m.light_window_size);
  model.set("heavy_window_size", m.heavy_window_size);
  model.set("num_heavy_tokens_q", m.num_heavy_tokens_q);
  model.set("num_heavy_tokens_kv", m.num_heavy_tokens_kv);
  model.set("num_routed_kv", m.num_routed_kv);
  model.set("num_heavy_ff_tokens", m.num_heavy_ff_tokens);
  model.set("light_ff_mult", m.light_ff_mult);
  model.set("heavy_ff_mult", m.heavy_ff_mult);
  model.set("router_eps", m.router_eps);
  model.set("router_iters", m.router_iters);
  model.set("rotary", m.rotary);
  model.set("light_only", m.light_only);
  Json task = Json::object();
  task.set("kind", o.text.empty() ? "recall" : "text");
  task.set("text", o.text);
  task.set("seq_len", t.seq_len);
  task.set("num_pairs", t.num_pairs);
  task.set("num_filler", t.num_filler);
  task.set("num_keys", t.num_keys);
  task.set("num_values", t.num_values);
  task.set("min_distance", t.min_distance);
  Json train = Json::object();
  train.set("steps", o.steps);
  train.set("batch", o.batch);
  train.set("grad_accum", o.grad_accum);
  train.set("warmup", o.warmup);
  train.set("lr", o.lr);
  train.set("min_lr_ratio", o.min_lr_ratio);
  train.set("weight_decay", o.weight_decay);
  train.set("clip", o.clip);
  train.set("seed", static_cast<int64_t>(o.seed));
  train.set("device", o.device);
  train.set("eval_every", o.eval_every);
  train.set("eval_batches", o.eval_batches);
  train.set("random_route", o.random_route);
  train.set("label", o.label);
  Json j = Json::object();
  j.set("format", kFormat);
  j.set("model", model);
  j.set("task", task);
  j.set("train", train);
  return j;
}

TrainOptions options_from_json(const Json& j) {
  TrainOptions o;
  const Json* fmt = j.find("format");
  COLT5_CHECK(fmt && fmt->as_string() == kFormat, "config.json: format ", fmt ? fmt->as_string() : "(none)",
              " is not ", kFormat, " (a run written by another version of colt5 train; train it again)");
  const Json& m = j.at("model");
  auto& c = o.model;
  c.vocab_size = m.at("vocab_size").as_int();
  c.dim = m.at("dim").as_int();
  c.depth = m.at("depth").as_int();
  c.light_heads = m.at("light_heads").as_int();
  c.light_dim_head = m.at("light_dim_head").as_int();
  c.heavy_heads = m.at("heavy_heads").as_int();
  c.heavy_dim_head = m.at("heavy_dim_head").as_int();
  c.light_window_size = m.at("light_window_size").as_int();
  c.heavy_window_size = m.at("heavy_window_size").as_int();
  c.num_heavy_tokens_q = m.at("num_heavy_tokens_q").as_int();
  c.num_heavy_tokens_kv = m.at("num_heavy_tokens_kv").as_int();
  c.num_routed_kv = m.at("num_routed_kv").as_int();
  c.num_heavy_ff_tokens = m.at("num_heavy_ff_tokens").as_int();
  c.light_ff_mult = m.at("light_ff_mult").as_double();
  c.heavy_ff_mult = m.at("heavy_ff_mult").as_double();
  c.router_eps = m.at("router_eps").as_double();
  c.router_iters = static_cast<int>(m.at("router_iters").as_int());
  c.rotary = m.at("rotary").as_bool();
  c.light_only = m.at("light_only").as_bool();
  const Json& t = j.at("task");
  o.text = t.at("text").as_string();
  o.task.seq_len = t.at("seq_len").as_int();
  o.task.num_pairs = t.at("num_pairs").as_int();
  o.task.num_filler = t.at("num_filler").as_int();
  o.task.num_keys = t.at("num_keys").as_int();
  o.task.num_values = t.at("num_values").as_int();
  o.task.min_distance = t.at("min_distance").as_int();
  const Json& r = j.at("train");
  o.steps = r.at("steps").as_int();
  o.batch = r.at("batch").as_int();
  o.grad_accum = r.at("grad_accum").as_int();
  o.warmup = r.at("warmup").as_int();
  o.lr = r.at("lr").as_double();
  o.min_lr_ratio = r.at("min_lr_ratio").as_double();
  o.weight_decay = r.at("weight_decay").as_double();
  o.clip = r.at("clip").as_double();
  o.seed = static_cast<uint64_t>(r.at("seed").as_int());
  o.device = r.at("device").as_string();
  o.eval_every = r.at("eval_every").as_int();
  o.eval_batches = r.at("eval_batches").as_int();
  o.random_route = r.at("random_route").as_bool();
  o.label = r.at("label").as_string();
  return o;
}

static std::string read_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  COLT5_CHECK(f.good(), "cannot open ", path);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

static void write_file(const std::string& path, const std::string& text) {
  std::ofstream f(path, std::ios::binary);
  COLT5_CHECK(f.good(), "cannot write ", path);
  f << text;
}

LoadedRun load_run(const std::string& dir, const std::string& device) {
  LoadedRun r;
  const std::string cfg_path = (fs::path(dir) / "config.json").string();
  r.opt = options_from_json(Json::parse(read_file(cfg_path), cfg_path));
  if (r.opt.text.empty())
    r.recall = std::make_unique<RecallTask>(r.opt.task);
  else
    r.text = std::make_unique<TextTask>(r.opt.text, r.opt.task.seq_len);
  Generator g(r.opt.seed);
  r.model = std::make_shared<ColT5LM>(r.opt.model, g);
  std::map<std::string, Tensor> sd;
  const std::string ck = (fs::path(dir) / "checkpoint.safetensors").string();
  for (auto& [k, v] : load_safetensors(ck))
    if (k.rfind("model.", 0) == 0) sd[k.substr(6)] = v;
  r.model->load_state_dict(sd);
  r.model->to(Device::parse(device));
  r.model->eval();
  return r;
}

// ---------------------------------------------------------------- eval
static uint64_t eval_seed(uint64_t seed) { return seed * 1000003ULL + 0xe7a1ULL; }

EvalResult evaluate(const ColT5LM& model, const RecallTask* recall, const TextTask* text, int64_t batches,
                    int64_t batch, uint64_t seed, bool random_route, Device dev) {
  NoGradGuard ng;
  EvalResult r;
  double loss_sum = 0;
  int64_t correct = 0;
  Generator rg(eval_seed(seed) + 1);
  for (int64_t i = 0; i < batches; ++i) {
    TaskBatch b = recall ? recall->batch(eval_seed(seed), i * batch, batch)
                         : text->batch(eval_seed(seed), i * batch, batch, true);
    LMCall call;
    call.route.random_route = random_route;
    call.route.generator = &rg;
    Tensor logits = model.forward(b.inputs.to(dev), call);
    Tensor tg = b.targets.to(dev);
    Tensor l = cross_entropy(logits, tg, kIgnoreIndex, Reduction::sum);
    Tensor valid = ne(tg, static_cast<double>(kIgnoreIndex));
    Tensor hit = logical_and(eq(argmax(logits, -1), tg), valid);
    loss_sum += l.item<double>();
    correct += sum(hit.to(DType::f64)).item<int64_t>();
    r.scored += sum(valid.to(DType::f64)).item<int64_t>();
  }
  r.loss = r.scored ? loss_sum / r.scored : 0;
  r.acc = r.scored ? static_cast<double>(correct) / r.scored : 0;
  return r;
}

RoutingStats routing_stats(const ColT5LM& model, const RecallTask& recall, int64_t batches, int64_t batch,
                           uint64_t seed, bool random_route, Device dev) {
  NoGradGuard ng;
  RoutingStats st;
  const int64_t W = model.config().heavy_window_size, L = model.config().depth;
  st.value_routed.assign(L, 0.0);
  st.answer_routed.assign(L, 0.0);
  Generator rg(eval_seed(seed) + 1);
  for (int64_t i = 0; i < batches; ++i) {
    TaskBatch b = recall.batch(eval_seed(seed), i * batch, batch);
    std::vector<LayerTrace> trace;
    LMCall call;
    call.route.random_route = random_route;
    call.route.generator = &rg;
    call.trace = &trace;
    model.forward(b.inputs.to(dev), call);
    const std::vector<int64_t> in = b.inputs.to_vector<int64_t>();
    const int64_t N = b.inputs.size(1);
    std::vector<std::vector<int64_t>> kv(L), q(L);
    for (int64_t l = 0; l < L; ++l) {
      if (trace[l].kv_indices.defined()) kv[l] = trace[l].kv_indices.to(Device::cpu()).to_vector<int64_t>();
      if (trace[l].q_indices.defined()) q[l] = trace[l].q_indices.to(Device::cpu()).to_vector<int64_t>();
    }
    for (int64_t r = 0; r < batch; ++r)
      for (int64_t a : b.answer_pos[r]) {
        // the answer's pair: the one whose key stands before the query marker
        int64_t vpos = -1;
        for (size_t j = 0; j < b.key_pos[r].size(); ++j)
          if (in[r * N + b.key_pos[r][j]] == in[r * N + a - 1]) vpos = b.value_pos[r][j];
        const int64_t w = a / W - 1;  // row of the answer's window in the trace (window 0 has none)
        ++st.answers;
        if (w < 0) continue;
        for (int64_t l = 0; l < L; ++l) {
          const int64_t nw = trace[l].kv_indices.defined() ? trace[l].kv_indices.size(1) : 0;
          if (nw > 0) {
            const int64_t k = trace[l].kv_indices.size(2);
            const int64_t* row = kv[l].data() + (r * nw + w) * k;
            if (std::find(row, row + k, vpos) != row + k) st.value_routed[l] += 1;
          } else {
            st.value_routed[l] += 1;  // nothing routed: every earlier token is a key/value
          }
          const int64_t nq = trace[l].q_indices.defined() ? trace[l].q_indices.size(2) : 0;
          if (nq > 0) {
            const int64_t* row = q[l].data() + (r * trace[l].q_indices.size(1) + w) * nq;
            if (std::find(row, row + nq, a) != row + nq) st.answer_routed[l] += 1;
          } else {
            st.answer_routed[l] += 1;
          }
        }
      }
  }
  for (int64_t l = 0; l < L; ++l) {
    st.value_routed[l] /= std::max<int64_t>(1, st.answers);
    st.answer_routed[l] /= std::max<int64_t>(1, st.answers);
  }
  return st;
}

// ---------------------------------------------------------------- progress
Progress::Progress(std::string label, int64_t total, bool enabled)
    : label_(std::move(label)), total_(total), enabled_(enabled), tty_(isatty(fileno(stdout)) != 0) {}

static std::string fmt_time(double s) {
  char buf[32];
  if (!std::isfinite(s) || s < 0) return "?";
  int t = static_cast<int>(s + 0.5);
  std::snprintf(buf, sizeof buf, "%d:%02d", t / 60, t % 60);
  return buf;
}

void Progress::update(int64_t step, double loss, double tps, double elapsed) {
  if (!enabled_) return;
  const double frac = total_ > 0 ? static_cast<double>(step) / total_ : 1.0;
  const double eta = step > 0 ? elapsed / step * (total_ - step) : NAN;
  char buf[256];
  if (tty_) {
    const int width = 24, fill = static_cast<int>(frac * width);
    std::string bar(fill, '#');
    bar += std::string(width - fill, '.');
    std::snprintf(buf, sizeof buf, "\r%-12s [%s] %5lld/%-5lld loss %7.4f  %8.0f tok/s  ETA %s\033[K", label_.c_str(),
                  bar.c_str(), static_cast<long long>(step), static_cast<long long>(total_), loss, tps,
                  fmt_time(eta).c_str());
    std::fputs(buf, stdout);
    std::fflush(stdout);
    dirty_ = true;
  } else {
    // plain lines, about 20 per run
    const int64_t every = std::max<int64_t>(1, total_ / 20);
    if (step % every != 0 && step != total_) return;
    if (step == last_line_step_) return;
    last_line_step_ = step;
    std::snprintf(buf, sizeof buf, "%s step %lld/%lld loss %.4f %.0f tok/s ETA %s\n", label_.c_str(),
                  static_cast<long long>(step), static_cast<long long>(total_), loss, tps, fmt_time(eta).c_str());
    std::fputs(buf, stdout);
    std::fflush(stdout);
  }
}

void Progress::note(const std::string& line) {
  if (!enabled_) return;
  if (tty_ && dirty_) std::fputs("\r\033[K", stdout);
  std::fputs((line + "\n").c_str(), stdout);
  std::fflush(stdout);
  dirty_ = false;
}

void Progress::finish() {
  if (enabled_ && tty_ && dirty_) std::fputs("\n", stdout);
  std::fflush(stdout);
  dirty_ = false;
}

// ---------------------------------------------------------------- SVG
static std::string num(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.4g", v);
  return buf;
}

static std::string esc(const std::string& s) {
  std::string o;
  for (char c : s) {
    if (c == '<') o += "&lt;";
    else if (c == '>') o += "&gt;";
    else if (c == '&') o += "&amp;";
    else o += c;
  }
  return o;
}

// About 5 round tick values (1, 2, 2.5 or 5 times a power of ten apart) in [lo, hi].
static std::vector<double> nice_ticks(double lo, double hi) {
  const double raw = (hi - lo) / 4;
  const double p = std::pow(10.0, std::floor(std::log10(raw)));
  double step = 10 * p;
  for (double m : {1.0, 2.0, 2.5, 5.0})
    if (m * p >= raw) {
      step = m * p;
      break;
    }
  std::vector<double> t;
  for (double v = std::ceil(lo / step - 1e-9) * step; v <= hi + 1e-9 * step; v += step)
    t.push_back(std::abs(v) < 1e-12 ? 0 : v);
  return t;
}

void write_svg_panels(const std::string& path, const std::string& title, const std::vector<Panel>& panels) {
  const double pw = 460, ph = 320, ml = 60, mr = 20, mt = 40, mb = 50;
  const double W = pw * panels.size(), H = ph + 30;
  std::ostringstream s;
  s << "<svg xmlns='http://www.w3.org/2000/svg' width='" << W << "' height='" << H
    << "' font-family='sans-serif' font-size='12'>\n<rect width='100%' height='100%' fill='white'/>\n";
  s << "<text x='" << W / 2 << "' y='18' text-anchor='middle' font-size='15'>" << esc(title) << "</text>\n";
  for (size_t p = 0; p < panels.size(); ++p) {
    const Panel& P = panels[p];
    const double ox = pw * p, x0 = ox + ml, x1 = ox + pw - mr, y0 = 30 + ph - mb, y1 = 30 + mt;
    double xmin = INFINITY, xmax = -INFINITY, ymin = INFINITY, ymax = -INFINITY;
    for (const Series& se : P.series)
      for (size_t i = 0; i < se.x.size(); ++i) {
        if (!std::isfinite(se.y[i])) continue;
        xmin = std::min(xmin, se.x[i]);
        xmax = std::max(xmax, se.x[i]);
        ymin = std::min(ymin, se.y[i]);
        ymax = std::max(ymax, se.y[i]);
      }
    if (!std::isfinite(xmin)) xmin = 0, xmax = 1, ymin = 0, ymax = 1;
    if (!std::isnan(P.ymin)) ymin = P.ymin;
    if (!std::isnan(P.ymax)) ymax = P.ymax;
    if (xmax <= xmin) xmax = xmin + 1;
    if (ymax <= ymin) ymax = ymin + 1;
    auto X = [&](double v) { return x0 + (v - xmin) / (xmax - xmin) * (x1 - x0); };
    auto Y = [&](double v) { return y0 - (v - ymin) / (ymax - ymin) * (y0 - y1); };
    s << "<text x='" << (x0 + x1) / 2 << "' y='" << 30 + mt - 12 << "' text-anchor='middle' font-size='13'>"
      << esc(P.title) << "</text>\n";
    s << "<rect x='" << x0 << "' y='" << y1 << "' width='" << x1 - x0 << "' height='" << y0 - y1
      << "' fill='none' stroke='black'/>\n";
    for (double xv : nice_ticks(xmin, xmax)) {
      s << "<line x1='" << X(xv) << "' y1='" << y0 << "' x2='" << X(xv) << "' y2='" << y0 + 4 << "' stroke='black'/>";
      s << "<text x='" << X(xv) << "' y='" << y0 + 16 << "' text-anchor='middle'>" << num(xv) << "</text>\n";
    }
    for (double yv : nice_ticks(ymin, ymax)) {
      s << "<line x1='" << x0 - 4 << "' y1='" << Y(yv) << "' x2='" << x1 << "' y2='" << Y(yv)
        << "' stroke='#ddd'/>";
      s << "<text x='" << x0 - 6 << "' y='" << Y(yv) + 4 << "' text-anchor='end'>" << num(yv) << "</text>\n";
    }
    s << "<text x='" << (x0 + x1) / 2 << "' y='" << y0 + 34 << "' text-anchor='middle'>" << esc(P.xlabel)
      << "</text>\n";
    s << "<text transform='translate(" << ox + 16 << "," << (y0 + y1) / 2 << ") rotate(-90)' text-anchor='middle'>"
      << esc(P.ylabel) << "</text>\n";
    double ly = y1 + 14;
    for (const Series& se : P.series) {
      s << "<polyline fill='none' stroke='" << se.color << "' stroke-width='1.6'"
        << (se.dashed ? " stroke-dasharray='5,4'" : "") << " points='";
      for (size_t i = 0; i < se.x.size(); ++i)
        if (std::isfinite(se.y[i]))
          s << X(se.x[i]) << "," << Y(std::clamp(se.y[i], ymin, ymax)) << " ";
      s << "'/>\n";
      s << "<line x1='" << x1 - 150 << "' y1='" << ly - 4 << "' x2='" << x1 - 130 << "' y2='" << ly - 4
        << "' stroke='" << se.color << "' stroke-width='2'" << (se.dashed ? " stroke-dasharray='5,4'" : "")
        << "/><text x='" << x1 - 125 << "' y='" << ly << "'>" << esc(se.name) << "</text>\n";
      ly += 15;
    }
  }
  s << "</svg>\n";
  write_file(path, s.str());
}

void write_routing_svg(const std::string& path, const std::string& title, const std::vector<RoutingRow>& rows) {
  const double W = 1000, ml = 110, mr = 20, strip = 14;
  size_t layers = rows.empty() ? 0 : rows[0].kv_picked.size();
  const double block = strip * (1 + 2 * layers) + 28;
  const double H = 70 + block * rows.size() + 40;
  std::ostringstream s;
  s << "<svg xmlns='http://www.w3.org/2000/svg' width='" << W << "' height='" << H
    << "' font-family='sans-serif' font-size='11'>\n<rect width='100%' height='100%' fill='white'/>\n";
  s << "<text x='" << W / 2 << "' y='18' text-anchor='middle' font-size='14'>" << esc(title) << "</text>\n";
  s << "<text x='" << W / 2 << "' y='36' text-anchor='middle'>red: informative key/value tokens; blue: answer "
       "positions (queries); black: positions the routers picked</text>\n";
  for (size_t r = 0; r < rows.size(); ++r) {
    const RoutingRow& R = rows[r];
    const double top = 56 + block * r;
    auto X = [&](double p) { return ml + p / std::max<int64_t>(1, R.n) * (W - ml - mr); };
    const double tw = std::max(1.5, (W - ml - mr) / std::max<int64_t>(1, R.n));
    auto strip_at = [&](double y, const std::string& label, const std::vector<int64_t>& pos, const char* color) {
      s << "<text x='" << ml - 6 << "' y='" << y + strip - 3 << "' text-anchor='end'>" << esc(label) << "</text>";
      s << "<rect x='" << ml << "' y='" << y << "' width='" << W - ml - mr << "' height='" << strip - 2
        << "' fill='#f4f4f4'/>";
      for (int64_t p : pos)
        s << "<rect x='" << X(p) << "' y='" << y << "' width='" << tw << "' height='" << strip - 2 << "' fill='"
          << color << "'/>";
      s << "\n";
    };
    s << "<text x='" << ml << "' y='" << top - 3 << "'>eval sequence " << r << " (positions 0.." << R.n - 1
      << ")</text>\n";
    std::vector<int64_t> inf = R.key_pos;
    inf.insert(inf.end(), R.value_pos.begin(), R.value_pos.end());
    strip_at(top, "informative", inf, "#d62728");
    double y = top + strip;
    {
      // answers drawn on the same strip
      for (int64_t p : R.answer_pos)
        s << "<rect x='" << X(p) << "' y='" << top << "' width='" << tw << "' height='" << strip - 2
          << "' fill='#1f77b4'/>";
    }
    for (size_t l = 0; l < layers; ++l) {
      strip_at(y, "layer " + std::to_string(l) + " kv", R.kv_picked[l], "black");
      y += strip;
      strip_at(y, "layer " + std::to_string(l) + " q", R.q_picked[l], "#444");
      y += strip;
    }
    // the axis
    s << "<text x='" << ml << "' y='" << y + 10 << "'>0</text><text x='" << W - mr << "' y='" << y + 10
      << "' text-anchor='end'>" << R.n - 1 << "</text>\n";
  }
  s << "<text x='" << W / 2 << "' y='" << H - 12 << "' text-anchor='middle'>token position; kv = key/values routed "
       "for the last window (what the final queries attend to), q = queries routed in the last window</text>\n";
  s << "</svg>\n";
  write_file(path, s.str());
}

// ---------------------------------------------------------------- the run
namespace {

struct MetricRow {
  int64_t step;
  double lr, loss, grad_norm, tps, eval_loss, eval_acc;
};

std::vector<MetricRow> read_metrics(const std::string& path) {
  std::vector<MetricRow> rows;
  std::ifstream f(path);
  std::string line;
  std::getline(f, line);  // header
  while (std::getline(f, line)) {
    MetricRow r{};
    std::replace(line.begin(), line.end(), ',', ' ');
    std::istringstream ss(line);
    std::string el, ea;
    ss >> r.step >> r.lr >> r.loss >> r.grad_norm >> r.tps >> el >> ea;
    r.eval_loss = el.empty() || el == "nan" ? NAN : std::stod(el);
    r.eval_acc = ea.empty() || ea == "nan" ? NAN : std::stod(ea);
    rows.push_back(r);
  }
  return rows;
}

void write_metrics(const std::string& path, const std::vector<MetricRow>& rows) {
  std::ostringstream s;
  s << "step,lr,loss,grad_norm,tokens_per_s,eval_loss,eval_acc\n";
  char buf[256];
  for (const auto& r : rows) {
    std::snprintf(buf, sizeof buf, "%lld,%.6g,%.6f,%.6f,%.1f,%s,%s\n", static_cast<long long>(r.step), r.lr, r.loss,
                  r.grad_norm, r.tps, std::isnan(r.eval_loss) ? "" : num(r.eval_loss).c_str(),
                  std::isnan(r.eval_acc) ? "" : num(r.eval_acc).c_str());
    s << buf;
  }
  write_file(path, s.str());
}

void write_loss_svg(const std::string& path, const TrainOptions& o, const std::vector<MetricRow>& rows, double chance) {
  Series tl{"train loss", "#1f77b4"}, el{"eval loss", "#d62728"}, ea{"eval accuracy", "#2ca02c"},
      ch{"chance", "#888888"};
  ch.dashed = true;
  for (const auto& r : rows) {
    tl.x.push_back(r.step);
    tl.y.push_back(r.loss);
    if (!std::isnan(r.eval_acc)) {
      el.x.push_back(r.step);
      el.y.push_back(r.eval_loss);
      ea.x.push_back(r.step);
      ea.y.push_back(r.eval_acc);
    }
  }
  if (!rows.empty()) {
    ch.x = {0.0, static_cast<double>(rows.back().step)};
    ch.y = {chance, chance};
  }
  Panel a{"loss", "optimiser step", o.text.empty() ? "cross-entropy on the answers (nats)" : "cross-entropy (nats/char)",
          {tl, el}};
  a.ymin = 0;
  Panel b{"accuracy", "optimiser step", o.text.empty() ? "answer accuracy" : "next-char accuracy", {ea, ch}};
  b.ymin = 0;
  b.ymax = 1;
  write_svg_panels(path, "colt5 train (" + o.label + "): " + (o.text.empty() ? "key-value recall" : o.text), {a, b});
}

void write_routing(const std::string& path, const ColT5LM& model, const RecallTask* recall, const TextTask* text,
                   const TrainOptions& o, Device dev) {
  NoGradGuard ng;
  const int64_t rows_n = 4;
  TaskBatch b = recall ? recall->batch(eval_seed(o.seed), 0, rows_n) : text->batch(eval_seed(o.seed), 0, rows_n, true);
  std::vector<LayerTrace> trace;
  LMCall call;
  Generator rg(eval_seed(o.seed) + 1);
  call.route.random_route = o.random_route;
  call.route.generator = &rg;
  call.trace = &trace;
  model.forward(b.inputs.to(dev), call);
  std::vector<RoutingRow> rows(rows_n);
  for (int64_t r = 0; r < rows_n; ++r) {
    RoutingRow& R = rows[r];
    R.n = b.inputs.size(1);
    R.key_pos = b.key_pos[r];
    R.value_pos = b.value_pos[r];
    R.answer_pos = b.answer_pos[r];
    for (const LayerTrace& t : trace) {
      std::vector<int64_t> kv, q;
      if (t.kv_indices.defined()) {
        Tensor last = t.kv_indices.select(0, r).select(0, t.kv_indices.size(1) - 1);
        kv = last.to(Device::cpu()).to_vector<int64_t>();
      }
      if (t.q_indices.defined()) {
        Tensor last = t.q_indices.select(0, r).select(0, t.q_indices.size(1) - 1);
        q = last.to(Device::cpu()).to_vector<int64_t>();
      }
      R.kv_picked.push_back(kv);
      R.q_picked.push_back(q);
    }
  }
  write_routing_svg(path, "routing (" + o.label + "): where the routers looked, 4 eval sequences", rows);
}

}  // namespace

TrainResult train_run(const TrainOptions& o) {
  using clock = std::chrono::steady_clock;
  const Device dev = Device::parse(o.device);
  fs::create_directories(o.out);
  const std::string ck = (fs::path(o.out) / "checkpoint.safetensors").string();
  const std::string metrics_path = (fs::path(o.out) / "metrics.csv").string();

  std::unique_ptr<RecallTask> recall;
  std::unique_ptr<TextTask> text;
  TrainOptions opt = o;
  if (opt.text.empty()) {
    recall = std::make_unique<RecallTask>(opt.task);
    opt.model.vocab_size = recall->vocab_size();
  } else {
    text = std::make_unique<TextTask>(opt.text, opt.task.seq_len);
    opt.model.vocab_size = text->vocab_size();
  }
  const double chance = recall ? 1.0 / opt.task.num_values : 1.0 / opt.model.vocab_size;

  Generator init(opt.seed);
  ColT5LM model(opt.model, init);
  model.to(dev);
  model.train();
  NamedTensors params = model.named_parameters();
  AdamW adam(params, {.lr = opt.lr, .weight_decay = opt.weight_decay});
  Generator route_gen(opt.seed * 7919ULL + 17ULL);
  int64_t step = 0;
  std::vector<MetricRow> rows;

  if (opt.resume && fs::exists(ck)) {
    std::map<std::string, std::string> meta;
    auto all = load_safetensors(ck, &meta);
    COLT5_CHECK(meta.count("format") && meta.at("format") == kFormat, "--resume: ", ck, " has format ",
                meta.count("format") ? meta.at("format") : std::string("(none)"), ", expected ", kFormat,
                " (written by another version of colt5 train)");
    std::map<std::string, Tensor> sd;
    NamedTensors st;
    for (auto& [k, v] : all) {
      if (k.rfind("model.", 0) == 0) sd[k.substr(6)] = v;
      if (k.rfind("optim.", 0) == 0) st.push_back({k.substr(6), v.to(dev)});
    }
    model.load_state_dict(sd);
    params = model.named_parameters();
    adam = AdamW(params, {.lr = opt.lr, .weight_decay = opt.weight_decay});
    adam.load_state(st);
    step = std::stoll(meta.at("step"));
    route_gen.set_state(std::stoull(meta.at("route_gen_state")));
    for (const auto& r : read_metrics(metrics_path))
      if (r.step <= step) rows.push_back(r);
  } else if (opt.resume) {
    std::printf("resume: no checkpoint in %s, starting from step 0\n", opt.out.c_str());
  }
  write_file((fs::path(opt.out) / "config.json").string(), options_to_json(opt).dump(2) + "\n");

  auto save_checkpoint = [&]() {
    std::map<std::string, Tensor> all;
    for (auto& [k, v] : model.state_dict()) all["model." + k] = v;
    for (auto& [k, v] : adam.state()) all["optim." + k] = v;
    save_safetensors(ck, all,
                     {{"step", std::to_string(step)},
                      {"route_gen_state", std::to_string(route_gen.state())},
                      {"format", kFormat}});
  };

  TrainResult res;
  res.chance = chance;
  Progress bar(opt.label, opt.steps, opt.progress);
  const int64_t tokens_per_step = opt.batch * opt.grad_accum * opt.task.seq_len;
  const auto t_start = clock::now();
  double train_seconds = 0;
  int64_t steps_here = 0;
  const int64_t last = opt.stop_after >= 0 ? std::min(opt.steps, opt.stop_after) : opt.steps;
  EvalResult last_eval;
  int64_t last_eval_step = -1;
  while (step < last) {
    const auto t0 = clock::now();
    const double lr = warmup_cosine_lr(step, opt.warmup, opt.steps, opt.lr, opt.lr * opt.min_lr_ratio);
    adam.set_lr(lr);
    adam.zero_grad();
    double loss_sum = 0;
    for (int64_t a = 0; a < opt.grad_accum; ++a) {
      const uint64_t first = static_cast<uint64_t>((step * opt.grad_accum + a) * opt.batch);
      TaskBatch b = recall ? recall->batch(opt.seed, first, opt.batch) : text->batch(opt.seed, first, opt.batch, false);
      LMCall call;
      call.route.random_route = opt.random_route;
      call.route.generator = &route_gen;
      Tensor logits = model.forward(b.inputs.to(dev), call);
      Tensor loss = cross_entropy(logits, b.targets.to(dev), kIgnoreIndex);
      if (opt.grad_accum > 1) loss = loss * (1.0 / opt.grad_accum);
      loss.backward();
      loss_sum += loss.item<double>();
    }
    const double gn = clip_grad_norm(params, opt.clip);
    adam.step();
    ++step;
    ++steps_here;
    const double dt = std::chrono::duration<double>(clock::now() - t0).count();
    train_seconds += dt;
    const double tps = tokens_per_step * steps_here / train_seconds;
    res.losses.push_back(loss_sum);
    MetricRow row{step, lr, loss_sum, gn, tokens_per_step / dt, NAN, NAN};
    bar.update(step, loss_sum, tps, train_seconds * (step) / steps_here);
    if ((opt.eval_every > 0 && step % opt.eval_every == 0) || step == opt.steps) {
      EvalResult e = evaluate(model, recall.get(), text.get(), opt.eval_batches, opt.batch, opt.seed,
                              opt.random_route, dev);
      last_eval = e, last_eval_step = step;
      row.eval_loss = e.loss;
      row.eval_acc = e.acc;
      char buf[160];
      std::snprintf(buf, sizeof buf, "%s step %lld: eval loss %.4f, accuracy %.3f (chance %.3f)", opt.label.c_str(),
                    static_cast<long long>(step), e.loss, e.acc, chance);
      bar.note(buf);
    }
    rows.push_back(row);
  }
  bar.finish();
  save_checkpoint();
  write_metrics(metrics_path, rows);
  // the eval is deterministic (fixed eval stream and routing-noise seed): reuse the one of this step
  const EvalResult e = last_eval_step == step ? last_eval
                                              : evaluate(model, recall.get(), text.get(), opt.eval_batches, opt.batch,
                                                         opt.seed, opt.random_route, dev);
  res.eval_loss = e.loss;
  res.eval_acc = e.acc;
  res.step = step;
  for (const auto& r : rows)
    if (!std::isnan(r.eval_acc)) {
      res.eval_steps.push_back(static_cast<double>(r.step));
      res.eval_accs.push_back(r.eval_acc);
      res.eval_losses.push_back(r.eval_loss);
    }
  res.seconds = std::chrono::duration<double>(clock::now() - t_start).count();
  res.tokens_per_s = train_seconds > 0 ? tokens_per_step * steps_here / train_seconds : 0;
  if (recall && !opt.model.light_only) {
    RoutingStats st = routing_stats(model, *recall, opt.eval_batches, opt.batch, opt.seed, opt.random_route, dev);
    res.value_routed = st.value_routed;
    res.answer_routed = st.answer_routed;
  }
  if (opt.plots) {
    write_loss_svg((fs::path(opt.out) / "loss.svg").string(), opt, rows, chance);
    if (!opt.model.light_only)
      write_routing((fs::path(opt.out) / "routing.svg").string(), model, recall.get(), text.get(), opt, dev);
  }
  return res;
}

}  // namespace colt5::tools
