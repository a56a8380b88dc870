"""Pretraining throughput: our trainer's full step vs a plain compiled PyTorch GPT, same GPU, same run.

    python benchmarks/train_throughput.py [--presets d12,d20] [--steps 15] [--variants baseline,ours,ours-fp8forward]

Shapes (issue 4): vocab 32768, T=2048, 32 x 2048 tokens per optimizer step, random tokens.
- baseline: a minimal GPT (RMSNorm, fused-QKV SDPA attention with RoPE, relu^2 4x MLP, untied
  head), torch.compile, bf16 autocast, fused AdamW. The issue measured 546k tok/s (d12) and
  165k (d20) for such a baseline on an H100 (torch 2.11).
- ours: chatforge.train.trainer.Trainer.step with the full recipe (Llama GPT: RMSNorm with fixed
  gains, SwiGLU, RoPE; Muon for matrices + fused AdamW; grad clipping), torch.compile, bf16
  autocast, cuDNN attention, no FP8 (`--fp8 off`). ours-fp8head / ours-fp8forward / ours-fp8:
  the same with `--fp8 head|forward|all` (chatforge/model/fp8.py); `chatforge train`'s default on
  an H100, `--fp8 auto`, is ours-fp8forward below width 1024 (d12) and ours-fp8 from it (d20).
  ours-fp8forward-exactaccum: without the fast FP8 accumulation of the forward matmuls.
  ours-auto: `chatforge train`'s default on an H100: `--fp8 auto`, the preset's grouped-query
  attention (half as many key/value heads from d7 up), our Triton kernels for RoPE's and
  SwiGLU's backward (GPT.set_kernels) and Muon's symmetric Newton-Schulz kernel for matrices with
  a side of 1024 or more (`--ns-kernel auto`, train/muon_kernels.py). ours-auto-nokernels / -mha
  / -mha-nokernels: without the RoPE/SwiGLU kernels, with multi-head attention, or both (the
  sixth session's default). Since the seventh
  session every `ours*` variant runs the preset's GQA and, unless named -nokernels, the kernels.
  ours-auto-nskernel / -nsoff: Muon's symmetric kernel for every matrix / for none (the seventh
  session's default); benchmarks/muon_ns.py times Newton-Schulz alone. Every `ours*` variant
  other than these takes the kernel by size, as ours-auto.
  ours-res32: ours with the residual stream in fp32 (GPT.low_precision_residual off;
  docs/benchmarks.md measures the difference).
Both run the same micro batch (gradient accumulation where the batch does not fit in one pass): 32
sequences at d12 and d20 (at d20 the baseline peaks at 78.6 GB and ran 164.7k tok/s, the issue's
165k, against 160.9k as 16 x 2).
MFU counts the same FLOPs/token for every row (6 x matmul params + attention, of the multi-head
model: GQA rows' MFU is tok/s on the same scale, 5% (d12) and 6% (d20) above their own work)
and 989 TFLOP/s.
Prints one table; --json writes the rows; --trace DIR also writes a profiler trace of one step per
variant and reports where the GPU idles (benchmarks/trace_gaps.py).

Multi-GPU scaling (issue 8; NCCL_NVLS_ENABLE=0 on shared hosts):
    torchrun --nproc_per_node=K benchmarks/train_throughput.py --dist ddp|fsdp --presets d20
runs only our step, --batch sequences per GPU, and rank 0 prints the global tok/s.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

from chatforge.model.gpt import GPT, GPTConfig
from chatforge.train.distributed import DistInfo
from chatforge.train.loader import RandomTokenLoader
from chatforge.train.progress import peak_flops
from chatforge.train.trainer import Trainer


# --- the baseline ---------------------------------------------------------------------------
class BaseBlock(nn.Module):
    def __init__(self, d, n_head):
        super().__init__()
        self.n_head = n_head
        self.qkv = nn.Linear(d, 3 * d, bias=False)
        self.proj = nn.Linear(d, d, bias=False)
        self.fc = nn.Linear(d, 4 * d, bias=False)
        self.out = nn.Linear(4 * d, d, bias=False)

    def forward(self, x, cos, sin):
        B, T, C = x.shape
        h = F.rms_norm(x, (C,))
        q, k, v = self.qkv(h).view(B, T, 3, self.n_head, C // self.n_head).transpose(1, 3).unbind(2)
        rot = lambda t: t * cos + torch.cat((-t[..., t.size(-1) // 2:], t[..., :t.size(-1) // 2]), -1) * sin  # noqa: E731
        y = F.scaled_dot_product_attention(rot(q), rot(k), v, is_causal=True)
        x = x + self.proj(y.transpose(1, 2).reshape(B, T, C))
        return x + self.out(F.relu(self.fc(F.rms_norm(x, (C,)))).square())


class BaselineGPT(nn.Module):
    def __init__(self, vocab, depth, d, n_head, T):
        super().__init__()
        self.emb = nn.Embedding(vocab, d)
        self.blocks = nn.ModuleList(BaseBlock(d, n_head) for _ in range(depth))
        self.head = nn.Linear(d, vocab, bias=False)
        hd = d // n_head
        inv = 1.0 / (10000 ** (torch.arange(0, hd, 2).float() / hd))
        f = torch.outer(torch.arange(T).float(), inv)
        self.register_buffer("cos", torch.cat((f, f), -1).cos().bfloat16(), persistent=False)
        self.register_buffer("sin", torch.cat((f, f), -1).sin().bfloat16(), persistent=False)

    def forward(self, idx, targets):
        x = self.emb(idx)
        for b in self.blocks:
            x = b(x, self.cos, self.sin)
        logits = self.head(F.rms_norm(x, (x.size(-1),)))
        return F.cross_entropy(logits.float().view(-1, logits.size(-1)), targets.reshape(-1))


def baseline_step_fn(cfg: GPTConfig, device):
    model = BaselineGPT(cfg.vocab_size, cfg.n_layer, cfg.n_embd, cfg.n_head, cfg.seq_len).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-4, betas=(0.9, 0.95), fused=True)
    fwd = torch.compile(model)

    def step(loader, accum):
        for _ in range(accum):
            x, y = loader.next_batch()
            with torch.autocast("cuda", dtype=torch.bfloat16):
                loss = fwd(x, y)
            (loss / accum).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss

    return step, (model, opt)


DIST = {"info": None, "mode": "ddp"}  # set under torchrun (issue 8 scaling runs)


def mha(cfg: GPTConfig) -> GPTConfig:
    """The preset with as many key/value heads as query heads (the presets use GQA from d7 up)."""
    return dataclasses.replace(cfg, n_kv_head=cfg.n_head)


def ours_step_fn(cfg: GPTConfig, device, muon=True, attention="cudnn", fp8="off", res32=False, fused_head=True,
                 fast_accum=True, kernels=None, ns_kernel=None):
    import chatforge.model.fp8 as fp8_module
    fp8_module.FAST_ACCUM_FORWARD = fast_accum  # each variant runs in its own process (run_isolated)
    info = DIST["info"] or DistInfo(device=torch.device(device))
    with torch.device(info.device):
        model = GPT(cfg)
    model.low_precision_residual = not res32
    model.fused_head_loss = fused_head
    tr = Trainer(model, info, dist_mode=DIST["mode"], compile=True, grad_clip=1.0,
                 optim_kwargs=dict(use_muon=muon, ns_kernel=ns_kernel), attention=attention, fp8=fp8,
                 kernels=kernels)
    return (lambda loader, accum: tr.step(loader, accum, 1.0, 0.95)[0]), (model, tr)


def sdpa(name):
    """Context for the baseline's attention backend ('default' = PyTorch's own choice)."""
    from chatforge.train.trainer import attention_backends
    return attention_backends(name)


VARIANTS = {  # name -> builder(cfg, device) -> (step(loader, accum), keep-alive), attention context
    "baseline": (lambda c, d: baseline_step_fn(c, d), "default"),
    "baseline-cudnn": (lambda c, d: baseline_step_fn(c, d), "cudnn"),
    "ours": (lambda c, d: ours_step_fn(c, d), "default"),            # Trainer's own default: cuDNN attention
    "ours-flash": (lambda c, d: ours_step_fn(c, d, attention="flash"), "default"),
    "ours-adamw": (lambda c, d: ours_step_fn(c, d, muon=False), "default"),
    "ours-fp8head": (lambda c, d: ours_step_fn(c, d, fp8="head"), "default"),
    "ours-fp8": (lambda c, d: ours_step_fn(c, d, fp8="all"), "default"),
    "ours-fp8forward": (lambda c, d: ours_step_fn(c, d, fp8="forward"), "default"),
    "ours-fp8forward-exactaccum": (lambda c, d: ours_step_fn(c, d, fp8="forward", fast_accum=False), "default"),
    "ours-fp8forward-unfusedhead": (lambda c, d: ours_step_fn(c, d, fp8="forward", fused_head=False), "default"),
    # `chatforge train`'s default: --fp8 auto, the preset's GQA, our Triton backward kernels
    "ours-auto": (lambda c, d: ours_step_fn(c, d, fp8="auto"), "default"),
    "ours-auto-nokernels": (lambda c, d: ours_step_fn(c, d, fp8="auto", kernels=False), "default"),
    "ours-auto-mha": (lambda c, d: ours_step_fn(mha(c), d, fp8="auto"), "default"),
    "ours-auto-mha-nokernels": (lambda c, d: ours_step_fn(mha(c), d, fp8="auto", kernels=False), "default"),
    "ours-auto-nskernel": (lambda c, d: ours_step_fn(c, d, fp8="auto", ns_kernel=True), "default"),
    "ours-auto-nsoff": (lambda c, d: ours_step_fn(c, d, fp8="auto", ns_kernel=False), "default"),
    "ours-res32": (lambda c, d: ours_step_fn(c, d, res32=True), "default"),
    "ours-gains": (lambda c, d: ours_step_fn(dataclasses.replace(c, norm_gains=True), d), "default"),
}


def measure(variant, preset, args, device):
    build, attn = VARIANTS[variant]
    if args.cdt:
        import torch._inductor.config as ic
        ic.coordinate_descent_tuning = True
    cfg = GPTConfig.from_preset(preset, vocab_size=args.vocab, seq_len=args.seq_len)
    micro = args.micro.get(preset, args.batch)
    accum = args.batch // micro
    loader = RandomTokenLoader(args.vocab, micro, args.seq_len, device=device)
    step, keep = build(cfg, device)
    ctx = sdpa(attn)
    t0 = time.perf_counter()
    with ctx():
        for _ in range(args.warmup):
            loss = step(loader, accum)
        torch.cuda.synchronize()
        compile_s = time.perf_counter() - t0
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        times = []
        for _ in range(args.repeats):
            start.record()
            for _ in range(args.steps):
                loss = step(loader, accum)
            end.record()
            torch.cuda.synchronize()
            times.append(start.elapsed_time(end) / 1e3 / args.steps)
        if args.profile:
            from torch.profiler import ProfilerActivity, profile
            with profile(activities=[ProfilerActivity.CUDA]) as prof:
                step(loader, accum)
                torch.cuda.synchronize()
            table = prof.key_averages().table(sort_by="self_cuda_time_total", row_limit=args.profile, max_name_column_width=70)
            print(f"--- profile {preset} {variant} (one step)\n{table}", file=sys.stderr, flush=True)
        if args.trace:
            trace_step(step, loader, accum, os.path.join(args.trace, f"trace-{preset}-{variant}.json"))
    dt = sorted(times)[len(times) // 2]
    tokens = args.batch * args.seq_len
    with torch.device("meta"):
        ref = GPT(mha(cfg))  # one FLOPs/token for every variant: the multi-head model's
    fpt = ref.flops_per_token(args.seq_len)
    tok_s = tokens / dt
    peak = peak_flops(device) or float("nan")
    return dict(preset=preset, variant=variant, micro_batch=micro, accum=accum, step_ms=dt * 1e3, tok_s=tok_s,
                mfu=tok_s * fpt / peak, loss=float(loss.detach()), compile_s=compile_s,
                mem_gb=torch.cuda.max_memory_allocated() / 1e9, spread=(max(times) - min(times)) / dt)


def trace_step(step, loader, accum, path):
    """One step under the profiler (host ops and kernels) -> PATH.gz, and the idle-gap report
    (benchmarks/trace_gaps.py) on stderr. Profiling host ops slows the host, so CPU-side gaps
    read somewhat larger than without it."""
    import gzip
    import shutil

    from torch.profiler import ProfilerActivity, profile

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from trace_gaps import gaps, report

    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        step(loader, accum)
        torch.cuda.synchronize()
    prof.export_chrome_trace(path)
    with open(path) as f:
        trace = json.load(f)
    with open(path, "rb") as src, gzip.open(path + ".gz", "wb") as dst:
        shutil.copyfileobj(src, dst)
    os.remove(path)
    print(f"--- idle gaps {os.path.basename(path)}\n{report(gaps(trace))}", file=sys.stderr, flush=True)


def scaling(args):
    """Issue 8: `torchrun --nproc_per_node=K benchmarks/train_throughput.py --dist ddp|fsdp --presets d20`.
    Scaling efficiency = tok/s(K) / (K * tok/s(1)) from runs with K = 1, 2, 4, 8."""
    from chatforge.train import distributed as D

    info = D.setup("cuda")
    DIST["info"], DIST["mode"] = info, args.dist or "ddp"
    for preset in args.presets.split(","):
        row = measure("ours", preset, args, info.device)
        row.update(world=info.world_size, dist=DIST["mode"] if info.is_distributed else "single",
                   tok_s=row["tok_s"] * info.world_size, mfu=row["mfu"])  # per-GPU MFU, global tok/s
        if info.is_main:
            print(json.dumps(row), flush=True)
    D.teardown()
    return 0


def run_isolated(preset, variant, argv):
    """One (preset, variant) per process, each with its own compile cache: a shared inductor cache
    would reuse a graph traced under another attention backend."""
    import subprocess
    import tempfile

    env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": tempfile.mkdtemp(prefix="inductor_")}
    cmd = [sys.executable, __file__, "--one", f"{preset}:{variant}", *argv]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env)
    sys.stderr.write("".join(ln + "\n" for ln in r.stderr.splitlines() if "Warning" not in ln and "warn(" not in ln))
    lines = [ln for ln in r.stdout.splitlines() if ln.startswith("{")]
    if r.returncode != 0 or not lines:
        return dict(preset=preset, variant=variant, error=("OOM" if "OutOfMemory" in r.stderr else f"rc {r.returncode}"))
    return json.loads(lines[-1])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--presets", default="d12,d20")
    ap.add_argument("--variants", default="baseline,ours")
    ap.add_argument("--vocab", type=int, default=32768)
    ap.add_argument("--seq-len", type=int, default=2048)
    ap.add_argument("--batch", type=int, default=32, help="sequences per optimizer step")
    ap.add_argument("--micro", default="d12:32,d20:32,d26:8", help="micro batch per preset (grad accumulation)")
    ap.add_argument("--warmup", type=int, default=4)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--cdt", action="store_true", help="inductor coordinate-descent tuning")
    ap.add_argument("--profile", type=int, default=0, help="print the top N CUDA kernels of one step")
    ap.add_argument("--trace", help="write a profiler trace of one step per variant into this folder and "
                    "print where the GPU idles (benchmarks/trace_gaps.py)")
    ap.add_argument("--dist", choices=["ddp", "fsdp"], help="under torchrun: scaling run of ours only, "
                    "--batch sequences per GPU (weak scaling); rank 0 prints global tok/s")
    ap.add_argument("--one", help=argparse.SUPPRESS)
    ap.add_argument("--json")
    args, _ = ap.parse_known_args()
    args.micro = {k: int(v) for k, v in (kv.split(":") for kv in args.micro.split(","))}
    if not torch.cuda.is_available():
        print("train_throughput: needs a CUDA GPU (skipped)")
        return 0
    torch.backends.cuda.matmul.allow_tf32 = True
    if args.one:
        preset, variant = args.one.split(":")
        print(json.dumps(measure(variant, preset, args, "cuda")), flush=True)
        return 0
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 or args.dist:
        return scaling(args)
    passthrough = [a for a in sys.argv[1:]]
    print(f"device {torch.cuda.get_device_name()} | torch {torch.__version__} | "
          f"vocab {args.vocab}, T={args.seq_len}, batch {args.batch}x{args.seq_len}", flush=True)
    rows = []
    for preset in args.presets.split(","):
        for variant in args.variants.split(","):
            row = run_isolated(preset, variant, passthrough)
            rows.append(row)
            print(json.dumps(row), flush=True)
            if args.json:
                with open(args.json, "w") as f:
                    json.dump(rows, f, indent=1)
    print()
    print("| preset | variant | micro x accum | step ms | tok/s | MFU | vs baseline | peak mem GB | compile+warmup s |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        if "error" in r:
            print(f"| {r['preset']} | {r['variant']} | {r['error']} | | | | | | |")
            continue
        base = next((b for b in rows if b["preset"] == r["preset"] and b["variant"] == "baseline" and "tok_s" in b), None)
        ratio = f"{r['tok_s'] / base['tok_s']:.3f}x" if base else "-"
        print(f"| {r['preset']} | {r['variant']} | {r['micro_batch']}x{r['accum']} | {r['step_ms']:.1f} | "
              f"{r['tok_s'] / 1e3:.1f}k | {100 * r['mfu']:.1f}% | {ratio} | {r['mem_gb']:.1f} | {r['compile_s']:.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
