#include <colt5.h>

#include <cstdio>

using namespace colt5;

int main() {
  Generator gen(0);
  Tensor x = randn({4, 8}, gen);                            // a batch of inputs
  Tensor w = randn({8, 3}, gen, {.requires_grad = true});   // a parameter
  Tensor loss = mean(pow(tanh(matmul(x, w)), 2.0));         // forward
  loss.backward();                                          // tape autograd
  std::printf("loss %.4f, dloss/dw has shape %s\n", loss.item<float>(), shape_str(w.grad().shape()).c_str());
  return w.grad().shape() == Shape{8, 3} ? 0 : 1;
}
