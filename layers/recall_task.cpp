#include "layers/recall_task.h"

#include <algorithm>
#include <fstream>
#include <sstream>

#include "engine/error.h"
#include "engine/generator.h"

namespace colt5 {

RecallTask::RecallTask(const RecallTaskConfig& config) : c_(config) {
  const auto& c = c_;
  COLT5_CHECK(c.num_pairs >= 1 && c.num_keys >= c.num_pairs && c.num_values >= 2 && c.num_filler >= 1,
              "RecallTask: need num_pairs >= 1, num_keys >= num_pairs, num_values >= 2, num_filler >= 1; got ",
              c.num_pairs, " pairs, ", c.num_keys, " keys, ", c.num_values, " values, ", c.num_filler, " filler");
  COLT5_CHECK(c.min_distance >= 0, "RecallTask: min_distance must be >= 0, got ", c.min_distance);
  const int64_t region = c.seq_len + 1 - 3 * c.num_pairs - c.min_distance;
  COLT5_CHECK(region >= 4 * c.num_pairs, "RecallTask: seq_len ", c.seq_len, " is too short for ", c.num_pairs,
              " pairs at least ", c.min_distance, " tokens before the answers (need seq_len >= ",
              7 * c.num_pairs + c.min_distance - 1, ")");
}

std::vector<int64_t> RecallTask::sequence(uint64_t seed, uint64_t index, std::vector<int64_t>* key_pos,
                                          std::vector<int64_t>* value_pos, std::vector<int64_t>* answer_pos) const {
  const auto& c = c_;
  Generator g(Generator::hash(seed ^ 0x5eed5eedULL, index));
  auto below = [&](int64_t n) { return static_cast<int64_t>(g.next_u64() % static_cast<uint64_t>(n)); };
  const int64_t L = c.seq_len + 1, P = c.num_pairs, tail = 3 * P;
  std::vector<int64_t> s(L);
  for (auto& t : s) t = below(c.num_filler);
  // distinct keys (partial Fisher-Yates), any values
  std::vector<int64_t> keys(c.num_keys);
  for (int64_t i = 0; i < c.num_keys; ++i) keys[i] = i;
  for (int64_t i = 0; i < P; ++i) std::swap(keys[i], keys[i + below(c.num_keys - i)]);
  std::vector<int64_t> vals(P);
  for (auto& v : vals) v = below(c.num_values);
  // pair j somewhere in segment j of the region (non-overlapping, spread out);
  // the last value position is region - 1: min_distance + 1 before the first answer
  const int64_t region = L - tail - c.min_distance, seg = region / P;
  if (key_pos) key_pos->clear();
  if (value_pos) value_pos->clear();
  if (answer_pos) answer_pos->clear();
  for (int64_t j = 0; j < P; ++j) {
    const int64_t p = j * seg + below(seg - 1);
    s[p] = c.num_filler + keys[j];
    s[p + 1] = c.num_filler + c.num_keys + vals[j];
    if (key_pos) key_pos->push_back(p);
    if (value_pos) value_pos->push_back(p + 1);
  }
  // the queries, shuffled: key, query marker, value
  std::vector<int64_t> order(P);
  for (int64_t i = 0; i < P; ++i) order[i] = i;
  for (int64_t i = P - 1; i > 0; --i) std::swap(order[i], order[below(i + 1)]);
  int64_t q = L - tail;
  for (int64_t j : order) {
    s[q] = c.num_filler + keys[j];
    s[q + 1] = query_token();
    s[q + 2] = c.num_filler + c.num_keys + vals[j];
    if (answer_pos) answer_pos->push_back(q + 1);  // input position q + 1 (the marker) predicts token q + 2
    q += 3;
  }
  return s;
}

TaskBatch RecallTask::batch(uint64_t seed, uint64_t first, int64_t batch) const {
  const int64_t N = c_.seq_len;
  std::vector<int64_t> in(batch * N), tg(batch * N, kIgnoreIndex);
  TaskBatch b;
  b.key_pos.resize(batch);
  b.value_pos.resize(batch);
  b.answer_pos.resize(batch);
  for (int64_t r = 0; r < batch; ++r) {
    std::vector<int64_t> s = sequence(seed, first + r, &b.key_pos[r], &b.value_pos[r], &b.answer_pos[r]);
    std::copy(s.begin(), s.begin() + N, in.begin() + r * N);
    for (int64_t a : b.answer_pos[r]) tg[r * N + a] = s[a + 1];
  }
  b.inputs = from_vector_i64(in, {batch, N});
  b.targets = from_vector_i64(tg, {batch, N});
  return b;
}

TextTask::TextTask(const std::string& path, int64_t seq_len) : seq_len_(seq_len) {
  std::ifstream f(path, std::ios::binary);
  COLT5_CHECK(f.good(), "--text: cannot open ", path);
  std::stringstream ss;
  ss << f.rdbuf();
  const std::string text = ss.str();
  COLT5_CHECK(static_cast<int64_t>(text.size()) >= seq_len + 22, "--text: ", path, " has ", text.size(),
              " bytes; need at least ", seq_len + 22, " for seq_len ", seq_len);
  bool seen[256] = {};
  for (unsigned char ch : text) seen[ch] = true;
  for (int i = 0; i < 256; ++i) {
    table_[i] = -1;
    if (seen[i]) {
      table_[i] = static_cast<int64_t>(chars_.size());
      chars_.push_back(static_cast<char>(i));
    }
  }
  data_.reserve(text.size());
  for (unsigned char ch : text) data_.push_back(table_[ch]);
  split_ = static_cast<int64_t>(data_.size()) * 9 / 10;
}

int64_t TextTask::encode(unsigned char c) const { return table_[c]; }

TaskBatch TextTask::batch(uint64_t seed, uint64_t first, int64_t batch, bool eval) const {
  const int64_t N = seq_len_;
  const int64_t lo = eval ? split_ : 0, hi = eval ? static_cast<int64_t>(data_.size()) : split_;
  const int64_t span = hi - lo - (N + 1);
  std::vector<int64_t> in(batch * N), tg(batch * N);
  TaskBatch b;
  b.key_pos.resize(batch);
  b.value_pos.resize(batch);
  b.answer_pos.resize(batch);
  for (int64_t r = 0; r < batch; ++r) {
    Generator g(Generator::hash(seed ^ 0x7e47ULL, first + r));
    const int64_t start = lo + (span > 0 ? static_cast<int64_t>(g.next_u64() % static_cast<uint64_t>(span + 1)) : 0);
    for (int64_t i = 0; i < N; ++i) {
      // a short eval split may be shorter than a window: wrap around inside it
      const int64_t p = lo + (start - lo + i) % (hi - lo), p1 = lo + (start - lo + i + 1) % (hi - lo);
      in[r * N + i] = data_[p];
      tg[r * N + i] = data_[p1];
    }
  }
  b.inputs = from_vector_i64(in, {batch, N});
  b.targets = from_vector_i64(tg, {batch, N});
  return b;
}

}  // namespace colt5
