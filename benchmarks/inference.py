"""Inference speed: our engine vs Hugging Face transformers `generate` on the same weights.

For each preset (random weights: speed does not depend on their values) and batch size, both
systems greedily decode `--new-tokens` tokens after a `--prompt-len`-token prompt:
  - time to first token (prefill + first sample; batch of `b` prompts),
  - decode tokens/s = b * (new_tokens - 1) / (total time - time to first token).
Ours runs through the Engine (sampling, streaming text decode and all), HF through
`LlamaForCausalLM.generate` (dynamic cache, sdpa) with our weights loaded 1:1.
It also states batch-1 decode as a fraction of the memory-bandwidth limit: every step must read
all weights (the embedding table excepted: one row) plus the KV cache so far, and the limit is the
device's measured copy bandwidth divided by those bytes.

    python benchmarks/inference.py --device cpu --preset d2 --new-tokens 64       # CPU smoke size
    python benchmarks/inference.py --device cuda --preset d12,d20                  # the H100 numbers
    ... --no-cuda-graphs / --compile / --skip-hf
"""

from __future__ import annotations

import argparse
import platform
import sys
import time

import torch


def synthetic_tokenizer(vocab_size: int):
    """A real chatforge Tokenizer of `vocab_size` ids (2-byte merges), so text decoding costs what it
    would with a trained one of that size; no training needed."""
    from chatforge.tokenizer import SPECIAL_TOKENS, Tokenizer

    n_merges = vocab_size - 256 - len(SPECIAL_TOKENS)
    merges = [(i // 256, i % 256, 256 + i) for i in range(n_merges)]
    return Tokenizer(merges)


def random_gpt(preset: str, vocab_size: int, seq_len: int, device, dtype):
    from chatforge.model import GPT, GPTConfig

    torch.manual_seed(0)
    model = GPT(GPTConfig.from_preset(preset, vocab_size=vocab_size, seq_len=seq_len))
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.normal_(0, 0.02)
    return model.to(device=device, dtype=dtype).eval()


def hf_llama(model, device, dtype):
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(**model.config.to_hf_llama(), attn_implementation="sdpa")
    with torch.device(device):
        hf = LlamaForCausalLM(cfg).to(dtype)
    missing, unexpected = hf.load_state_dict(model.state_dict(), strict=False)
    assert not unexpected and all("rotary" in k for k in missing), (missing, unexpected)
    return hf.eval()


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def time_ours(engine, prompts, new_tokens, repeats=2):
    from chatforge.infer.engine import Request, SamplingParams

    best = None
    for _ in range(repeats + 1):  # first run warms up (CUDA graphs captured, kernels compiled)
        sp = SamplingParams(max_tokens=new_tokens, temperature=0, stop_token_ids=(), use_tools=False)
        reqs = [Request(p, sp) for p in prompts]
        sync(engine.device)
        t0 = time.perf_counter()
        ttft, n = None, 0
        for events in engine.generate(reqs):
            if ttft is None:
                ttft = time.perf_counter() - t0
            n += sum(ev.token is not None for ev in events)
        total = time.perf_counter() - t0
        assert n == len(prompts) * new_tokens, n
        res = (ttft, len(prompts) * (new_tokens - 1) / (total - ttft))
        best = res if best is None or res[1] > best[1] else best
    return best


@torch.inference_mode()
def time_hf(hf, prompts, new_tokens, device, repeats=2):
    ids = torch.tensor(prompts, device=device)
    kw = dict(do_sample=False, pad_token_id=0, eos_token_id=None, attention_mask=torch.ones_like(ids))

    def gen(n):
        sync(device)
        t0 = time.perf_counter()
        out = hf.generate(ids, max_new_tokens=n, min_new_tokens=n, **kw)
        sync(device)
        assert out.shape[1] == ids.shape[1] + n
        return time.perf_counter() - t0

    gen(4)  # warm-up
    ttft = min(gen(1) for _ in range(repeats))
    total = min(gen(new_tokens) for _ in range(repeats))
    return ttft, len(prompts) * (new_tokens - 1) / (total - ttft)


def copy_bandwidth(device, nbytes=1 << 30) -> float:
    """Bytes/s of a large device-to-device copy (read + write counted)."""
    n = nbytes // 4 if device.type == "cuda" else nbytes // 16
    a = torch.empty(n, dtype=torch.float32, device=device)
    b = torch.empty_like(a)
    b.copy_(a)
    sync(device)
    best = float("inf")
    for _ in range(5):
        t0 = time.perf_counter()
        b.copy_(a)
        sync(device)
        best = min(best, time.perf_counter() - t0)
    return 2 * a.numel() * 4 / best


def bytes_per_token_b1(model, prompt_len, new_tokens, kv_bytes_per_elem) -> float:
    cfg = model.config
    w = sum(p.numel() * p.element_size() for n, p in model.named_parameters() if "embed_tokens" not in n)
    w += cfg.n_embd * model.model.embed_tokens.weight.element_size()  # one embedding row
    avg_ctx = prompt_len + new_tokens / 2
    kv = 2 * cfg.n_layer * cfg.n_kv_head * cfg.head_dim * avg_ctx * kv_bytes_per_elem
    return w + kv


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--preset", default=None, help="comma list (default d12,d20 on cuda, d2 on cpu)")
    ap.add_argument("--batch", default="1,32")
    ap.add_argument("--vocab", type=int, default=32768)
    ap.add_argument("--prompt-len", type=int, default=16)
    ap.add_argument("--new-tokens", type=int, default=None, help="default 256 on cuda, 64 on cpu")
    ap.add_argument("--no-cuda-graphs", action="store_true")
    ap.add_argument("--compile", action="store_true", help="torch.compile the decode step (then graph it)")
    ap.add_argument("--skip-hf", action="store_true")
    ap.add_argument("--dtype", default=None, help="bfloat16 (cuda default) | float32 (cpu default)")
    ap.add_argument("--threads", type=int, default=None, help="CPU: torch intra-op threads (1 is steadier on a shared machine)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    from chatforge.infer.engine import Engine

    device = torch.device(args.device)
    presets = (args.preset or ("d12,d20" if device.type == "cuda" else "d2")).split(",")
    batches = [int(b) for b in args.batch.split(",")]
    new_tokens = args.new_tokens or (256 if device.type == "cuda" else 64)
    dtype = getattr(torch, args.dtype) if args.dtype else (torch.bfloat16 if device.type == "cuda" else torch.float32)
    tok = synthetic_tokenizer(args.vocab)
    gen = torch.Generator().manual_seed(0)
    dev_name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"
    import transformers

    print(f"device: {dev_name}; torch {torch.__version__}; transformers {transformers.__version__}; {dtype}; "
          f"prompt {args.prompt_len} tokens, {new_tokens} new tokens, greedy; "
          f"cuda graphs {'off' if args.no_cuda_graphs or device.type != 'cuda' else 'on'}, compile {'on' if args.compile else 'off'}")
    bw = copy_bandwidth(device)
    print(f"measured copy bandwidth: {bw / 1e9:.0f} GB/s")
    rows = []
    for preset in presets:
        model = random_gpt(preset, args.vocab, max(2048, args.prompt_len + new_tokens), device, dtype)
        engine = Engine(model, tok, cuda_graphs=not args.no_cuda_graphs, compile=args.compile)
        hf = None if args.skip_hf else hf_llama(model, device, dtype)
        nparams = sum(p.numel() for p in model.parameters())
        if hf is not None:  # same weights, same function: greedy continuations agree
            from chatforge.infer.engine import SamplingParams
            p0 = torch.randint(0, tok.n_ordinary, (1, args.prompt_len), generator=gen)
            ours = engine.complete(p0[0].tolist(), SamplingParams(max_tokens=16, temperature=0, stop_token_ids=(), use_tools=False))[0].token_ids
            with torch.inference_mode():
                theirs = hf.generate(p0.to(device), max_new_tokens=16, min_new_tokens=16, do_sample=False, pad_token_id=0,
                                     eos_token_id=None, attention_mask=torch.ones_like(p0).to(device))[0, args.prompt_len:].tolist()
            agree = next((i for i, (a, b) in enumerate(zip(ours, theirs)) if a != b), 16)
            print(f"{preset}: greedy tokens identical to HF for the first {agree}/16 steps")
        for b in batches:
            prompts = torch.randint(0, tok.n_ordinary, (b, args.prompt_len), generator=gen).tolist()
            o_ttft, o_tps = time_ours(engine, prompts, new_tokens)
            h_ttft, h_tps = time_hf(hf, prompts, new_tokens, device) if hf is not None else (float("nan"),) * 2
            rows.append((preset, nparams, b, o_tps, h_tps, o_ttft, h_ttft))
            print(f"  {preset} batch {b}: ours {o_tps:,.0f} tok/s (ttft {o_ttft * 1e3:.1f} ms), "
                  f"HF {h_tps:,.0f} tok/s (ttft {h_ttft * 1e3:.1f} ms)", flush=True)
            if b == 1:
                bpt = bytes_per_token_b1(model, args.prompt_len, new_tokens, 2 if device.type == "cuda" else dtype.itemsize)
                rows[-1] += (bw / bpt,)
        del engine, hf, model
        if device.type == "cuda":
            torch.cuda.empty_cache()

    print()
    print("| model | params | batch | ours tok/s | HF generate tok/s | ours / HF | ours TTFT ms | HF TTFT ms | bandwidth limit tok/s | ours / limit |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        preset, n, b, o, h, ot, ht = r[:7]
        lim = f"{r[7]:,.0f} | {o / r[7]:.0%}" if len(r) > 7 else "– | –"
        print(f"| {preset} | {n / 1e6:.0f}M | {b} | {o:,.0f} | {h:,.0f} | {o / h:.1f}× | {ot * 1e3:.1f} | {ht * 1e3:.1f} | {lim} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
