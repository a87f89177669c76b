#include "engine/autograd.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <random>
#include <unordered_map>

#include "engine/generator.h"
// The tape owns un-broadcasting and accumulation, which are a sum and an add.
#include "ops/elementwise.h"
#include "ops/reduce.h"

namespace colt5 {

namespace {
thread_local bool g_grad_enabled = true;
std::atomic<uint64_t> g_seq{0};
}  // namespace

bool grad_enabled() { return g_grad_enabled; }
void set_grad_enabled(bool on) { g_grad_enabled = on; }

bool needs_grad(std::initializer_list<const Tensor*> inputs) {
  if (!g_grad_enabled) return false;
  for (const Tensor* t : inputs)
    if (t && t->defined() && t->requires_grad()) return true;
  return false;
}

bool needs_grad(const std::vector<Tensor>& inputs) {
  if (!g_grad_enabled) return false;
  for (const Tensor& t : inputs)
    if (t.defined() && t.requires_grad()) return true;
  return false;
}

void bump_version(const Tensor& t) { ++t.storage()->version; }

void record(Tensor& out, const char* name, const std::vector<Tensor>& inputs,
            std::function<std::vector<Tensor>(const Tensor&)> backward, const std::vector<Tensor>& saved) {
  auto node = std::make_shared<Node>();
  node->name = name;
  node->seq = g_seq.fetch_add(1);
  node->inputs.reserve(inputs.size());
  for (const Tensor& t : inputs) {
    Edge e;
    if (t.defined() && t.requires_grad()) {
      if (t.grad_fn()) e.node = t.grad_fn();
      else e.leaf = t.impl_ptr();
      e.shape = t.shape();
      e.dtype = t.dtype();
    }
    node->inputs.push_back(std::move(e));
  }
  node->backward = std::move(backward);
  for (const Tensor& t : saved)
    if (t.defined()) node->saved.push_back({t.storage(), t.storage()->version});
  out.impl()->grad_fn = node;
  out.impl()->requires_grad = true;
}

Tensor sum_to(const Tensor& g, const Shape& shape) {
  if (g.shape() == shape) return g;
  int n = g.dim(), m = static_cast<int>(shape.size());
  COLT5_CHECK(n >= m, "autograd: gradient of shape ", shape_str(g.shape()), " cannot be reduced to ", shape_str(shape));
  std::vector<int> dims;
  for (int i = 0; i < n; ++i) {
    int j = i - (n - m);
    if (j < 0 || (shape[j] == 1 && g.shape()[i] != 1)) dims.push_back(i);
  }
  Tensor r = dims.empty() ? g : sum(g, dims, true);
  return r.reshape(shape);
}

void run_backward(const Tensor& root, const Tensor& grad, bool retain_graph) {
  NoGradGuard ng;
  if (!root.grad_fn()) {  // a leaf: its gradient is the given one
    Tensor old = root.grad();
    root.set_grad(old.defined() ? add(old, grad) : grad.clone());
    return;
  }
  // Collect the nodes reachable from root; tape order (seq) is topological.
  // Shared ownership: releasing a node's edges must not destroy nodes still to visit.
  std::vector<std::shared_ptr<Node>> nodes;
  std::unordered_map<Node*, Tensor> grads;
  {
    std::vector<std::shared_ptr<Node>> stack{root.grad_fn()};
    std::unordered_map<Node*, bool> seen;
    seen[stack[0].get()] = true;
    while (!stack.empty()) {
      std::shared_ptr<Node> n = stack.back();
      stack.pop_back();
      nodes.push_back(n);
      for (const Edge& e : n->inputs)
        if (e.node && !seen[e.node.get()]) {
          seen[e.node.get()] = true;
          stack.push_back(e.node);
        }
    }
  }
  std::sort(nodes.begin(), nodes.end(), [](const auto& a, const auto& b) { return a->seq > b->seq; });
  grads[root.grad_fn().get()] = grad;
  for (const std::shared_ptr<Node>& n : nodes) {
    auto it = grads.find(n.get());
    if (it == grads.end()) continue;
    Tensor g = it->second;
    grads.erase(it);
    COLT5_CHECK(n->backward, "backward: the graph through '", n->name,
                "' was already freed by an earlier backward (pass retain_graph = true to backward twice)");
    for (const SavedVersion& sv : n->saved)
      COLT5_CHECK(sv.storage->version == sv.version, "backward: a tensor saved by '", n->name,
                  "' for the backward was modified in place afterwards");
    std::vector<Tensor> gin = n->backward(g);
    COLT5_CHECK(gin.size() == n->inputs.size(), "backward: '", n->name, "' returned ", gin.size(),
                " gradients for ", n->inputs.size(), " inputs");
    for (size_t i = 0; i < gin.size(); ++i) {
      const Edge& e = n->inputs[i];
      if (!e.active() || !gin[i].defined()) continue;
      Tensor gi = sum_to(gin[i], e.shape);
      if (gi.dtype() != e.dtype) gi = gi.to(e.dtype);
      if (e.node) {
        auto jt = grads.find(e.node.get());
        if (jt == grads.end()) grads.emplace(e.node.get(), gi);
        else jt->second = add(jt->second, gi);
      } else {
        Tensor leaf(e.leaf);
        Tensor old = leaf.grad();
        leaf.set_grad(old.defined() ? add(old, gi) : gi.contiguous().clone());
      }
    }
    if (!retain_graph) n->release();
  }
}

// ------------------------------------------------------------ gradcheck

GradcheckResult gradcheck(const std::function<Tensor(const std::vector<Tensor>&)>& fn,
                          const std::vector<Tensor>& inputs, GradcheckOptions opt) {
  GradcheckResult res;
  std::vector<Tensor> xs;
  for (const Tensor& t : inputs) {
    COLT5_CHECK(t.device().is_cpu(), "gradcheck: inputs must be CPU tensors");
    if (t.requires_grad()) {
      COLT5_CHECK(t.dtype() == DType::f64, "gradcheck: inputs that require grad must be f64, got ",
                  dtype_name(t.dtype()));
      xs.push_back(t.detach().clone().requires_grad_());
    } else {
      xs.push_back(t);
    }
  }
  Tensor out = fn(xs);
  COLT5_CHECK(out.dtype() == DType::f64, "gradcheck: the function must return f64, got ", dtype_name(out.dtype()));
  // A random projection of the output: checks the whole vector-Jacobian product.
  Generator gen(1234);
  Tensor w = randn(out.shape(), gen, {.dtype = DType::f64});
  std::vector<double> wv = w.to_vector<double>();
  auto project = [&](const Tensor& y) {
    std::vector<double> yv = y.to_vector<double>();
    double s = 0;
    for (size_t i = 0; i < yv.size(); ++i) s += yv[i] * wv[i];
    return s;
  };
  if (!out.requires_grad()) {
    res.ok = false;
    res.message = "gradcheck: the output does not require grad";
    return res;
  }
  out.backward(w);
  for (size_t k = 0; k < xs.size(); ++k) {
    if (!inputs[k].requires_grad()) continue;
    Tensor x = xs[k];
    Tensor ga = x.grad();
    std::vector<double> analytic = ga.defined() ? ga.to_vector<double>() : std::vector<double>(x.numel(), 0.0);
    // Perturb a contiguous copy element by element, through a strided view of x's shape.
    Tensor base = x.detach().contiguous().clone();
    double* p = base.data<double>();
    for (int64_t i = 0; i < x.numel(); ++i) {
      double orig = p[i];
      auto eval = [&](double v) {
        p[i] = v;
        std::vector<Tensor> args = xs;
        args[k] = base.detach();
        NoGradGuard ng;
        double r = project(fn(args));
        p[i] = orig;
        return r;
      };
      double num = (eval(orig + opt.eps) - eval(orig - opt.eps)) / (2 * opt.eps);
      double err = std::abs(num - analytic[i]);
      res.max_abs_err = std::max(res.max_abs_err, err);
      if (err > opt.atol + opt.rtol * std::abs(num) && res.ok) {
        res.ok = false;
        std::ostringstream os;
        os << "gradcheck: input " << k << " element " << i << ": analytic " << analytic[i] << ", numeric " << num
           << " (abs err " << err << ")";
        res.message = os.str();
      }
    }
  }
  return res;
}

}  // namespace colt5
