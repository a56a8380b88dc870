"""Muon's Newton-Schulz (5 iterations, bf16) on one GPU: cuBLAS for all three products vs our
symmetric kernel for the two symmetric ones (train/muon_kernels.py), for the stacked matrix groups
of a preset's Muon step:

    python benchmarks/muon_ns.py [--presets d12,d20] [--block 128] [--block-k 64] [--warps 8] [--stages 3]

(the tile options default to muon_kernels.TILES and replace it for the run)

Both run through the compiled functions Muon itself calls (optim._newton_schulz); median of 20
timed calls after warm-up. Prints per group and per preset (the sum: Muon's Newton-Schulz time per
optimizer step), cuBLAS's TFLOP/s (the full products' FLOPs), and how far the two results differ
from the same iteration in fp32 (on the CPU; relative Frobenius norm). Our kernel path's last
product is (B + aI) X, one plain matmul; "unfolded" times the kernel path with cuBLAS's a X + B X
instead (which first copies X), to show what folding a I into B saves and costs in accuracy.
"""

from __future__ import annotations

import argparse
import sys
import time

import torch

from chatforge.model.gpt import GPT, GPTConfig
from chatforge.train import muon_kernels
from chatforge.train.muon_kernels import sym_matmul
from chatforge.train.optim import NS_COEFFS, _newton_schulz, param_groups, zeropower_via_newtonschulz5


def shape_groups(preset: str) -> dict:
    """{matrix shape: count} of the hidden matrices Muon orthogonalises, as it groups them."""
    with torch.device("meta"):
        model = GPT(GPTConfig.from_preset(preset, vocab_size=32768))
    groups = {}
    for p in param_groups(model)[3]:
        groups[tuple(p.shape)] = groups.get(tuple(p.shape), 0) + 1
    return groups


def ns_flops(shape, count, steps=5):
    """FLOPs of `steps` Newton-Schulz iterations done in full (X X^T, A A, B X) on count [m, n] matrices."""
    m, n = sorted(shape)
    return count * steps * (2 * m * m * n + 2 * m ** 3 + 2 * m * m * n)


@torch.compile(dynamic=False)
def ns_symmetric_unfolded(G, steps=5):
    """optim.zeropower_via_newtonschulz5(symmetric=True) with X = a X + B X by cuBLAS (baddbmm)."""
    a, b, c = NS_COEFFS
    X = G.to(torch.bfloat16)
    transposed = G.size(-2) > G.size(-1)
    X = X.mT if transposed else X
    X = X / (X.norm(dim=(-2, -1), keepdim=True) + 1e-7)
    for _ in range(steps):
        A = sym_matmul(X)
        B = sym_matmul(A, A, alpha=c, beta=b)
        X = torch.baddbmm(X, B, X, beta=a)
    return X.mT if transposed else X


def rel_err(out, ref):
    return ((out.float().cpu() - ref).norm() / ref.norm()).item()


def time_ms(fn, G, n=20):
    for _ in range(3):
        fn(G)
    torch.cuda.synchronize()
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn(G)
        torch.cuda.synchronize()
        times.append((time.perf_counter() - t0) * 1e3)
    return sorted(times)[n // 2]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--presets", default="d12,d20")
    ap.add_argument("--block", type=int, default=muon_kernels.TILES["block"])
    ap.add_argument("--block-k", type=int, default=muon_kernels.TILES["block_k"])
    ap.add_argument("--warps", type=int, default=muon_kernels.TILES["num_warps"])
    ap.add_argument("--stages", type=int, default=muon_kernels.TILES["num_stages"])
    args = ap.parse_args()
    if not torch.cuda.is_available():
        print("benchmarks/muon_ns.py needs a CUDA GPU", file=sys.stderr)
        return 2
    muon_kernels.TILES.update(block=args.block, block_k=args.block_k, num_warps=args.warps, num_stages=args.stages)
    cublas = lambda G: _newton_schulz(True)(G, 5)  # noqa: E731
    ours = lambda G: _newton_schulz(True, kernel=True)(G, 5)  # noqa: E731
    print(f"device {torch.cuda.get_device_name()} | torch {torch.__version__} | tiles {args.block}x{args.block_k}, "
          f"{args.warps} warps, {args.stages} stages")
    print("| preset | matrices | cuBLAS ms | TFLOP/s | symmetric kernel ms | speedup | unfolded ms | "
          "error vs fp32: cuBLAS | kernel | unfolded |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for preset in args.presets.split(","):
        total_a = total_b = total_u = total_f = 0.0
        for shape, count in shape_groups(preset).items():
            G = torch.randn(count, *shape, device="cuda")
            a, b, u = time_ms(cublas, G), time_ms(ours, G), time_ms(ns_symmetric_unfolded, G)
            ref = zeropower_via_newtonschulz5(G.cpu(), 5)  # fp32 on the CPU
            errs = " | ".join(f"{rel_err(f(G), ref):.1e}" for f in (cublas, ours, ns_symmetric_unfolded))
            total_a, total_b, total_u = total_a + a, total_b + b, total_u + u
            flops = ns_flops(shape, count)
            total_f += flops
            print(f"| {preset} | {count} x {shape[0]}x{shape[1]} | {a:.2f} | {flops / a / 1e9:.0f} | {b:.2f} | "
                  f"{a / b:.2f}x | {u:.2f} | {errs} |", flush=True)
        print(f"| {preset} | **all (one Muon step)** | {total_a:.2f} | {total_f / total_a / 1e9:.0f} | {total_b:.2f} | "
              f"{total_a / total_b:.2f}x | {total_u:.2f} | | | |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
