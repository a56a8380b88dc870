"""Where a decode step's time goes: our StaticDecoder alone (no engine, no sampling), per variant.

    python benchmarks/decode_profile.py --preset d12 --batch 1,32 --variants graph,compile --profile 15

For each variant and batch: greedy-pick decode steps from position 16 (the engine's loop: one
step, one small device->host copy), after a warm-up pass over the same positions so CUDA graphs
and compiled kernels exist. Prints ms per step and tok/s; with --profile N, the kernels one step
launches (count, GPU time) and the N costliest, from torch.profiler over 8 replayed steps.
Variants: graph = eager step captured as a CUDA graph (the engine's default), compile = the
step torch.compile'd, then captured; eager = no graph (each kernel launched from Python).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(__file__))
from inference import random_gpt  # noqa: E402  (the same random-weight model as benchmarks/inference.py)


def run(model, variant, batch, steps, prompt_len, profile_n):
    from chatforge.infer.decode import StaticDecoder

    dec = StaticDecoder(model, batch, prompt_len + steps + 1, cuda_graphs=variant != "eager",
                        compile=variant == "compile")
    ids = torch.randint(0, model.config.vocab_size, (batch, prompt_len), device="cuda")

    def decode(n):
        dec.prefill(ids, None)
        tok = torch.zeros(batch, dtype=torch.long, device="cuda")
        for _ in range(n):
            dec.step(tok, pick=True)
            tok = dec.picked[0].clone()
            dec.picked[1].cpu()  # the engine's one copy per token (ids + log-probs)

    decode(steps)  # warm-up: graphs captured / kernels compiled for every length bucket
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    decode(steps)
    torch.cuda.synchronize()
    dt = (time.perf_counter() - t0) / steps  # prefill included: small next to `steps` steps
    row = dict(variant=variant, batch=batch, ms=dt * 1e3, tok_s=batch / dt)
    if profile_n:
        from torch.profiler import ProfilerActivity, profile
        dec.prefill(ids, None)
        tok = torch.zeros(batch, dtype=torch.long, device="cuda")
        for _ in range(4):
            dec.step(tok, pick=True)
        torch.cuda.synchronize()
        n = 8
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            for _ in range(n):
                dec.step(tok, pick=True)
                dec.picked[1].cpu()
            torch.cuda.synchronize()
        events = [e for e in prof.key_averages() if e.device_type.name == "CUDA" and e.self_device_time_total > 0]
        kernels = sum(e.count for e in events) / n
        gpu_us = sum(e.self_device_time_total for e in events) / n
        row.update(kernels_per_step=kernels, gpu_us_per_step=gpu_us)
        events.sort(key=lambda e: -e.self_device_time_total)
        print(f"--- {variant} batch {batch}: {kernels:.0f} kernels, {gpu_us:.0f} us of GPU time per step "
              f"(wall {dt * 1e6:.0f} us)")
        for e in events[:profile_n]:
            print(f"  {e.count / n:5.1f} x {e.self_device_time_total / e.count:7.2f} us  {e.key[:90]}")
    return row


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="d12")
    ap.add_argument("--batch", default="1,32")
    ap.add_argument("--variants", default="graph,compile")
    ap.add_argument("--steps", type=int, default=256)
    ap.add_argument("--prompt-len", type=int, default=16)
    ap.add_argument("--vocab", type=int, default=32768)
    ap.add_argument("--profile", type=int, default=0)
    args = ap.parse_args()
    if not torch.cuda.is_available():
        print("decode_profile: needs a CUDA GPU (skipped)")
        return 0
    model = random_gpt(args.preset, args.vocab, 2048, torch.device("cuda"), torch.bfloat16)
    print(f"{torch.cuda.get_device_name()} | torch {torch.__version__} | {args.preset} bf16")
    rows = []
    with torch.inference_mode():
        for variant in args.variants.split(","):
            for b in map(int, args.batch.split(",")):
                rows.append(run(model, variant, b, args.steps, args.prompt_len, args.profile))
    print("\n| variant | batch | ms/step | tok/s | kernels/step | GPU us/step |\n|---|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['variant']} | {r['batch']} | {r['ms']:.3f} | {r['tok_s']:,.0f} | "
              f"{r.get('kernels_per_step', float('nan')):.0f} | {r.get('gpu_us_per_step', float('nan')):.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
