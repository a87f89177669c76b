// ConditionalRoutedViT (SPEC §4): a vision transformer of CoLT5 image
// attention and routed feed-forward layers.
//
//   ConditionalRoutedViT vit({.image_size = 32, .patch_size = 4, .num_classes = 10, .dim = 64, .depth = 2,
//                             .attn_num_heavy_tokens_q = 4, .attn_num_heavy_tokens_kv = 8,
//                             .attn_light_window_size = 4, .ff_num_heavy_tokens = 8}, gen);
//   Tensor logits = vit.forward(images /*(B, 3, 32, 32)*/);  // (B, 10)
//
// Steps: patchify (B, C, H, W) -> (B, h, w, p1 p2 C) (channel fastest);
// to_patch_embedding.1 LayerNorm -> .2 Linear -> .3 LayerNorm; plus the 2-D
// sin-cos position embedding (omega_i = 1 / 10000^(i / (D/4 - 1)), i < D/4;
// features [sin x, cos x, sin y, cos y], x the column, y the row); depth
// layers of x = image_attn(x) + x (on (B, h, w, D)) then x = ff(x) + x on the
// flattened (B, h w, D) tokens; mean over tokens; linear_head.1 LayerNorm ->
// .2 Linear.
//
// Parameters (state-dict keys): to_patch_embedding.{1.weight, 1.bias, 2.weight,
// 2.bias, 3.weight, 3.bias}, transformer.layers.{i}.0.* (ConditionalRoutedImageAttention),
// transformer.layers.{i}.1.* (ConditionalRoutedFeedForward), linear_head.{1.weight,
// 1.bias, 2.weight, 2.bias}.
//
// Router eps: default_coor_descent_eps unless router_kwargs names eps
// (router_kwargs_has_eps; the package merges {'eps': default, **router_kwargs}).
#pragma once
#include <cstdint>
#include <memory>

#include "layers/layer_norm.h"
#include "layers/linear.h"
#include "layers/module.h"
#include "layers/routed_feed_forward.h"
#include "layers/routed_image_attention.h"

namespace colt5 {

struct ConditionalRoutedViTConfig {
  int64_t image_size = 0;   // square images (use image_height / image_width for others)
  int64_t image_height = 0, image_width = 0;  // 0: image_size
  int64_t patch_size = 0;   // square patches
  int64_t num_classes = 0;
  int64_t dim = 0;          // multiple of 4, >= 8 (position embedding)
  int64_t depth = 0;
  int64_t attn_num_heavy_tokens_q = 0;
  int64_t attn_num_heavy_tokens_kv = 0;
  int64_t attn_light_dim_head = 64;
  int64_t attn_light_heads = 8;
  int64_t attn_light_window_size = 4;  // must divide the patch grid's sides
  int64_t attn_heavy_dim_head = 64;
  int64_t attn_heavy_heads = 8;
  int64_t ff_num_heavy_tokens = 0;
  double ff_light_mult = 0.5;
  double ff_heavy_mult = 4;
  int64_t channels = 3;
  RouterConfig router_kwargs = {};
  bool router_kwargs_has_eps = false;  // false: routers use default_coor_descent_eps
  double default_coor_descent_eps = 1.0;
};

class ConditionalRoutedViT : public Module {
 public:
  explicit ConditionalRoutedViT(const ConditionalRoutedViTConfig& config, Generator& gen = default_generator());
  // img (B, C, H, W) -> logits (B, num_classes)
  Tensor forward(const Tensor& img) const;
  Tensor operator()(const Tensor& img) const { return forward(img); }
  const ConditionalRoutedViTConfig& config() const { return cfg_; }

  std::shared_ptr<LayerNorm> patch_norm, embed_norm, head_norm;  // to_patch_embedding.1 / .3, linear_head.1
  std::shared_ptr<Linear> patch_linear, head_linear;             // to_patch_embedding.2, linear_head.2
  std::vector<std::shared_ptr<ConditionalRoutedImageAttention>> attn_layers;  // transformer.layers.{i}.0
  std::vector<std::shared_ptr<ConditionalRoutedFeedForward>> ff_layers;       // transformer.layers.{i}.1

 private:
  ConditionalRoutedViTConfig cfg_;
  int64_t ih_, iw_;
};

// (B, C, H, W) -> (B, H/p, W/p, p p C), channel fastest (the package's 'b c (h p1) (w p2) -> b h w (p1 p2 c)').
Tensor patchify(const Tensor& img, int64_t p);
// The 2-D sin-cos position embedding (h, w, dim), f64 on the CPU (dim % 4 == 0, dim >= 8).
Tensor posemb_sincos_2d(int64_t h, int64_t w, int64_t dim);

}  // namespace colt5
