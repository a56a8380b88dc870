"""The FP8 output head with its loss, three ways, forward + backward, on one GPU:

    python benchmarks/fp8_head.py [--widths 768,1280] [--rows 65536] [--vocab 32768]

- bf16: F.linear + F.cross_entropy under bf16 autocast (what a plain trainer does);
- fp8 unfused: fp8_head_linear then F.cross_entropy (chatforge before the fused loss);
- fp8 fused: fp8_head_cross_entropy (model/fp8.py), whose backward writes the logits' gradient once
  as e5m2 in both layouts (model/fp8_kernels.py).
Each is torch.compile'd; the median of 20 timed calls after warm-up. It also compares the Triton kernel
with its PyTorch twin on the GPU, and the fused gradients against the unfused ones.
"""

from __future__ import annotations

import argparse
import sys

import torch
import torch.nn.functional as F

from chatforge.model.fp8 import fp8_head_cross_entropy, fp8_head_linear
from chatforge.model.fp8_kernels import ce_grad_fp8, ce_grad_fp8_reference


def bf16_loss(x, w, t):
    return F.cross_entropy(F.linear(x, w).float(), t, ignore_index=-1)


def unfused_loss(x, w, t):
    return F.cross_entropy(fp8_head_linear(x, w).float(), t, ignore_index=-1)


def fused_loss(x, w, t):
    return fp8_head_cross_entropy(x, w, t)


def time_ms(fn, x, w, t, n=20):
    def once():
        x.grad = w.grad = None
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = fn(x, w, t)
        loss.backward()
        return loss
    for _ in range(3):
        once()
    torch.cuda.synchronize()
    times = []
    for _ in range(n):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        once()
        b.record()
        torch.cuda.synchronize()
        times.append(a.elapsed_time(b))
    return sorted(times)[n // 2], once()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--widths", default="768,1280")
    ap.add_argument("--rows", type=int, default=65536)
    ap.add_argument("--vocab", type=int, default=32768)
    args = ap.parse_args()
    if not torch.cuda.is_available():
        print("fp8_head: needs a CUDA GPU (skipped)")
        return 0
    dev = "cuda"
    torch.manual_seed(0)
    M, V = args.rows, args.vocab
    logits = (torch.randn(M, V, device=dev) * 3).bfloat16()
    lse = torch.logsumexp(logits.float(), -1)
    t = torch.randint(0, V, (M,), device=dev)
    t[::97] = -1
    coef = torch.tensor([1024.0], device=dev)
    got, ref = ce_grad_fp8(logits, lse, t, coef), ce_grad_fp8_reference(logits, lse, t, coef)
    # exp differs in the last bits between Triton and PyTorch, so a few values round to the
    # neighbouring e5m2 number (25% apart at most: 2 mantissa bits)
    a, b = got[0].float(), ref[0].float()
    step = ((a - b).abs() / b.abs().clamp_min(2.0**-16)).max().item()
    print(f"kernel vs torch twin on {torch.cuda.get_device_name()}: {100 * (a == b).float().mean().item():.4f}% equal, "
          f"largest relative difference {step:.3f}; transposed copy == row-major.T: {torch.equal(got[1].float(), a.t())}")
    del logits, lse, got, ref
    print(f"torch {torch.__version__}; rows {M}, vocab {V}; forward + backward, ms (median of 20)")
    print("| width | bf16 | fp8 unfused | fp8 fused | fused vs unfused | fused vs bf16 | grad rel diff (fused vs unfused) |")
    print("|---|---|---|---|---|---|---|")
    for K in map(int, args.widths.split(",")):
        x = F.rms_norm(torch.randn(M, K, device=dev), (K,)).bfloat16().requires_grad_()
        w = (torch.randn(V, K, device=dev) * 0.02).requires_grad_()
        res = {}
        for name, fn in (("bf16", bf16_loss), ("unfused", unfused_loss), ("fused", fused_loss)):
            ms, loss = time_ms(torch.compile(fn), x, w, t)
            res[name] = (ms, loss.item(), x.grad.float().clone(), w.grad.clone())
        rel = max(((res["fused"][i] - res["unfused"][i]).norm() / res["unfused"][i].norm()).item() for i in (2, 3))
        b, u, f = res["bf16"][0], res["unfused"][0], res["fused"][0]
        print(f"| {K} | {b:.2f} | {u:.2f} | {f:.2f} | {u / f:.2f}x | {b / f:.2f}x | {rel:.1e} |")
        print(f"losses: bf16 {res['bf16'][1]:.5f}, unfused {res['unfused'][1]:.5f}, fused {res['fused'][1]:.5f}", file=sys.stderr)
        del x, w, res
        torch.cuda.empty_cache()
    return 0


if __name__ == "__main__":
    sys.exit(main())
