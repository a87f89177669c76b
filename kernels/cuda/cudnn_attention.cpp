// cuDNN fused attention (see cudnn_attention.h): graph construction, the plan
// cache, and execution.
#include "kernels/cuda/cudnn_attention.h"

#include <cuda_runtime.h>
#include <cudnn.h>

#include <cmath>
#include <cstring>
#include <cudnn_frontend.h>
#include <map>
#include <memory>
#include <mutex>
#include <unordered_map>
#include <vector>

#include "engine/error.h"

namespace colt5::kernels::cuda {
namespace {

namespace fe = cudnn_frontend;

// Tensor uids in the graphs (the variant pack maps them to pointers).
enum Uid : int64_t { kQ = 1, kK, kV, kO, kStats, kDO, kDQ, kDK, kDV, kSeqQ, kSeqKV };

struct Plan {
  std::shared_ptr<fe::graph::Graph> graph;  // null: unsupported
  std::string why;
  size_t workspace = 0;
};

struct State {
  std::mutex mu;
  std::map<int, cudnnHandle_t> handles;  // per device
  std::map<std::vector<int64_t>, Plan> plans;
};
State& state() {
  static State* s = new State;  // never destroyed: handles outlive static destructors' order issues
  return *s;
}

// Bounded cache: a process that keeps changing shapes rebuilds instead of growing.
constexpr size_t kMaxPlans = 512;

bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15) == 0; }

std::string strides_problem(const AttnStrides& s, const void* ptr, const char* name) {
  if (s.b < 0 || s.h < 0 || s.n < 0) return std::string(name) + " has negative strides";
  if (s.b % 8 || s.h % 8 || s.n % 8)
    return std::string(name) + " strides (" + std::to_string(s.b) + ", " + std::to_string(s.h) + ", " +
           std::to_string(s.n) + ") are not multiples of 8 elements";
  if (!aligned16(ptr)) return std::string(name) + " is not 16-byte aligned";
  return "";
}

cudnnHandle_t handle_for(int device) {  // caller holds the mutex; device is current
  State& st = state();
  auto it = st.handles.find(device);
  if (it != st.handles.end()) return it->second;
  cudnnHandle_t h = nullptr;
  const cudnnStatus_t status = cudnnCreate(&h);
  COLT5_CHECK(status == CUDNN_STATUS_SUCCESS, "cudnn attention: cudnnCreate on cuda:", device, " failed: ",
              cudnnGetErrorString(status));
  st.handles[device] = h;
  return h;
}

std::vector<int64_t> key_of(const FlashAttentionParams& p, bool backward, bool lengths, int device) {
  float scale = float(p.scale);
  int32_t scale_bits;
  std::memcpy(&scale_bits, &scale, 4);
  std::vector<int64_t> k{device, int64_t(p.dtype), p.B, p.H, p.Nq, p.Nk, p.d, scale_bits, p.causal, lengths, backward};
  auto add = [&](const AttnStrides& s) { k.insert(k.end(), {s.b, s.h, s.n}); };
  add(p.q_stride), add(p.k_stride), add(p.v_stride), add(p.out_stride);
  if (backward) add(p.dout_stride), add(p.dq_stride), add(p.dk_stride), add(p.dv_stride);
  return k;
}

Plan build(const FlashAttentionParams& p, bool backward, bool lengths, cudnnHandle_t handle) {
  Plan plan;
  auto g = std::make_shared<fe::graph::Graph>();
  g->set_io_data_type(p.dtype == DType::bf16 ? fe::DataType_t::BFLOAT16 : fe::DataType_t::HALF)
      .set_intermediate_data_type(fe::DataType_t::FLOAT)
      .set_compute_data_type(fe::DataType_t::FLOAT);
  auto operand = [&](const char* name, Uid uid, int64_t n, const AttnStrides& s) {
    return g->tensor(fe::graph::Tensor_attributes()
                         .set_name(name)
                         .set_uid(uid)
                         .set_dim({p.B, p.H, n, p.d})
                         .set_stride({s.b, s.h, s.n, 1}));
  };
  auto Q = operand("Q", kQ, p.Nq, p.q_stride);
  auto K = operand("K", kK, p.Nk, p.k_stride);
  auto V = operand("V", kV, p.Nk, p.v_stride);
  std::shared_ptr<fe::graph::Tensor_attributes> seq_q, seq_kv;
  if (lengths) {
    auto len = [&](const char* name, Uid uid) {
      return g->tensor(fe::graph::Tensor_attributes()
                           .set_name(name)
                           .set_uid(uid)
                           .set_dim({p.B, 1, 1, 1})
                           .set_stride({1, 1, 1, 1})
                           .set_data_type(fe::DataType_t::INT32));
    };
    seq_q = len("seq_len_q", kSeqQ);
    seq_kv = len("seq_len_kv", kSeqKV);
  }
  const std::vector<int64_t> stats_dim{p.B, p.H, p.Nq, 1}, stats_stride{p.H * p.Nq, p.Nq, 1, 1};
  if (!backward) {
    auto o = fe::graph::SDPA_attributes().set_name("sdpa").set_generate_stats(true).set_attn_scale(float(p.scale));
    if (p.causal) o.set_diagonal_alignment(fe::DiagonalAlignment_t::BOTTOM_RIGHT).set_diagonal_band_right_bound(0);
    if (lengths) o.set_padding_mask(true).set_seq_len_q(seq_q).set_seq_len_kv(seq_kv);
    auto [O, Stats] = g->sdpa(Q, K, V, o);
    O->set_output(true).set_uid(kO).set_dim({p.B, p.H, p.Nq, p.d}).set_stride(
        {p.out_stride.b, p.out_stride.h, p.out_stride.n, 1});
    Stats->set_output(true).set_uid(kStats).set_data_type(fe::DataType_t::FLOAT).set_dim(stats_dim).set_stride(
        stats_stride);
  } else {
    auto O = operand("O", kO, p.Nq, p.out_stride);
    auto dO = operand("dO", kDO, p.Nq, p.dout_stride);
    auto Stats = g->tensor(fe::graph::Tensor_attributes()
                               .set_name("Stats")
                               .set_uid(kStats)
                               .set_dim(stats_dim)
                               .set_stride(stats_stride)
                               .set_data_type(fe::DataType_t::FLOAT));
    auto o = fe::graph::SDPA_backward_attributes().set_name("sdpa_backward").set_attn_scale(float(p.scale));
    if (p.causal) o.set_diagonal_alignment(fe::DiagonalAlignment_t::BOTTOM_RIGHT).set_diagonal_band_right_bound(0);
    if (lengths) o.set_padding_mask(true).set_seq_len_q(seq_q).set_seq_len_kv(seq_kv);
    auto [dQ, dK, dV] = g->sdpa_backward(Q, K, V, O, dO, Stats, o);
    dQ->set_output(true).set_uid(kDQ).set_dim({p.B, p.H, p.Nq, p.d}).set_stride(
        {p.dq_stride.b, p.dq_stride.h, p.dq_stride.n, 1});
    dK->set_output(true).set_uid(kDK).set_dim({p.B, p.H, p.Nk, p.d}).set_stride(
        {p.dk_stride.b, p.dk_stride.h, p.dk_stride.n, 1});
    dV->set_output(true).set_uid(kDV).set_dim({p.B, p.H, p.Nk, p.d}).set_stride(
        {p.dv_stride.b, p.dv_stride.h, p.dv_stride.n, 1});
  }
  try {
    auto e = g->build(handle, {fe::HeurMode_t::A});
    if (e.is_bad()) {
      plan.why = "cuDNN declined the graph: " + e.get_message();
      return plan;
    }
    int64_t ws = 0;
    e = g->get_workspace_size(ws);
    if (e.is_bad()) {
      plan.why = "cuDNN workspace query failed: " + e.get_message();
      return plan;
    }
    plan.workspace = size_t(ws);
  } catch (const std::exception& ex) {  // the frontend throws on some backend errors
    plan.why = std::string("cuDNN plan build threw: ") + ex.what();
    return plan;
  }
  plan.graph = std::move(g);
  return plan;
}

// The cached plan for p (built on first use). The static check runs on every
// call (it looks at pointers, which the key leaves out); only what cuDNN
// itself answers is cached. Caller holds the mutex.
Plan plan_for(const FlashAttentionParams& p, bool backward, bool lengths, int device) {
  if (std::string bad = cudnn_attention_check(p, backward); !bad.empty()) return Plan{nullptr, bad, 0};
  State& st = state();
  std::vector<int64_t> key = key_of(p, backward, lengths, device);
  auto it = st.plans.find(key);
  if (it != st.plans.end()) return it->second;
  if (st.plans.size() >= kMaxPlans) st.plans.clear();
  Plan plan = build(p, backward, lengths, handle_for(device));
  st.plans.emplace(std::move(key), plan);
  return plan;
}

bool plan_query(const FlashAttentionParams& p, bool backward, bool lengths, int device, size_t* ws,
                std::string* why) {
  std::lock_guard<std::mutex> lock(state().mu);
  const Plan plan = plan_for(p, backward, lengths, device);
  if (ws) *ws = plan.workspace;
  if (why) *why = plan.why;
  return plan.graph != nullptr;
}

void execute(const FlashAttentionParams& p, bool backward, const CudnnSeqLens* lens, void* workspace,
             size_t workspace_bytes, int device, cudaStream_t stream) {
  const char* op = backward ? "cudnn_attention_backward" : "cudnn_attention_forward";
  std::lock_guard<std::mutex> lock(state().mu);
  COLT5_CHECK(p.q && p.k && p.v && p.out && p.lse && (!backward || (p.dout && p.dq && p.dk && p.dv)), op,
              ": every operand pointer must be non-null");
  const Plan plan = plan_for(p, backward, lens != nullptr, device);
  COLT5_CHECK(plan.graph != nullptr, op, ": unsupported configuration B=", p.B, " H=", p.H, " Nq=", p.Nq,
              " Nk=", p.Nk, " d=", p.d, ": ", plan.why);
  COLT5_CHECK(workspace_bytes >= plan.workspace, op, ": workspace of ", workspace_bytes, " bytes, the plan needs ",
              plan.workspace);
  std::unordered_map<int64_t, void*> pack{{kQ, const_cast<void*>(p.q)},
                                          {kK, const_cast<void*>(p.k)},
                                          {kV, const_cast<void*>(p.v)},
                                          {kO, p.out},
                                          {kStats, p.lse}};
  if (backward) {
    pack[kDO] = const_cast<void*>(p.dout);
    pack[kDQ] = p.dq;
    pack[kDK] = p.dk;
    pack[kDV] = p.dv;
  }
  if (lens) {
    pack[kSeqQ] = const_cast<int32_t*>(lens->q_len);
    pack[kSeqKV] = const_cast<int32_t*>(lens->kv_len);
  }
  cudnnHandle_t h = handle_for(device);
  const cudnnStatus_t s = cudnnSetStream(h, stream);
  COLT5_CHECK(s == CUDNN_STATUS_SUCCESS, op, ": cudnnSetStream failed: ", cudnnGetErrorString(s));
  auto e = plan.graph->execute(h, pack, workspace);
  COLT5_CHECK(e.is_good(), op, ": cuDNN execution failed: ", e.get_message());
}

}  // namespace

std::string cudnn_attention_check(const FlashAttentionParams& p, bool backward) {
  if (p.dtype != DType::bf16 && p.dtype != DType::f16)
    return std::string("dtype ") + dtype_name(p.dtype) + " (cuDNN SDPA takes bf16 and f16)";
  if (p.mask) return "a boolean key mask (only per-batch key lengths are expressible)";
  if (p.has_null()) return "a null key/value";
  if (p.B < 1 || p.H < 1 || p.Nq < 1 || p.Nk < 1) return "an empty dimension";
  if (p.d % 8 != 0 || p.d > 256) return "head dim " + std::to_string(p.d) + " (needs a multiple of 8, <= 256)";
  if (p.causal && p.Nq > p.Nk) return "causal with Nq > Nk (rows without a visible key)";
  if (!std::isfinite(p.scale)) return "a non-finite scale";
  struct Operand {
    AttnStrides s;
    const void* ptr;
    const char* name;
  };
  std::vector<Operand> ops{{p.q_stride, p.q, "q"}, {p.k_stride, p.k, "k"}, {p.v_stride, p.v, "v"},
                           {p.out_stride, p.out, "out"}};
  if (backward)
    ops.insert(ops.end(), {{p.dout_stride, p.dout, "dout"},
                           {p.dq_stride, p.dq, "dq"},
                           {p.dk_stride, p.dk, "dk"},
                           {p.dv_stride, p.dv, "dv"}});
  for (const Operand& o : ops)
    if (std::string bad = strides_problem(o.s, o.ptr, o.name); !bad.empty()) return bad;
  if (!aligned16(p.lse)) return "lse is not 16-byte aligned";
  return "";
}

bool cudnn_attention_forward_plan(const FlashAttentionParams& p, bool with_lengths, int device,
                                  size_t* workspace_bytes, std::string* why) {
  return plan_query(p, false, with_lengths, device, workspace_bytes, why);
}

bool cudnn_attention_backward_plan(const FlashAttentionParams& p, bool with_lengths, int device,
                                   size_t* workspace_bytes, std::string* why) {
  return plan_query(p, true, with_lengths, device, workspace_bytes, why);
}

void cudnn_attention_forward(const FlashAttentionParams& p, const CudnnSeqLens* lens, void* workspace,
                             size_t workspace_bytes, int device, cudaStream_t stream) {
  execute(p, false, lens, workspace, workspace_bytes, device, stream);
}

void cudnn_attention_backward(const FlashAttentionParams& p, const CudnnSeqLens* lens, void* workspace,
                              size_t workspace_bytes, int device, cudaStream_t stream) {
  execute(p, true, lens, workspace, workspace_bytes, device, stream);
}

size_t cudnn_attention_cached_plans() {
  std::lock_guard<std::mutex> lock(state().mu);
  return state().plans.size();
}

int64_t cudnn_runtime_version() { return int64_t(cudnnGetVersion()); }

}  // namespace colt5::kernels::cuda
