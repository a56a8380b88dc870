"""Direct Preference Optimization: an SFT run + preference pairs -> a chat run (kind "dpo").

The algorithm (Rafailov et al. 2023, TRL's `sigmoid` loss), stated up front:
1. log p(reply | prompt) is the sum of the model's token log-probs over the reply only (the
   assistant's reply and its <|assistant_end|>; prompt and padding never count).
2. Implicit reward r = beta * (log p_policy - log p_reference); the loss is
   -log sigmoid(r_chosen - r_rejected), averaged over pairs. The reference is the SFT model, frozen.
3. Reference log-probs are precomputed once for every pair before training (`ref="precompute"`,
   the default: one forward per pair in all, and no second model in memory during training), or
   computed on the fly each step (`ref="online"`). Same numbers either way.
4. Chosen and rejected rows go through one forward together (2B rows, right-padded).
5. Optimizers and schedule are SFT's (Muon + AdamW at a fraction of pretraining's rates,
   linear decay to 0). Validation on held-out pairs: preference accuracy (r_chosen > r_rejected),
   mean reward margin, loss, and the policy's log-prob change on chosen replies. Before training
   the policy is the reference: every margin is 0, accuracy 0 (ties), loss log 2.
Metric names follow TRL (rewards/chosen, rewards/rejected, rewards/margins, rewards/accuracies).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
import torch.nn.functional as F

from chatforge.common import ChatforgeError


def hidden_states(model, idx, positions=None, mask=None):
    """Final-norm hidden states [B, T, C] of our GPT: its forward without the output head, so a
    caller can apply the head to the positions it needs (or a different head: reward_model.py).
    positions [B, T] and mask [B, 1, T, T] (True = attend) for rows that pack several sequences
    (pairs.shared_prompt_batch); else positions 0..T-1 and causal attention."""
    T = idx.size(1)
    if T > model._rope_len:
        model._build_rope(max(2 * model._rope_len, T), device=idx.device)
    if positions is None:
        cos, sin = model.rope_cos[:T].to(idx.device), model.rope_sin[:T].to(idx.device)
    else:
        cos, sin = model.rope_cos.to(idx.device)[positions], model.rope_sin.to(idx.device)[positions]  # [B, T, 1, D/2]
    x = model.model.embed_tokens(idx)
    if model.low_precision_residual and torch.is_autocast_enabled(x.device.type):
        x = x.to(torch.get_autocast_dtype(x.device.type))  # as GPT.forward: a bf16 residual stream
    for block in model.model.layers:
        x = block(x, cos, sin, None, mask)
    return model.model.norm(x)


def reply_logps(model, x, y, autocast=None, positions=None, mask=None):
    """Sum of log p(target) over positions whose target is not -1, per row of y -> [rows] fp32.
    y has x's rows (pairs.pair_batch), or twice as many (pairs.shared_prompt_batch: row i and
    row B + i read the hidden states of x's row i; pass its positions and mask too).

    The output head runs on reply positions only: a prompt is most of a pair's tokens, and the
    head (width x vocab) with its fp32 logits is the largest single cost of a small model's step."""
    import contextlib

    with (autocast or contextlib.nullcontext)():
        h = hidden_states(model, x, positions, mask)
        rows, cols = (y != -1).nonzero(as_tuple=True)
        logits = model.lm_head(h[rows % x.size(0), cols])  # [reply tokens, V]
    nll = F.cross_entropy(logits.float(), y[rows, cols], reduction="none")
    return torch.zeros(y.size(0), device=x.device, dtype=torch.float32).index_add_(0, rows, -nll)


def frozen_reference(model, bf16: bool):
    """DPO's reference model: frozen, in eval mode, and with bf16=True (a GPU under bf16 autocast)
    its matrices held in bf16. Autocast casts a weight to bf16 at each use, and a frozen weight's
    cast is not cached, so a float32 reference paid one cast per matrix per forward (plus its
    float32 q/k/v concatenation); its logits are the same either way, and it takes half the memory.
    (Speed: +2% at d12 on an H200, within run-to-run noise; docs/benchmarks.md, 2026-12-03.) The
    output head stays as it is when tied to the embedding, whose lookups feed the residual stream."""
    model.requires_grad_(False).eval()
    if bf16:
        tied = model.lm_head.weight is model.model.embed_tokens.weight
        for m in model.modules():
            if isinstance(m, torch.nn.Linear) and not (tied and m is model.lm_head):
                m.weight.data = m.weight.data.to(torch.bfloat16)
    return model


def compile_blocks(model):
    """torch.compile each transformer block in place. (Compiling the model object does nothing
    here: hidden_states calls its blocks directly, never the model's forward.)"""
    for block in model.model.layers:
        block.compile(dynamic=True)


def dpo_loss(pi_chosen, pi_rejected, ref_chosen, ref_rejected, beta: float):
    """-> (loss, chosen rewards, rejected rewards); rewards are beta * (log pi - log ref)."""
    r_c = beta * (pi_chosen - ref_chosen)
    r_r = beta * (pi_rejected - ref_rejected)
    return -F.logsigmoid(r_c - r_r).mean(), r_c.detach(), r_r.detach()


@torch.no_grad()
def pair_logps(model, pairs, pad_id, device, batch_size=8, autocast=None, shared_prompt=True):
    """log p(chosen), log p(rejected) of every pair -> two [N] fp32 CPU tensors."""
    from chatforge.posttrain.pairs import logp_batch

    was = model.training
    model.eval()
    c, r = [], []
    for s in range(0, len(pairs), batch_size):
        chunk = pairs[s:s + batch_size]
        x, y, pos, mask = logp_batch(chunk, pad_id, device, shared_prompt)
        lp = reply_logps(model, x, y, autocast, pos, mask).cpu()
        c.append(lp[:len(chunk)])
        r.append(lp[len(chunk):])
    model.train(was)
    return torch.cat(c), torch.cat(r)


def dpo_metrics(pi_c, pi_r, ref_c, ref_r, beta: float, prefix="val_") -> dict:
    loss, rc, rr = dpo_loss(pi_c, pi_r, ref_c, ref_r, beta)
    return {f"{prefix}loss": float(loss), f"{prefix}accuracy": float((rc > rr).float().mean()),
            f"{prefix}margin": float((rc - rr).mean()), f"{prefix}reward_chosen": float(rc.mean()),
            f"{prefix}reward_rejected": float(rr.mean()),
            f"{prefix}logp_chosen_delta": float((pi_c - ref_c).mean()),
            # the model's own ranking, meaningful before training too: log p(chosen) > log p(rejected)
            f"{prefix}logp_accuracy": float((pi_c > pi_r).float().mean()), f"{prefix}pairs": len(pi_c)}


@dataclass
class DPOConfig:
    base: str                      # SFT run (policy start and frozen reference)
    pairs: str                     # preference pairs (JSONL, or 'hh-rlhf')
    out: str                       # DPO run directory
    beta: float = 0.1
    ref: str = "precompute"        # precompute | online
    steps: int | None = None       # default: one pass over the training pairs
    batch_size: int = 16           # pairs per optimizer step
    device_batch_size: int = 8     # pairs per forward
    max_seq_len: int | None = None
    lr_frac: float = 0.01          # fraction of pretraining's learning rates (below SFT's 0.02)
    val_frac: float = 0.1
    max_val: int = 256
    limit: int | None = None
    eval_every: int = 50
    save_every: int = 200
    log_every: int = 10
    device: str | None = None
    seed: int = 0
    resume: bool = False
    compile: bool = False
    # one row per pair, its prompt read once (pairs.shared_prompt_batch), or two rows per pair (TRL's
    # layout); None = default_shared_prompt(device)
    shared_prompt: bool | None = None
    # muon: Muon on the hidden matrices + AdamW, as pretraining and SFT; adamw: AdamW on every
    # weight (TRL's DPOTrainer). At a few pairs per step Muon's step is a fixed cost that weighs: at
    # d12, 8 pairs, on an H200 the step ran at 19.9 steps/s with muon and 23.1 with adamw (1.40x and
    # 1.73x TRL's, same call, 2026-12-03)
    optimizer: str = "muon"


def default_shared_prompt(device) -> bool:
    """Whether `chatforge dpo` reads each pair's prompt once on this device (DPOConfig.shared_prompt):
    on a CPU only. On a GPU the mask that keeps the two replies apart moves attention off its flash
    kernel; at d12 on an H200, batch 8, 384 + 129 tokens (2026-12-03, docs/benchmarks.md) the step
    ran at 22.4 steps/s against 26.5 for two plain causal rows (compiled: 27.0 and 30.3). The same
    mask as a FlexAttention BlockMask was slower still (19.0), so it was dropped."""
    return torch.device(device).type != "cuda"


def run_dpo(cfg: DPOConfig, log=print) -> Path:
    from chatforge.common import default_device
    from chatforge.model import load_run
    from chatforge.posttrain.loop import (check_dirs, check_finite, due, is_finished, logged_start, optimizer_step,
                                          resume, save_final)
    from chatforge.posttrain.pairs import logp_batch
    from chatforge.posttrain.reward_model import load_split_pairs
    from chatforge.posttrain.sft import step_rows
    from chatforge.train.checkpoint import has_checkpoint, save_checkpoint
    from chatforge.train.optim import build_optimizers, set_lr
    from chatforge.train.progress import RunLogger
    from chatforge.train.schedule import lr_multiplier
    from chatforge.train.trainer import autocast_for

    out, base = Path(cfg.out), Path(cfg.base)
    check_dirs(base, out, cfg.resume)
    if cfg.ref not in ("precompute", "online"):
        raise ChatforgeError(f"--ref {cfg.ref!r}: use precompute or online")
    if cfg.beta <= 0:
        raise ChatforgeError("--beta must be > 0")
    if cfg.optimizer not in ("muon", "adamw"):
        raise ChatforgeError(f"--optimizer {cfg.optimizer!r}: use muon or adamw")
    if is_finished(out):
        log(f"{out} is a finished DPO run; nothing to do")
        return out
    resuming = cfg.resume and has_checkpoint(out)
    device = torch.device(cfg.device or default_device())
    torch.manual_seed(cfg.seed)
    if cfg.shared_prompt is None:
        cfg = replace(cfg, shared_prompt=default_shared_prompt(device))
    policy, tokenizer, base_config = load_run(base, device=device)
    if tokenizer is None:
        raise ChatforgeError(f"{base}/tokenizer is missing")
    ref_model = frozen_reference(load_run(base, device=device)[0], bf16=device.type == "cuda")
    max_len = min(cfg.max_seq_len or policy.config.seq_len, policy.config.seq_len)
    pad_id = tokenizer.bos_id
    autocast = autocast_for(device)
    train, val, stats = load_split_pairs(cfg.pairs, tokenizer, max_len, cfg.val_frac, cfg.max_val, cfg.seed,
                                         cfg.limit, None, log)
    total = cfg.steps or math.ceil(len(train) / cfg.batch_size)

    t = time.time()
    ref_val = pair_logps(ref_model, val, pad_id, device, cfg.device_batch_size, autocast, cfg.shared_prompt) if val else None
    ref_train = None
    if cfg.ref == "precompute":
        ref_train = pair_logps(ref_model, train, pad_id, device, cfg.device_batch_size, autocast, cfg.shared_prompt)
        del ref_model  # not needed again: training reads the precomputed numbers
        ref_model = None
    log(f"reference log-probs of {len(val) + (len(train) if ref_train is not None else 0):,} pairs "
        f"in {time.time() - t:.1f}s")

    optimizers = build_optimizers(policy, lr_scale=cfg.lr_frac, use_muon=cfg.optimizer == "muon")
    data_state = {"seed": cfg.seed, "batch_size": cfg.batch_size, "n_train": len(train)}
    meta = dict(kind="dpo", base=str(base), base_step=base_config.get("step"), pairs=str(cfg.pairs),
                dpo={**asdict(cfg)}, max_seq_len=max_len, total_steps=total, pair_stats=dict(stats),
                n_train_pairs=len(train), n_val_pairs=len(val))
    step = resume(out, policy, optimizers, total, log) if resuming else 0
    logger = RunLogger(out, config=meta, resume_step=step if resuming else None)
    policy.train()
    if cfg.compile:
        compile_blocks(policy)

    def run_eval(at):
        res = dpo_metrics(*pair_logps(policy, val, pad_id, device, cfg.device_batch_size, autocast, cfg.shared_prompt),
                          *ref_val, cfg.beta)
        logger.log({"step": at, "kind": "val", **res})
        log(f"step {at:>5}/{total} | held-out preference accuracy {res['val_accuracy']:.1%} | margin "
            f"{res['val_margin']:+.3f} | loss {res['val_loss']:.4f} | chosen log-prob {res['val_logp_chosen_delta']:+.2f}")
        return res

    first = run_eval(0) if step == 0 and val else None
    t0 = time.time()
    while step < total:
        set_lr(optimizers, lr_multiplier(step, total, kind="wsd", warmdown=1.0))
        idx = step_rows(len(train), cfg.batch_size, step, cfg.seed)
        sums = torch.zeros(4, dtype=torch.float64)  # loss, accuracy, margin, chosen reward (step means)
        for s in range(0, len(idx), cfg.device_batch_size):
            sel = idx[s:s + cfg.device_batch_size]
            chunk = [train[i] for i in sel]
            x, y, pos, mask = logp_batch(chunk, pad_id, device, cfg.shared_prompt)
            lp = reply_logps(policy, x, y, autocast, pos, mask)
            if ref_train is not None:
                ref_c, ref_r = ref_train[0][sel].to(device), ref_train[1][sel].to(device)
            else:
                with torch.no_grad():
                    ref_lp = reply_logps(ref_model, x, y, autocast, pos, mask)
                ref_c, ref_r = ref_lp[:len(chunk)], ref_lp[len(chunk):]
            loss, rc, rr = dpo_loss(lp[:len(chunk)], lp[len(chunk):], ref_c, ref_r, cfg.beta)
            w = len(chunk) / len(idx)
            (loss * w).backward()
            sums += torch.tensor([loss.item(), float((rc > rr).float().mean()), float((rc - rr).mean()),
                                  float(rc.mean())], dtype=torch.float64) * w
        grad_norm = optimizer_step(policy, optimizers, grad_clip=1.0)
        step += 1
        check_finite(float(sums[0]), step, "lower --lr-frac or --beta")
        if step % cfg.log_every == 0 or step == total:
            rec = {"step": step, "kind": "train", "loss": float(sums[0]), "rewards/accuracies": float(sums[1]),
                   "rewards/margins": float(sums[2]), "rewards/chosen": float(sums[3]), "grad_norm": grad_norm,
                   "steps_per_s": step / max(1e-9, time.time() - t0)}
            logger.log(rec)
            log(f"step {step:>5}/{total} | loss {rec['loss']:.4f} | batch accuracy {sums[1]:.0%} | margin "
                f"{sums[2]:+.3f} | {time.time() - t0:.0f}s")
        if due(cfg.eval_every, step, total) and val:
            run_eval(step)
        if due(cfg.save_every, step, total):
            save_checkpoint(out, policy, optimizers, step=step, loader_state=data_state,
                            tokenizer=base / "tokenizer", run_config=meta)
    last = run_eval(step) if val else {}
    if first is None:  # resumed: the start-of-run evaluation is in the log
        first = logged_start(out)
    save_final(out, policy, base, step, meta, val_before=first, val_after=last)
    logger.close()
    log(f"DPO run written to {out}: held-out preference accuracy {last.get('val_accuracy', float('nan')):.1%} "
        f"(chance 50%), margin {last.get('val_margin', float('nan')):+.3f}")
    return out


def dpo_report_section(out_dir) -> str:
    """The report card's DPO section (speedrun DIR/dpo): held-out numbers before and after."""
    cfg_path = Path(out_dir) / "dpo" / "config.json"
    if not cfg_path.is_file():
        return ""
    cfg = json.loads(cfg_path.read_text())
    b, a = cfg.get("val_before") or {}, cfg.get("val_after") or {}
    if not a:
        return ""
    pct = lambda d, k: f"{100 * d[k]:.1f}%" if k in d else "-"  # noqa: E731
    num = lambda d, k: f"{d[k]:+.3f}" if k in d else "-"  # noqa: E731
    rows = [("the model prefers the chosen reply: log p(chosen) > log p(rejected)", pct(b, "val_logp_accuracy"),
             pct(a, "val_logp_accuracy")),
            ("implicit DPO reward ranks chosen first (beta log-ratio; ties before)", pct(b, "val_accuracy"),
             pct(a, "val_accuracy")),
            ("mean reward margin r(chosen) - r(rejected)", num(b, "val_margin"), num(a, "val_margin")),
            ("DPO loss (log 2 = 0.693 before)", f"{b.get('val_loss', float('nan')):.4f}",
             f"{a.get('val_loss', float('nan')):.4f}"),
            ("log p(chosen) change vs the SFT model (nats)", num(b, "val_logp_chosen_delta"),
             num(a, "val_logp_chosen_delta"))]
    stats = ", ".join(f"{v:,} {k}" for k, v in sorted((cfg.get("pair_stats") or {}).items()))
    d = cfg.get("dpo", {})
    lines = [f"DPO of the SFT model on `{cfg.get('pairs')}` preference pairs: {cfg.get('n_train_pairs')} train, "
             f"{a.get('val_pairs', cfg.get('n_val_pairs'))} held out; {cfg.get('step')} steps of {d.get('batch_size')} "
             f"pairs, beta {d.get('beta')}. Pairs read: {stats}.", "",
             "| held-out pairs | SFT (before) | DPO (after) |", "|---|---|---|"]
    lines += [f"| {name} | {x} | {y} |" for name, x, y in rows]
    return "\n".join(lines)
