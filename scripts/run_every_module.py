# Runs `colt5 run` on every module name (tiny sizes, fresh weights) with forward
# and, for the layers, backward (--grad-output/--grads), and prints what each wrote.
#   python3 scripts/run_every_module.py ./build/colt5 [--device cuda] [--dtype f32]
# Inputs are written as .npy by this script (no numpy needed) under /tmp/colt5_run_every_module.
import json, os, struct, subprocess, sys, random
C = sys.argv[1]; EXTRA = sys.argv[2:] or ['--dtype', 'f64']
D = '/tmp/colt5_run_every_module'; os.makedirs(D, exist_ok=True)
def npy(path, shape, vals, dt='<f4'):
    hdr = "{'descr': '%s', 'fortran_order': False, 'shape': (%s), }" % (dt, ', '.join(map(str, shape)) + (',' if len(shape) == 1 else ''))
    hdr += ' ' * ((64 - (10 + len(hdr) + 1) % 64) % 64) + '\n'
    with open(path, 'wb') as f:
        f.write(b'\x93NUMPY\x01\x00' + struct.pack('<H', len(hdr)) + hdr.encode())
        f.write(struct.pack('<%d%s' % (len(vals), 'f' if dt == '<f4' else '?'), *vals))
random.seed(0)
rn = lambda n: [random.gauss(0, 1) for _ in range(n)]
npy(f'{D}/x.npy', [1, 12, 8], rn(96)); npy(f'{D}/g.npy', [1, 12, 8], rn(96))
npy(f'{D}/ctx.npy', [1, 20, 8], rn(160)); npy(f'{D}/vit.npy', [2, 3, 16, 16], rn(1536)); npy(f'{D}/gvit.npy', [2, 5], rn(10)); npy(f'{D}/img.npy', [1, 8, 8, 8], rn(512)); npy(f'{D}/gimg.npy', [1, 8, 8, 8], rn(512))
cfgs = {
 "RMSNorm": {"dim": 8}, "FeedForward": {"dim": 8},
 "Attention": {"dim": 8, "dim_head": 4, "heads": 2},
 "LocalMHA": {"dim": 8, "window_size": 4, "dim_head": 4, "heads": 2, "prenorm": True, "use_rotary_pos_emb": False, "look_forward": 1},
 "SelfAttention": {"dim": 8, "dim_head": 4, "heads": 2, "prenorm": True},
 "CoordinateDescentRouter": {"dim": 8, "forward": {"num_tokens": 4}},
 "ConditionalRoutedFeedForward": {"dim": 8, "num_heavy_tokens": 4},
 "ConditionalRoutedAttention": {"dim": 8, "num_heavy_tokens_q": 4, "num_heavy_tokens_kv": 4, "light_window_size": 4, "light_dim_head": 4, "light_heads": 2, "heavy_dim_head": 4, "heavy_heads": 2, "rotary_emb": True},
 "ConditionalRoutedTransformerBlock": {"dim": 8, "num_heavy_attn_tokens_q": 4, "num_heavy_attn_tokens_kv": 4, "num_heavy_ff_tokens": 4, "light_window_size": 4},
 "ConditionalRoutedAutoregressiveAttention": {"dim": 8, "num_heavy_tokens_q": 2, "num_heavy_tokens_kv": 3, "light_window_size": 4, "light_dim_head": 4, "light_heads": 2, "heavy_dim_head": 4, "heavy_heads": 2},
 "ConditionalRoutedCrossAttention": {"dim": 8, "num_tokens_q": 4, "num_tokens_kv": 6, "dim_head": 4, "heads": 2},
 "ConditionalRoutedImageAttention": {"dim": 8, "num_heavy_tokens_q": 4, "num_heavy_tokens_kv": 4, "light_window_size": 4, "light_dim_head": 4, "light_heads": 2, "heavy_dim_head": 4, "heavy_heads": 2, "channel_first": False},
 "ConditionalRoutedViT": {"image_size": 16, "patch_size": 2, "num_classes": 5, "dim": 16, "depth": 1, "attn_num_heavy_tokens_q": 4, "attn_num_heavy_tokens_kv": 8, "attn_light_dim_head": 4, "attn_light_heads": 2, "attn_light_window_size": 4, "attn_heavy_dim_head": 4, "attn_heavy_heads": 2, "ff_num_heavy_tokens": 8},
 "coor_descent": {"k": 3, "n_iters": 5}, "topk": {"k": 3},
}
fails = 0
for name, cfg in cfgs.items():
    if cfg is None: continue
    open(f'{D}/{name}.json', 'w').write(json.dumps(cfg))
    inp, g = ('img.npy', 'gimg.npy') if 'Image' in name else ('vit.npy', 'gvit.npy') if 'ViT' in name else ('x.npy', 'g.npy')
    cmd = [C, 'run', '--module', name, '--config', f'{D}/{name}.json', '--input', f'{D}/{inp}', '--output', f'{D}/{name}.out.npy'] + EXTRA
    if name not in ('coor_descent', 'topk', 'CoordinateDescentRouter'): cmd += ['--grad-output', f'{D}/{g}', '--grads', f'{D}/{name}.grads.safetensors']
    if 'Cross' in name: cmd += ['--context', f'{D}/ctx.npy']
    r = subprocess.run(cmd, capture_output=True, text=True)
    out = ' | '.join(l.replace('colt5 run: ', '') for l in (r.stdout + r.stderr).strip().splitlines())
    print(f"{name:42s} rc={r.returncode}  {out[:160]}")
    fails += r.returncode != 0
sys.exit(1 if fails else 0)
