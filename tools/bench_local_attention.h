// `colt5 bench local_attention`: fused local (windowed) attention (SPEC §3.2)
// on the GPU beside the unfused reference (local_attention_reference: pad,
// gather neighbourhoods, matmul + masked softmax + matmul) on the same device,
// for the two forms CoLT5 uses:
//   non-causal exact, window 64, look 1/1, 2x8x32768x64 (target fwd+bwd <= 3 ms)
//   causal, window 128, look back 1, 2x8x8192x64
// in f32 (TF32) and bf16. Prints fwd, bwd and fwd+bwd milliseconds (medians,
// CUDA events), TFLOP/s counted as attended pairs x 4d flops (x3.5 for
// fwd+bwd), the time per attended pair beside the dense flash kernel's on
// 2x8x8192x8192x64 f32 (target within 1.5x), the op (tensors + autograd) and
// the reference. Options: [--iters N] [--only TEXT] [--no-reference]
// [--no-dense] [--variants]. Without CUDA it prints a note and returns 0.
#pragma once

int bench_local_attention(int argc, char** argv);
