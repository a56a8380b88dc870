"""Evaluation during training: validation loss, bits-per-byte, sampled continuations.

Bits-per-byte divides the summed loss (nats -> bits) by the UTF-8 bytes the target tokens stand
for, so it compares models with different tokenizers. Special tokens (0 bytes) are left out of
both sums, as in nanochat.
"""

from __future__ import annotations

import contextlib
import math

import torch
import torch.nn.functional as F

from chatforge.model.run_dir import unwrap
from chatforge.train.distributed import all_reduce_sum

SAMPLE_PROMPTS = ["The capital of France is", "def fibonacci(n):", "In 1969, the first", "Water boils at"]


@torch.no_grad()
def evaluate_loss(model, loader, steps: int, token_bytes: torch.Tensor | None = None,
                  autocast=contextlib.nullcontext) -> dict:
    """Mean loss over `steps` batches of `loader` (every rank its share) and, with token_bytes, bpb."""
    was_training = model.training
    model.eval()
    dev = loader.device
    sums = torch.zeros(4, dtype=torch.float64, device=dev)  # loss, tokens, nats on bytes, bytes
    for _ in range(steps):
        x, y = loader.next_batch()
        with autocast():
            logits = model(x)
        loss = F.cross_entropy(logits.float().view(-1, logits.size(-1)), y.reshape(-1), reduction="none")
        sums[0] += loss.sum()
        sums[1] += loss.numel()
        if token_bytes is not None:
            nb = token_bytes[y.reshape(-1)]
            sums[2] += (loss * (nb > 0)).sum()
            sums[3] += nb.sum()
    all_reduce_sum(sums)
    model.train(was_training)
    out = {"val_loss": (sums[0] / sums[1]).item()}
    if token_bytes is not None and sums[3] > 0:
        out["val_bpb"] = (sums[2] / (math.log(2) * sums[3])).item()
    return out


@torch.no_grad()
def sample_continuations(model, tokenizer, prompts=SAMPLE_PROMPTS, max_new_tokens=24, temperature=0.0,
                         autocast=contextlib.nullcontext, seed=0) -> list[str]:
    """Greedy (default) continuations of fixed prompts; every rank must call it under FSDP2."""
    raw = unwrap(model)
    was_training = raw.training
    dev = raw.lm_head.weight.device
    gen = torch.Generator(device=dev).manual_seed(seed)
    outs = []
    for p in prompts:
        ids = [tokenizer.bos_id] + tokenizer.encode(p)
        with autocast():
            seq = raw.generate(torch.tensor([ids], device=dev), max_new_tokens, temperature=temperature, generator=gen)
        outs.append(p + tokenizer.decode(seq[0, len(ids):].tolist()))
    raw.train(was_training)
    return outs


def token_bytes_tensor(tokenizer, device) -> torch.Tensor | None:
    if tokenizer is None or not hasattr(tokenizer, "token_byte_lengths"):
        return None
    return torch.as_tensor(list(tokenizer.token_byte_lengths()), dtype=torch.float64, device=device)
