#include "layers/vit.h"

#include <cmath>
#include <vector>

#include "ops/elementwise.h"
#include "ops/reduce.h"

namespace colt5 {

namespace {
struct Container : Module {};  // a named holder of children (nn.Sequential / nn.ModuleList slots)
}  // namespace

Tensor patchify(const Tensor& img, int64_t p) {
  const int64_t B = img.size(0), C = img.size(1), H = img.size(2), W = img.size(3);
  return img.reshape({B, C, H / p, p, W / p, p}).permute({0, 2, 4, 3, 5, 1}).reshape({B, H / p, W / p, p * p * C});
}

Tensor posemb_sincos_2d(int64_t h, int64_t w, int64_t dim) {
  COLT5_CHECK(dim % 4 == 0 && dim >= 8, "posemb_sincos_2d: dim must be a multiple of 4 and >= 8, got ", dim);
  const int64_t q = dim / 4;
  std::vector<double> omega(q), pe(h * w * dim);
  for (int64_t i = 0; i < q; ++i)
    omega[i] = 1.0 / std::pow(10000.0, static_cast<double>(i) / static_cast<double>(q - 1));
  for (int64_t y = 0; y < h; ++y)
    for (int64_t x = 0; x < w; ++x) {
      double* o = pe.data() + (y * w + x) * dim;
      for (int64_t i = 0; i < q; ++i) {
        const double ax = static_cast<double>(x) * omega[i], ay = static_cast<double>(y) * omega[i];
        o[i] = std::sin(ax);
        o[q + i] = std::cos(ax);
        o[2 * q + i] = std::sin(ay);
        o[3 * q + i] = std::cos(ay);
      }
    }
  return from_vector(pe, {h, w, dim}, {.dtype = DType::f64});
}

ConditionalRoutedViT::ConditionalRoutedViT(const ConditionalRoutedViTConfig& config, Generator& gen) : cfg_(config) {
  const char* who = "ConditionalRoutedViT";
  const auto& c = cfg_;
  ih_ = c.image_height ? c.image_height : c.image_size;
  iw_ = c.image_width ? c.image_width : c.image_size;
  const int64_t p = c.patch_size;
  COLT5_CHECK(ih_ > 0 && iw_ > 0 && p > 0, who, ": image_size and patch_size must be positive");
  COLT5_CHECK(ih_ % p == 0 && iw_ % p == 0, who, ": image dimensions (", ih_, ", ", iw_,
              ") must be divisible by the patch size (", p, ")");
  COLT5_CHECK(c.num_classes >= 1 && c.depth >= 1 && c.channels >= 1, who,
              ": num_classes, depth and channels must be >= 1");
  COLT5_CHECK(c.dim % 4 == 0 && c.dim >= 8, who, ": dim must be a multiple of 4 and >= 8 (2-D sin-cos position ",
              "embedding), got ", c.dim);
  const int64_t gh = ih_ / p, gw = iw_ / p, w = c.attn_light_window_size;
  COLT5_CHECK(w >= 1 && gh % w == 0 && gw % w == 0, who, ": the patch grid (", gh, " x ", gw,
              ") must be a multiple of attn_light_window_size (", w, ")");
  RouterConfig rk = c.router_kwargs;
  if (!c.router_kwargs_has_eps) rk.eps = c.default_coor_descent_eps;
  const int64_t patch_dim = c.channels * p * p;

  auto emb = register_module("to_patch_embedding", std::make_shared<Container>());
  patch_norm = emb->register_module("1", std::make_shared<LayerNorm>(patch_dim));
  patch_linear = emb->register_module("2", std::make_shared<Linear>(patch_dim, c.dim, true, gen));
  embed_norm = emb->register_module("3", std::make_shared<LayerNorm>(c.dim));
  auto tr = register_module("transformer", std::make_shared<Container>());
  auto layers = tr->register_module("layers", std::make_shared<ModuleList>());
  for (int64_t i = 0; i < c.depth; ++i) {
    auto pair = layers->push_back(std::make_shared<ModuleList>());
    attn_layers.push_back(pair->push_back(std::make_shared<ConditionalRoutedImageAttention>(
        ConditionalRoutedImageAttentionConfig{.dim = c.dim,
                                              .num_heavy_tokens_q = c.attn_num_heavy_tokens_q,
                                              .num_heavy_tokens_kv = c.attn_num_heavy_tokens_kv,
                                              .light_dim_head = c.attn_light_dim_head,
                                              .light_heads = c.attn_light_heads,
                                              .light_window_size = w,
                                              .heavy_dim_head = c.attn_heavy_dim_head,
                                              .heavy_heads = c.attn_heavy_heads,
                                              .router_kwargs = rk},
        gen)));
    ff_layers.push_back(pair->push_back(std::make_shared<ConditionalRoutedFeedForward>(
        ConditionalRoutedFeedForwardConfig{.dim = c.dim,
                                           .num_heavy_tokens = c.ff_num_heavy_tokens,
                                           .light_ff_mult = c.ff_light_mult,
                                           .heavy_ff_mult = c.ff_heavy_mult,
                                           .router_kwargs = rk},
        gen)));
  }
  auto head = register_module("linear_head", std::make_shared<Container>());
  head_norm = head->register_module("1", std::make_shared<LayerNorm>(c.dim));
  head_linear = head->register_module("2", std::make_shared<Linear>(c.dim, c.num_classes, true, gen));
}

Tensor ConditionalRoutedViT::forward(const Tensor& img) const {
  const char* who = "ConditionalRoutedViT";
  const auto& c = cfg_;
  COLT5_CHECK(img.defined() && img.dim() == 4 && img.size(1) == c.channels && img.size(2) == ih_ &&
                  img.size(3) == iw_,
              who, ": images must be (batch, ", c.channels, ", ", ih_, ", ", iw_, "), got ",
              img.defined() ? shape_str(img.shape()) : std::string("an undefined tensor"));
  const int64_t B = img.size(0), p = c.patch_size, gh = ih_ / p, gw = iw_ / p, D = c.dim;
  Tensor x = embed_norm->forward(patch_linear->forward(patch_norm->forward(patchify(img, p))));  // (B, gh, gw, D)
  x = x + posemb_sincos_2d(gh, gw, D).to(x.dtype()).to(x.device());
  for (size_t i = 0; i < attn_layers.size(); ++i) {
    x = attn_layers[i]->forward(x) + x;
    Tensor t = x.reshape({B, gh * gw, D});
    x = (ff_layers[i]->forward(t) + t).reshape({B, gh, gw, D});
  }
  Tensor pooled = mean(x.reshape({B, gh * gw, D}), {1});
  return head_linear->forward(head_norm->forward(pooled));
}

}  // namespace colt5
