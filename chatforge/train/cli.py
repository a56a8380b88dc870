"""`chatforge train` (pretraining, also under torchrun) and `chatforge sample` (base-model completions).

Heavy imports (torch) stay inside the handlers so `chatforge --help` is instant.
"""

from __future__ import annotations

import argparse

from chatforge.common import ChatforgeError


def _int(s: str) -> int:
    """Accepts 1000000, 1_000_000, 1e6, 2**19, 20M, 1.5B."""
    t = s.strip().replace("_", "")
    mult = {"k": 1e3, "m": 1e6, "b": 1e9}.get(t[-1:].lower())
    try:
        if mult:
            return int(float(t[:-1]) * mult)
        if "**" in t:
            a, b = t.split("**")
            return int(a) ** int(b)
        return int(float(t))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {s!r}") from None


def _train(args):
    from chatforge.train.trainer import TrainConfig, train

    overrides = {}
    if args.kv_heads:
        overrides["n_kv_head"] = args.kv_heads
    if args.tie_embeddings:
        overrides["tie_embeddings"] = True
    if args.tokens and args.steps:
        raise ChatforgeError("give --tokens or --steps, not both")
    cfg = TrainConfig(
        data=args.data, val_data=args.val_data, out=args.out, tokenizer=args.tokenizer, preset=args.preset,
        model_overrides=overrides,
        seq_len=args.seq_len, batch_tokens=args.batch_tokens, device_batch=args.device_batch, steps=args.steps,
        tokens=args.tokens, tokens_per_param=args.tokens_per_param, schedule=args.schedule,
        warmup_steps=args.warmup_steps, warmdown=args.warmdown, matrix_lr=args.matrix_lr,
        embedding_lr=args.embedding_lr, unembedding_lr=args.unembedding_lr, weight_decay=args.weight_decay,
        muon=not args.no_muon, grad_clip=args.grad_clip, data_order=args.data_order, seed=args.seed,
        eval_every=args.eval_every, eval_tokens=args.eval_tokens, save_every=args.save_every,
        log_every=args.log_every, compile=args.compile, device=args.device, dist_mode=args.dist, fp8=args.fp8,
        ns_kernel=args.ns_kernel, resume=args.resume, stop_after=args.stop_after, tensorboard=args.tensorboard,
        wandb=args.wandb)
    train(cfg)
    return 0


def _sample(args):
    import torch

    from chatforge.model import load_run
    from chatforge.common import default_device

    device = args.device or default_device()
    model, tok, _ = load_run(args.run, device=device)
    if tok is None:
        raise ChatforgeError(f"{args.run} has no tokenizer/ directory; it cannot turn text into tokens")
    ids = [tok.bos_id] + tok.encode(args.prompt)
    if len(ids) + args.max_tokens > 1_000_000:
        raise ChatforgeError("prompt + --max-tokens is too long")
    x = torch.tensor([ids] * args.n, device=device)
    gen = torch.Generator(device=device).manual_seed(args.seed)
    ctx = torch.autocast("cuda", dtype=torch.bfloat16) if str(device).startswith("cuda") else torch.no_grad()
    with ctx:
        out = model.generate(x, args.max_tokens, temperature=args.temperature, top_k=args.top_k or None,
                             top_p=args.top_p, generator=gen)
    for i in range(args.n):
        new = out[i, len(ids):].tolist()
        if tok.bos_id in new:  # a new document began: the continuation is over
            new = new[:new.index(tok.bos_id)]
        if args.n > 1:
            print(f"--- sample {i + 1}")
        print(args.prompt + tok.decode(new))
    return 0


def register(sub):
    p = sub.add_parser("train", help="pretrain a base model on token shards (also under torchrun)",
                       description="Pretrain a Llama-compatible GPT. Under `torchrun --nproc_per_node=K` it trains on "
                                   "K processes (DDP, or FSDP2 with --dist fsdp).")
    p.add_argument("--preset", default="d12", help="model size by depth: d2..d6 (CPU), d12, d20, d26 (default d12)")
    p.add_argument("--data", required=True, help="token shard directory (chatforge data tokenize)")
    p.add_argument("--val-data", help="token shards to evaluate on instead of --data's val split (held-out text, e.g. "
                   "WikiText-2 test tokenized with --val-fraction 0): their val split, else their train split")
    p.add_argument("--tokenizer", help="tokenizer directory; copied into the run (needed by sample/chat)")
    p.add_argument("--out", required=True, help="run directory to write")
    p.add_argument("--tokens", type=_int, help="token budget (default: 20 tokens per non-embedding parameter)")
    p.add_argument("--steps", type=_int, help="optimizer steps instead of a token budget")
    p.add_argument("--tokens-per-param", type=float, default=20.0)
    p.add_argument("--batch-tokens", type=_int, help="tokens per optimizer step (default 2**19 on GPU, 8*seq-len on CPU)")
    p.add_argument("--device-batch", type=int, help="sequences per micro step per process (default: as many as fit)")
    p.add_argument("--seq-len", type=int, default=2048)
    p.add_argument("--schedule", choices=["wsd", "cosine", "constant"], default="wsd")
    p.add_argument("--warmup-steps", type=int, default=0)
    p.add_argument("--warmdown", type=float, default=0.2, help="wsd: fraction of steps spent decaying")
    p.add_argument("--matrix-lr", type=float, default=0.02, help="Muon learning rate (hidden matrices)")
    p.add_argument("--embedding-lr", type=float, default=0.2)
    p.add_argument("--unembedding-lr", type=float, default=0.004)
    p.add_argument("--weight-decay", type=float, default=0.0)
    p.add_argument("--no-muon", action="store_true", help="AdamW for every parameter")
    p.add_argument("--grad-clip", type=float, default=1.0)
    p.add_argument("--kv-heads", type=int,
                   help="grouped-query attention: key/value heads (default: the preset's, half the heads from d7 up)")
    p.add_argument("--tie-embeddings", action="store_true")
    p.add_argument("--data-order", choices=["random", "sequential"], default="random")
    p.add_argument("--seed", type=int, default=1337)
    p.add_argument("--eval-every", type=int, default=250)
    p.add_argument("--eval-tokens", type=_int)
    p.add_argument("--save-every", type=int, default=1000)
    p.add_argument("--log-every", type=int, default=10)
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                   help="torch.compile the model (default: on for CUDA, off for CPU)")
    p.add_argument("--device", help="cuda or cpu (default: cuda when available)")
    p.add_argument("--dist", choices=["ddp", "fsdp"], default="ddp", help="under torchrun: DDP or FSDP2 sharding")
    # fp8.TRAIN_MODES, spelled out: stage CLIs import no torch at start-up (a test keeps them equal)
    p.add_argument("--fp8", choices=["auto", "off", "head", "forward", "all"], default="auto",
                   help="training matmuls in FP8 on Hopper/Ada GPUs: auto (default: forward below width 1024, "
                        "all from it); off (bf16); the output head; the head and every forward matmul; or all "
                        "of them. CPUs and other GPUs train without FP8 whatever this says; model/fp8.py")
    p.add_argument("--ns-kernel", choices=["auto", "on", "off"], default="auto",
                   help="Muon's Newton-Schulz through our symmetric Triton kernel (GPUs only): auto (default: "
                        "for matrices with a side of 1024 or more), on, or off (cuBLAS); train/muon_kernels.py")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint")
    p.add_argument("--stop-after", type=int, help="stop (with a checkpoint) after this step")
    p.add_argument("--tensorboard", action="store_true", help="also log to RUN/tb (needs tensorboard)")
    p.add_argument("--wandb", metavar="PROJECT", help="also log to Weights & Biases (needs wandb)")
    p.set_defaults(func=_train)

    p = sub.add_parser("sample", help="sample continuations of a prompt from a trained run")
    p.add_argument("run", help="run directory")
    p.add_argument("prompt")
    p.add_argument("--temperature", type=float, default=0.8)
    p.add_argument("--top-k", type=int, default=50)
    p.add_argument("--top-p", type=float, default=None)
    p.add_argument("--n", type=int, default=1, help="number of samples")
    p.add_argument("--max-tokens", type=int, default=128)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device")
    p.set_defaults(func=_sample)
