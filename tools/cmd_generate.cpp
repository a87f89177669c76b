// colt5 generate: sample from a checkpoint folder (written by colt5 train).
// Text runs: the prompt is text; recall runs: the prompt is token ids
// separated by spaces (default: a fresh task sequence up to its first query
// marker, whose next token is the value to recall).
#include <cstdio>
#include <sstream>

#include "colt5.h"
#include "tools/commands.h"
#include "tools/train_util.h"

namespace colt5::tools {
namespace {

struct GenArgs {
  std::string dir = "runs/train", device = "cpu", prompt;
  int64_t tokens = 64, top_k = 0;
  double temperature = 1.0;
  uint64_t seed = 0;
};

int run_generate(const GenArgs& a) {
  LoadedRun r = load_run(a.dir, a.device);
  const Device dev = Device::parse(a.device);
  std::vector<int64_t> toks;
  std::vector<int64_t> recall_truth;
  if (r.text) {
    for (unsigned char c : a.prompt) {
      const int64_t t = r.text->encode(c);
      COLT5_CHECK(t >= 0, "generate: prompt character '", (char)c, "' is not in the training text");
      toks.push_back(t);
    }
    if (toks.empty()) toks.push_back(0);
  } else if (!a.prompt.empty()) {
    std::istringstream ss(a.prompt);
    int64_t t;
    while (ss >> t) toks.push_back(t);
  } else {
    std::vector<int64_t> ans;
    std::vector<int64_t> s = r.recall->sequence(a.seed + 999, 0, nullptr, nullptr, &ans);
    toks.assign(s.begin(), s.begin() + ans.front() + 1);  // up to and including the first query marker
    recall_truth = s;
  }
  NoGradGuard ng;
  Generator g(a.seed);
  const int64_t max_len = r.opt.task.seq_len;
  std::vector<int64_t> out;
  for (int64_t i = 0; i < a.tokens; ++i) {
    std::vector<int64_t> ctx(toks.size() > (size_t)max_len ? toks.end() - max_len : toks.begin(), toks.end());
    Tensor logits = r.model->forward(from_vector_i64(ctx, {1, (int64_t)ctx.size()}).to(dev));
    std::vector<double> l = logits.select(1, logits.size(1) - 1).to(Device::cpu()).to(DType::f64).to_vector<double>();
    int64_t next = 0;
    if (a.temperature <= 0) {
      next = std::max_element(l.begin(), l.end()) - l.begin();
    } else {
      std::vector<double> sorted = l;
      double cut = -INFINITY;
      if (a.top_k > 0 && a.top_k < (int64_t)l.size()) {
        std::nth_element(sorted.begin(), sorted.begin() + (a.top_k - 1), sorted.end(), std::greater<double>());
        cut = sorted[a.top_k - 1];
      }
      double mx = *std::max_element(l.begin(), l.end()), z = 0;
      std::vector<double> p(l.size());
      for (size_t k = 0; k < l.size(); ++k) z += p[k] = l[k] >= cut ? std::exp((l[k] - mx) / a.temperature) : 0.0;
      double u = g.uniform() * z;
      for (size_t k = 0; k < p.size(); ++k) {
        u -= p[k];
        if (u <= 0) {
          next = (int64_t)k;
          break;
        }
        next = (int64_t)k;
      }
    }
    toks.push_back(next);
    out.push_back(next);
  }
  if (r.text) {
    std::string s = a.prompt;
    for (int64_t t : out) s.push_back(r.text->chars()[t]);
    std::printf("%s\n", s.c_str());
  } else {
    const size_t n_prompt = toks.size() - out.size();
    if (!recall_truth.empty())
      std::printf("prompt: %zu tokens of a fresh task sequence (ends with key %lld and the query marker %lld)\n",
                  n_prompt, (long long)toks[n_prompt - 2], (long long)toks[n_prompt - 1]);
    else
      std::printf("prompt: %zu tokens\n", n_prompt);
    std::printf("generated:");
    for (int64_t t : out) std::printf(" %lld", (long long)t);
    std::printf("\n");
    if (!recall_truth.empty())
      std::printf("expected first answer: %lld\n", (long long)recall_truth[toks.size() - out.size()]);
  }
  return 0;
}

}  // namespace

void add_generate_command(CLI::App& app) {
  auto a = std::make_shared<GenArgs>();
  CLI::App* s = app.add_subcommand("generate", "Sample from a checkpoint (a colt5 train output folder)");
  s->add_option("dir", a->dir, "output folder of colt5 train")->capture_default_str();
  s->add_option("--prompt", a->prompt, "text (text runs) or token ids (recall runs)");
  s->add_option("--tokens", a->tokens, "tokens to generate")->capture_default_str();
  s->add_option("--temperature", a->temperature, "sampling temperature (0: greedy)")->capture_default_str();
  s->add_option("--top-k", a->top_k, "sample from the k most likely tokens (0: all)")->capture_default_str();
  s->add_option("--seed", a->seed, "sampling seed")->capture_default_str();
  s->add_option("--device", a->device, "cpu or cuda[:i]")->capture_default_str();
  command_table().push_back({s, [a]() { return run_generate(*a); }});
}

}  // namespace colt5::tools
