// index_select, gather, scatter, scatter_add, embedding.
#include "helpers.h"

using namespace colt5;
using namespace colt5::testing;

namespace {
Tensor ix(const std::vector<int64_t>& v, const Shape& s = {}) { return from_vector_i64(v, s); }
}  // namespace

TEST_CASE("index_select: values by hand") {
  Tensor x = from_vector({1, 2, 3, 4, 5, 6}, {2, 3});
  check_values(index_select(x, 1, ix({2, 0, 2})), {3, 1, 3, 6, 4, 6});
  check_values(index_select(x, 0, ix({1, 1, 0})), {4, 5, 6, 4, 5, 6, 1, 2, 3});
  check_values(index_select(x, -1, ix({1})), {2, 5});
  Tensor s = index_select(x, 0, ix({1}, {}).reshape({}));  // a 0-D index keeps the dim
  CHECK(s.shape() == Shape{1, 3});
  check_values(index_select(x.t(), 0, ix({2, 1})), {3, 6, 2, 5});  // non-contiguous input
  CHECK(index_select(x, 1, ix({})).shape() == Shape{2, 0});
  // Any dtype moves: i64 and bool.
  CHECK(index_select(arange(5), 0, ix({4, 0})).to_vector<int64_t>() == std::vector<int64_t>{4, 0});
  CHECK(index_select(from_vector_bool({true, false}), 0, ix({1, 0, 1})).to_vector<int>() ==
        std::vector<int>{0, 1, 0});
}

TEST_CASE("gather: values by hand (PyTorch semantics)") {
  Tensor t = from_vector({1, 2, 3, 4}, {2, 2});
  check_values(gather(t, 1, ix({0, 0, 1, 0}, {2, 2})), {1, 1, 4, 3});
  check_values(gather(t, 0, ix({1, 0}, {1, 2})), {3, 2});
  // The index may be smaller than the input off the dim, and longer along it.
  Tensor x = from_vector({1, 2, 3, 4, 5, 6}, {2, 3});
  Tensor g = gather(x, 1, ix({2, 2, 0, 1}, {1, 4}));
  CHECK(g.shape() == Shape{1, 4});
  check_values(g, {3, 3, 1, 2});
  // Transposed input and transposed index.
  check_values(gather(x.t(), 0, ix({1, 0, 0, 1, 1, 0}, {2, 3}).t()), {2, 5, 1, 5, 1, 4});
}

TEST_CASE("scatter and scatter_add: values by hand, out of place") {
  // PyTorch's documentation example.
  Tensor src = arange(1, 11, 1, {.dtype = DType::f32}).reshape({2, 5});
  Tensor x = zeros({3, 5});
  Tensor out = scatter(x, 0, ix({0, 1, 2, 0}, {1, 4}), src);
  check_values(out, {1, 0, 0, 4, 0, 0, 2, 0, 0, 0, 0, 0, 3, 0, 0});
  check_values(x, std::vector<double>(15, 0.0));  // x untouched
  check_values(scatter(zeros({2, 4}), 1, ix({2, 1, 3, 0}, {2, 2}), src),
               {0, 2, 1, 0, 7, 0, 0, 6});
  // Duplicates: the last write along the dim wins.
  check_values(scatter(zeros({3}), 0, ix({1, 1}), from_vector({7, 8})), {0, 8, 0});
  check_values(scatter_add(ones({3}), 0, ix({0, 1, 0, 2, 0}), from_vector({1, 2, 3, 4, 5})), {10, 3, 5});
  check_values(scatter_add(zeros({2, 3}), 1, ix({0, 0, 2, 1, 1, 1}, {2, 3}), from_vector({1, 2, 3, 4, 5, 6}, {2, 3})),
               {3, 0, 3, 0, 15, 0});
  CHECK(scatter_add(arange(3), 0, ix({0, 0}), arange(2)).to_vector<int64_t>() == std::vector<int64_t>{1, 1, 2});
}

TEST_CASE("embedding: values and gradient by hand") {
  Tensor w = from_vector({0, 1, 2, 3, 4, 5, 6, 7}, {4, 2}, {.dtype = DType::f64, .requires_grad = true});
  Tensor out = embedding(w, ix({3, 0, 1, 3}, {2, 2}));
  CHECK(out.shape() == Shape{2, 2, 2});
  check_values(out, {6, 7, 0, 1, 2, 3, 6, 7});
  out.backward(ones({2, 2, 2}, {.dtype = DType::f64}));
  check_values(w.grad(), {1, 1, 1, 1, 0, 0, 2, 2});
  CHECK(embedding(w, ix({2}, {}).reshape({})).shape() == Shape{2});
}

TEST_CASE("index ops: f64 gradcheck") {
  using V = std::vector<Tensor>;
  Tensor dup = ix({2, 0, 2, 1, 2});
  check_grad([&](const V& v) { return index_select(v[0], 0, dup); }, {rleaf({3, 4}, 1)});
  check_grad([&](const V& v) { return index_select(v[0], 1, dup); }, {rleaf({2, 3, 2}, 2)});
  check_grad([&](const V& v) { return index_select(v[0].t(), 1, dup); }, {rleaf({3, 4}, 3)});
  Tensor gidx = ix({0, 2, 2, 1, 1, 1, 0, 0}, {2, 4});
  check_grad([&](const V& v) { return gather(v[0], 1, gidx); }, {rleaf({3, 3}, 4)});
  check_grad([&](const V& v) { return gather(v[0].t(), 1, gidx); }, {rleaf({3, 3}, 5)});
  Tensor g0 = ix({1, 0, 2, 2}, {2, 2});
  check_grad([&](const V& v) { return gather(v[0], 0, g0); }, {rleaf({3, 3}, 6)});
  // scatter: no duplicate destinations (the gradient of an overwritten write is ill-defined);
  // src larger than the index.
  Tensor sidx = ix({2, 0, 1, 1, 2, 0}, {2, 3});
  check_grad([&](const V& v) { return scatter(v[0], 0, sidx, v[1]); }, {rleaf({3, 4}, 7), rleaf({2, 5}, 8)});
  check_grad([&](const V& v) { return scatter(v[0], 1, ix({3, 0, 2, 1}, {2, 2}), v[1]); },
             {rleaf({2, 4}, 9), rleaf({3, 3}, 10)});
  // scatter_add with duplicates, on a transposed input.
  Tensor aidx = ix({0, 0, 1, 0, 2, 2}, {2, 3});
  check_grad([&](const V& v) { return scatter_add(v[0].t(), 1, aidx, v[1]); }, {rleaf({4, 2}, 11), rleaf({2, 3}, 12)});
  check_grad([&](const V& v) { return scatter_add(v[0], 0, ix({1, 1, 1, 0}, {2, 2}), v[1]); },
             {rleaf({2, 2}, 13), rleaf({3, 2}, 14)});
  check_grad([&](const V& v) { return embedding(v[0], ix({1, 4, 1, 0, 4, 4}, {3, 2})); }, {rleaf({5, 3}, 15)});
}

TEST_CASE("embedding and index_select backward: deterministic scatter-add, any thread count") {
  const int64_t V = 50, D = 96, n = 4000;
  Generator gen(11);
  Tensor idx = randint(0, V, {n}, gen);
  Tensor g = randn({n, D}, gen);
  auto grad_with = [&](int threads) {
    int before = get_num_threads();
    set_num_threads(threads);
    Tensor w = zeros({V, D}).requires_grad_();
    embedding(w, idx).backward(g);
    set_num_threads(before);
    return w.grad().to_vector<float>();
  };
  std::vector<float> g1 = grad_with(1), g2 = grad_with(2), g3 = grad_with(3);
  CHECK(g1 == g2);
  CHECK(g1 == g3);
  // Oracle: rows added in index order, in f32.
  std::vector<float> ref(V * D, 0.0f), gv = g.to_vector<float>();
  std::vector<int64_t> iv = idx.to_vector<int64_t>();
  for (int64_t j = 0; j < n; ++j)
    for (int64_t c = 0; c < D; ++c) ref[iv[j] * D + c] += gv[j * D + c];
  CHECK(g1 == ref);
}

TEST_CASE("index ops: bad input names the op, the index and the size") {
  Tensor x = zeros({2, 3});
  CHECK_THROWS_WITH_AS(index_select(x, 1, ix({0, 3})),
                       doctest::Contains("index_select: index 3 is out of range for dim 1 of size 3"), Error);
  CHECK_THROWS_WITH_AS(index_select(x, 0, ix({-1})), doctest::Contains("index -1 is out of range for dim 0 of size 2"),
                       Error);
  CHECK_THROWS_WITH_AS(index_select(x, 0, ix({0, 1}, {1, 2})), doctest::Contains("index_select: index must be 0-D or 1-D"),
                       Error);
  CHECK_THROWS_WITH_AS(index_select(x, 0, from_vector({0})), doctest::Contains("index_select: index must be an i64"),
                       Error);
  CHECK_THROWS_WITH_AS(index_select(x, 2, ix({0})), doctest::Contains("index_select: dim 2 out of range"), Error);
  CHECK_THROWS_WITH_AS(gather(x, 1, ix({0, 5}, {1, 2})),
                       doctest::Contains("gather: index 5 is out of range for dim 1 of size 3 (input shape [2, 3]"),
                       Error);
  CHECK_THROWS_WITH_AS(gather(x, 1, ix({0, 0, 0}, {3, 1})),
                       doctest::Contains("gather: index shape [3, 1] exceeds input shape [2, 3] at dim 0"), Error);
  CHECK_THROWS_WITH_AS(gather(x, 1, ix({0, 0})), doctest::Contains("need the same number of dims"), Error);
  CHECK_THROWS_WITH_AS(scatter(x, 0, ix({2}, {1, 1}), zeros({1, 1})),
                       doctest::Contains("scatter: index 2 is out of range for dim 0 of size 2"), Error);
  CHECK_THROWS_WITH_AS(scatter_add(x, 0, ix({0, 1}, {1, 2}), zeros({1, 1})),
                       doctest::Contains("scatter_add: index shape [1, 2] exceeds src shape [1, 1] at dim 1"), Error);
  CHECK_THROWS_WITH_AS(scatter_add(x, 0, ix({0}, {1, 1}), zeros({1, 1}, {.dtype = DType::f64})),
                       doctest::Contains("scatter_add: src dtype f64 differs"), Error);
  CHECK_THROWS_WITH_AS(embedding(zeros({4, 2}), ix({1, 4})),
                       doctest::Contains("embedding: index 4 is out of range for dim 0 of size 4"), Error);
  CHECK_THROWS_WITH_AS(embedding(zeros({4}), ix({1})), doctest::Contains("embedding: weight must be 2-D"), Error);
  CHECK_THROWS_WITH_AS(scatter_add(from_vector_bool({true}), 0, ix({0}), from_vector_bool({true})),
                       doctest::Contains("scatter_add"), Error);
}
