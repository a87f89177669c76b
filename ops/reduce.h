// Reductions over dims (empty dims = all dims), with keepdim.
#pragma once
#include <vector>

#include "engine/tensor.h"

namespace colt5 {

Tensor sum(const Tensor& x, const std::vector<int>& dims = {}, bool keepdim = false);
Tensor mean(const Tensor& x, const std::vector<int>& dims = {}, bool keepdim = false);
// Gradient goes to the first position holding the extreme value.
Tensor max(const Tensor& x, const std::vector<int>& dims = {}, bool keepdim = false);
Tensor min(const Tensor& x, const std::vector<int>& dims = {}, bool keepdim = false);
// Index (i64) of the first maximum / minimum along one dim.
Tensor argmax(const Tensor& x, int dim, bool keepdim = false);
Tensor argmin(const Tensor& x, int dim, bool keepdim = false);
// log(sum(exp(x))) computed stably; all -inf input gives -inf, no NaN.
Tensor logsumexp(const Tensor& x, const std::vector<int>& dims, bool keepdim = false);

inline Tensor sum(const Tensor& x, int dim, bool keepdim = false) { return sum(x, std::vector<int>{dim}, keepdim); }
inline Tensor mean(const Tensor& x, int dim, bool keepdim = false) { return mean(x, std::vector<int>{dim}, keepdim); }
inline Tensor max(const Tensor& x, int dim, bool keepdim = false) { return max(x, std::vector<int>{dim}, keepdim); }
inline Tensor min(const Tensor& x, int dim, bool keepdim = false) { return min(x, std::vector<int>{dim}, keepdim); }
inline Tensor logsumexp(const Tensor& x, int dim, bool keepdim = false) {
  return logsumexp(x, std::vector<int>{dim}, keepdim);
}

}  // namespace colt5
