// Built-in long-range tasks for `colt5 train`, generated on the fly from a seed.
//
// Key-value recall (the default). Vocabulary, in this order:
//   filler [0, F) | keys [F, F+K) | values [F+K, F+K+V) | query marker F+K+V
// A sequence of seq_len + 1 tokens is filler with `num_pairs` (key, value)
// pairs written as two adjacent tokens, spread over the first part of the
// sequence so that every value lies at least `min_distance` tokens before the
// first answer; the last 3P tokens ask for every key again (shuffled): the
// key, the query marker Q, and the key's value:
//
//   f f k3 v7 f f f ... f k9 v1 f ... f  k9 Q v1 k3 Q v7
//                                           ^       ^     the answers
//
// Inputs are tokens [0, N), targets tokens [1, N + 1); a target is
// ignore_index except at the query markers, where it is the value to
// recall. With min_distance larger than what the local attention reaches, a
// model that only sees a local window cannot know the value (chance = 1 / V);
// a model whose routers pick the pair tokens can. With one pair (the CPU
// default) the key only names the pair: the task is to find the one value far
// back (a needle in a haystack of filler); with several pairs the model must
// also match the query key to the key written before each value.
//
// Character-level text (--text FILE): random windows of a file; every position
// is a target.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "engine/tensor.h"

namespace colt5 {

constexpr int64_t kIgnoreIndex = -100;

struct RecallTaskConfig {
  int64_t seq_len = 512;       // N: model input length
  int64_t num_pairs = 1;       // P
  int64_t num_filler = 1;      // F: filler token types
  int64_t num_keys = 8;        // K (>= P)
  int64_t num_values = 16;     // V: chance accuracy is 1 / V
  int64_t min_distance = 256;  // every value lies at least this far before the first answer position
};

// One batch: inputs/targets i64 (B, N) on the CPU, and where the informative
// tokens are (per row, positions in the input).
struct TaskBatch {
  Tensor inputs, targets;
  std::vector<std::vector<int64_t>> key_pos, value_pos;  // the scattered pairs
  std::vector<std::vector<int64_t>> answer_pos;          // positions whose target is scored (the query markers)
};

class RecallTask {
 public:
  explicit RecallTask(const RecallTaskConfig& config);
  int64_t vocab_size() const { return c_.num_filler + c_.num_keys + c_.num_values + 1; }
  int64_t query_token() const { return c_.num_filler + c_.num_keys + c_.num_values; }
  bool is_key(int64_t tok) const { return tok >= c_.num_filler && tok < c_.num_filler + c_.num_keys; }
  bool is_value(int64_t tok) const { return tok >= c_.num_filler + c_.num_keys && tok < query_token(); }
  const RecallTaskConfig& config() const { return c_; }

  // Sequence number `index` of the stream `seed` (seq_len + 1 tokens); same
  // (seed, index) -> same sequence. Positions are filled when given.
  std::vector<int64_t> sequence(uint64_t seed, uint64_t index, std::vector<int64_t>* key_pos = nullptr,
                                std::vector<int64_t>* value_pos = nullptr,
                                std::vector<int64_t>* answer_pos = nullptr) const;
  // Rows first .. first + batch - 1 of the stream.
  TaskBatch batch(uint64_t seed, uint64_t first, int64_t batch) const;

 private:
  RecallTaskConfig c_;
};

// Character-level language modelling over a text file (bytes are the vocabulary:
// the sorted distinct bytes of the file). The last 10% is held out for eval.
class TextTask {
 public:
  TextTask(const std::string& path, int64_t seq_len);
  int64_t vocab_size() const { return static_cast<int64_t>(chars_.size()); }
  const std::string& chars() const { return chars_; }
  int64_t encode(unsigned char c) const;  // -1 when not in the vocabulary
  // Random windows (row r of the stream seed uses Generator(hash(seed, first + r))).
  TaskBatch batch(uint64_t seed, uint64_t first, int64_t batch, bool eval) const;
  int64_t seq_len() const { return seq_len_; }

 private:
  std::vector<int64_t> data_;
  std::string chars_;
  int64_t table_[256];
  int64_t seq_len_, split_;
};

}  // namespace colt5
