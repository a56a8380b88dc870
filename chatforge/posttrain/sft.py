"""Supervised fine-tuning: a base run + a conversation mixture -> a chat run (kind "sft").

How a step works (nanochat's chat_sft, made explicit):
- Each conversation is rendered by the tokenizer into ids and a loss mask; inputs are ids[:-1],
  targets ids[1:] where the mask is 1, else -1. So the loss is only on what the assistant writes
  (its text, its tool calls, <|assistant_end|>) - never on the user, system or tool output.
- One conversation per row, right-padded to the longest row of its micro-batch (targets -1 on
  padding). Causal attention means a real token only ever sees earlier tokens of its own row, and
  padding sits after them, so nothing leaks between conversations and no attention mask is needed.
  (Packing would need document masking in the model; padding is the simple correct choice, and
  sorting each step's rows by length keeps the padding small.)
- A step is `batch_size` conversations in micro-batches of `device_batch_size`; the loss is the
  mean over all assistant tokens of the step (each micro-batch is weighted by its token count).
- Optimizers and LR schedule are pretraining's (Muon + AdamW, chatforge.train.optim), at a small
  fraction of the pretraining rates, decaying linearly to zero (fine-tuning should not move far
  from the base model).
- Validation: mean assistant-token loss on conversations each set held out (see mixture.py),
  overall and per set, before training, every `eval_every` steps and at the end.
- Checkpoints (RUN/checkpoint/) hold weights, optimizer state and the step; the data order is a
  function of (seed, step), so `resume` continues exactly where the run stopped.
"""

from __future__ import annotations

import math
import time
from collections import defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path

from chatforge.common import ChatforgeError
from chatforge.posttrain.mixture import MixtureData, build_mixture, format_mixture_table, load_mixture


@dataclass
class SFTConfig:
    base: str                      # base run directory
    out: str                       # SFT run directory to write
    mix: str | dict = "default"    # mixture name, file, or dict
    steps: int | None = None       # default: one pass over the mixture's train conversations
    batch_size: int = 32           # conversations per optimizer step
    device_batch_size: int = 8     # conversations per forward/backward (gradient accumulation)
    max_seq_len: int | None = None # default: the base model's context
    lr_frac: float = 0.02          # fraction of pretraining's learning rates (nanochat SFT)
    schedule: str = "linear"       # linear decay to 0 | wsd | cosine | constant
    warmup_steps: int = 0
    use_muon: bool = True
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    eval_every: int = 100          # steps between validation passes (0: only before and after)
    save_every: int = 200          # steps between checkpoints (0: only at the end)
    log_every: int = 10
    device: str | None = None
    seed: int = 0
    resume: bool = False
    compile: bool = False
    probes: bool = True            # answer the fixed chat probes at the end (on chatforge.infer's engine)
    name: str | None = None        # the assistant's name in the identity set (default: its args / "chatforge")
    creator: str | None = None     # who made it, likewise


# ---------------------------------------------------------------------------------------------
# conversations -> rows


@dataclass
class Row:
    ids: list[int]        # inputs followed by the last target: len = T + 1
    targets: list[int]    # len T, -1 where no loss
    set_name: str = ""

    @property
    def n_loss(self) -> int:
        return sum(t != -1 for t in self.targets)


def conversation_to_row(tokenizer, conv: dict, max_seq_len: int, set_name: str = "") -> Row | None:
    """Render one conversation; None when nothing the assistant writes fits in the context."""
    ids, mask = tokenizer.render_conversation(conv["messages"], max_tokens=max_seq_len + 1)
    targets = [t if m else -1 for t, m in zip(ids[1:], mask[1:])]
    row = Row(ids=ids, targets=targets, set_name=set_name)
    return row if row.n_loss else None


def rows_from_conversations(tokenizer, convs, max_seq_len: int, set_names=None):
    """-> (rows, stats) with counts of truncated / dropped conversations."""
    rows, stats = [], defaultdict(int)
    for i, conv in enumerate(convs):
        row = conversation_to_row(tokenizer, conv, max_seq_len, set_names[i] if set_names else "")
        if row is None:
            stats["dropped: no assistant tokens within the context"] += 1
            continue
        if len(row.ids) == max_seq_len + 1:
            stats["truncated to the context"] += 1
        rows.append(row)
    return rows, dict(stats)


def collate(rows: list[Row], pad_id: int, device, pad_multiple: int = 1):
    """Right-pad rows to the longest one -> (inputs [B, T], targets [B, T]) int64 on device.
    Any rows with `ids` and `targets` will do: rl.py collates its rollouts with it too."""
    import torch

    T = max(len(r.targets) for r in rows)
    T = pad_multiple * math.ceil(T / pad_multiple)
    x = torch.full((len(rows), T), pad_id, dtype=torch.long)
    y = torch.full((len(rows), T), -1, dtype=torch.long)
    for i, r in enumerate(rows):
        n = len(r.targets)
        x[i, :n] = torch.tensor(r.ids[:-1])
        y[i, :n] = torch.tensor(r.targets)
    if torch.device(device).type == "cuda":
        return x.pin_memory().to(device, non_blocking=True), y.pin_memory().to(device, non_blocking=True)
    return x.to(device), y.to(device)


def step_rows(n_rows: int, batch_size: int, step: int, seed: int) -> list[int]:
    """Indices of the conversations of optimizer step `step`: a seeded permutation per epoch,
    consumed in order, so the data of any step depends only on (seed, step) - resume is exact."""
    import numpy as np

    out = []
    for g in range(step * batch_size, (step + 1) * batch_size):
        epoch, i = divmod(g, n_rows)
        perm = np.random.default_rng([seed, epoch]).permutation(n_rows)
        out.append(int(perm[i]))
    return out


def micro_batches(rows: list[Row], idx: list[int], device_batch_size: int) -> list[list[Row]]:
    """Sort a step's rows by length and cut them into micro-batches (less padding, same step)."""
    chosen = sorted((rows[i] for i in idx), key=lambda r: len(r.targets))
    return [chosen[i:i + device_batch_size] for i in range(0, len(chosen), device_batch_size)]


# ---------------------------------------------------------------------------------------------
# evaluation


def evaluate_loss(model, rows: list[Row], pad_id: int, device, batch_size: int = 8, autocast=None,
                  rank: int = 0, world_size: int = 1) -> dict:
    """Mean assistant-token loss over `rows`, overall ('val_loss') and per set ('val/<set>').

    Under torchrun each rank scores every world_size-th row and the sums are all-reduced."""
    import contextlib

    import torch

    from chatforge.posttrain.loop import token_logprobs
    from chatforge.train.distributed import all_reduce_sum

    autocast = autocast or contextlib.nullcontext
    keys = ["val_loss"] + sorted({f"val/{r.set_name}" for r in rows if r.set_name})
    slot = {k: i for i, k in enumerate(keys)}
    sums = torch.zeros(2, len(keys), dtype=torch.float64)  # [loss sum, token count] per key
    order = sorted(range(len(rows)), key=lambda i: len(rows[i].targets))[rank::world_size]
    was_training = model.training
    model.eval()
    with torch.no_grad():
        for s in range(0, len(order), batch_size):
            batch = [rows[i] for i in order[s:s + batch_size]]
            x, y = collate(batch, pad_id, device)
            with autocast():
                logits = model(x)
            losses = -token_logprobs(logits, y) * (y != -1)
            row_sums, row_counts = losses.sum(1).tolist(), (y != -1).sum(1).tolist()
            for r, ls, n in zip(batch, row_sums, row_counts):
                for key in ("val_loss", f"val/{r.set_name}" if r.set_name else None):
                    if key:
                        sums[0, slot[key]] += ls
                        sums[1, slot[key]] += n
    model.train(was_training)
    if world_size > 1:
        sums = all_reduce_sum(sums.to(device)).cpu()
    out = {k: float(sums[0, i] / max(1.0, float(sums[1, i]))) for k, i in slot.items()}
    return out | {"val_tokens": int(sums[1, 0])}


# ---------------------------------------------------------------------------------------------
# the run


def _lr_multiplier(cfg: SFTConfig, step: int, total: int) -> float:
    from chatforge.train.schedule import lr_multiplier

    if cfg.schedule == "linear":  # straight line from 1 to 0 (after any warmup)
        return lr_multiplier(step, total, kind="wsd", warmup_steps=cfg.warmup_steps, warmdown=1.0)
    return lr_multiplier(step, total, kind=cfg.schedule, warmup_steps=cfg.warmup_steps)


def prepare_data(cfg: SFTConfig, tokenizer, max_seq_len: int, log=print):
    """Mixture -> (train rows, val rows, the mixture data); prints the mixture table."""
    spec = load_mixture(cfg.mix)
    if cfg.name or cfg.creator:  # --name / --creator: the identity the model learns
        ident = {k: v for k, v in (("name", cfg.name), ("creator", cfg.creator)) if v}
        spec["sets"] = [{**st, "args": {**st.get("args", {}), **ident}} if st["source"] == "identity" else st
                        for st in spec["sets"]]
    data: MixtureData = build_mixture(spec)
    log(f"mixture {spec.get('name', '(dict)')!r} (seed {spec.get('seed', 0)}):")
    log(format_mixture_table(data))
    t0 = time.time()
    train_rows, train_stats = rows_from_conversations(tokenizer, data.train, max_seq_len)
    val_rows, val_stats = rows_from_conversations(tokenizer, data.val, max_seq_len, data.val_sets)
    n_tok = sum(len(r.targets) for r in train_rows)
    n_loss = sum(r.n_loss for r in train_rows)
    log(f"tokenized in {time.time() - t0:.1f}s: {len(train_rows):,} train rows, {n_tok:,} tokens "
        f"({n_loss:,} with loss, {n_loss / max(1, n_tok):.0%}); {len(val_rows):,} val rows; context {max_seq_len}")
    for k, v in {**train_stats, **{f"val {k}": v for k, v in val_stats.items()}}.items():
        log(f"  {v:,} {k}")
    if not train_rows:
        raise ChatforgeError("the mixture gave no trainable conversations; check the sets and the context length")
    return train_rows, val_rows, data, spec


def sft(base_run, mix="default", out_dir="runs/sft", log=print, **kwargs) -> Path:
    """Python API (the speedrun calls this): fine-tune `base_run` on mixture `mix` into `out_dir`.

    kwargs are SFTConfig fields (steps, batch_size, lr_frac, device, resume, ...)."""
    return run_sft(SFTConfig(base=str(base_run), out=str(out_dir), mix=mix, **kwargs), log=log)


def run_sft(cfg: SFTConfig, log=print) -> Path:
    import contextlib
    import gc
    import shutil

    import torch

    from chatforge.model import load_run
    from chatforge.posttrain.loop import check_finite, due, is_finished, logged_start, optimizer_step, resume, save_final
    from chatforge.train import distributed as dist
    from chatforge.train.checkpoint import has_checkpoint, save_checkpoint
    from chatforge.train.optim import build_optimizers, set_lr
    from chatforge.train.progress import RunLogger, Throughput, progress_line
    from chatforge.train.trainer import autocast_for

    out, base = Path(cfg.out), Path(cfg.base)
    if not (base / "config.json").exists():
        raise ChatforgeError(f"--base {base} is not a run directory; train a base model with `chatforge train` first")
    if out.resolve() == base.resolve():
        raise ChatforgeError("--out must differ from --base (the base run stays untouched)")
    if is_finished(out) and cfg.resume:  # e.g. killed after the final save, before the checkpoint was removed
        shutil.rmtree(out / "checkpoint", ignore_errors=True)
        log(f"{out} is a finished SFT run; nothing to resume")
        return out
    resuming = cfg.resume and has_checkpoint(out)
    if (out / "config.json").exists() and not resuming:
        raise ChatforgeError(f"{out} already holds a run" + (" (finished: nothing to resume)" if cfg.resume else "")
                             + "; pick another --out or delete it")
    if cfg.batch_size < 1 or cfg.device_batch_size < 1:
        raise ChatforgeError("--batch-size and --device-batch-size must be >= 1")
    if cfg.schedule not in ("linear", "wsd", "cosine", "constant"):
        raise ChatforgeError(f"unknown --schedule {cfg.schedule!r}; use linear, wsd, cosine or constant")
    info = dist.setup(cfg.device)  # joins the torchrun group when launched by torchrun
    device, world, rank = info.device, info.world_size, info.rank
    if world > 1 and cfg.batch_size % (cfg.device_batch_size * world):
        raise ChatforgeError(f"--batch-size {cfg.batch_size} must be a multiple of --device-batch-size x GPUs "
                             f"({cfg.device_batch_size} x {world}) so every rank runs the same number of micro-batches")
    if not info.is_main:
        log = lambda *a, **k: None  # noqa: E731  (rank 0 reports)
    torch.manual_seed(cfg.seed)

    model, tokenizer, base_config = load_run(base, device=device)
    if tokenizer is None:
        raise ChatforgeError(f"{base}/tokenizer is missing; SFT needs the tokenizer the base model was trained with")
    model.train()
    max_seq_len = min(cfg.max_seq_len or model.config.seq_len, model.config.seq_len)
    pad_id = tokenizer.bos_id  # any id works: its targets are -1 and it sits after the real tokens
    autocast = autocast_for(device)

    train_rows, val_rows, data, spec = prepare_data(cfg, tokenizer, max_seq_len, log)
    total = cfg.steps or math.ceil(len(train_rows) / cfg.batch_size)
    optimizers = build_optimizers(model, use_muon=cfg.use_muon, weight_decay=cfg.weight_decay, lr_scale=cfg.lr_frac)
    data_state = {"seed": cfg.seed, "batch_size": cfg.batch_size, "n_train_rows": len(train_rows),
                  "n_train_tokens": sum(len(r.targets) for r in train_rows)}
    meta = dict(kind="sft", base=str(base), base_step=base_config.get("step"), mixture=spec,
                sft={**asdict(cfg), "mix": spec.get("name", "(dict)")},
                max_seq_len=max_seq_len, total_steps=total)

    step = 0
    if resuming:
        step = resume(out, model, optimizers, total, log, data_state, flags="--mix, --batch-size, --seed and context")
    elif cfg.resume:
        log(f"--resume: no checkpoint in {out}, starting from the base model")
    logger = RunLogger(out, enabled=info.is_main, config=meta, resume_step=step if resuming else None)
    ddp = dist.wrap(model, info, "ddp")  # the model itself in a single process
    fwd = torch.compile(ddp, dynamic=True) if cfg.compile else ddp

    def run_eval(at_step):
        t = time.time()
        res = evaluate_loss(model, val_rows, pad_id, device, cfg.device_batch_size, autocast, rank, world)
        logger.log({"step": at_step, "kind": "val", **res, "eval_s": round(time.time() - t, 2)})
        per_set = "  ".join(f"{k[4:]} {v:.3f}" for k, v in sorted(res.items()) if k.startswith("val/"))
        log(f"step {step:>6}/{total} | val loss {res['val_loss']:.4f} | {per_set}")
        return res

    first_val = run_eval(0) if step == 0 and val_rows else None
    thr = Throughput(model.flops_per_token(max_seq_len), device, world)
    t_start, step0, tok_since, loss_since, n_since = time.time(), step, 0, 0.0, 0
    while step < total:
        lrm = _lr_multiplier(cfg, step, total)
        set_lr(optimizers, lrm)
        mbs = micro_batches(train_rows, step_rows(len(train_rows), cfg.batch_size, step, cfg.seed), cfg.device_batch_size)
        n_loss_step = sum(r.n_loss for mb in mbs for r in mb)
        mine = mbs[rank::world]  # this rank's micro-batches (all of them in a single process)
        stats = torch.zeros(2, dtype=torch.float64)  # this rank's share of the step loss, real tokens
        for j, mb in enumerate(mine):
            x, y = collate(mb, pad_id, device, pad_multiple=64 if device.type == "cuda" else 1)
            # DDP all-reduces (averages) gradients on the last micro-batch only; x world turns the
            # average into the sum, so the step's loss is the mean over all its assistant tokens
            sync = contextlib.nullcontext() if world == 1 or j == len(mine) - 1 else ddp.no_sync()
            with sync:
                with autocast():
                    loss = fwd(x, y)
                weight = sum(r.n_loss for r in mb) / n_loss_step
                (loss * (weight * world)).backward()
            stats[0] += float(loss.detach()) * weight
            stats[1] += sum(len(r.targets) for r in mb)  # real tokens, padding not counted
        if world > 1:
            stats = dist.all_reduce_sum(stats.to(device)).cpu()
        step_loss = float(stats[0])
        tok_since += int(stats[1])
        grad_norm = optimizer_step(model, optimizers, cfg.grad_clip)
        step += 1
        check_finite(step_loss, step, "lower --lr-frac or check the data")
        loss_since, n_since = loss_since + step_loss, n_since + 1
        if step % cfg.log_every == 0 or step == total:
            tok_s, mfu = thr.update(tok_since)
            rec = {"step": step, "kind": "train", "loss": loss_since / n_since, "lr_mult": lrm,
                   "grad_norm": grad_norm, "tok_per_s": tok_s} | ({"mfu": mfu} if mfu is not None else {})
            logger.log(rec)
            elapsed = time.time() - t_start
            log(progress_line(step, total, rec["loss"], lrm, tok_s, mfu, elapsed,
                              elapsed / max(1, step - step0) * (total - step)))
            tok_since, loss_since, n_since = 0, 0.0, 0
        if due(cfg.eval_every, step, total) and val_rows:
            run_eval(step)
        if due(cfg.save_every, step, total):
            save_checkpoint(out, model, optimizers, step=step, loader_state=data_state,
                            tokenizer=base / "tokenizer", is_main=info.is_main, run_config=meta)

    last_val = run_eval(step) if val_rows else {}
    if first_val is None:  # resumed: the start-of-run value is in the log
        first_val = logged_start(out)
    vals = lambda r: {k: v for k, v in r.items() if k.startswith("val")}  # noqa: E731
    save_final(out, model, base, step, meta, info.is_main, val_before=vals(first_val), val_after=vals(last_val))
    logger.close()
    # DDP's reducer goes before its process group, as in `chatforge train` (whose wrapper is gone
    # by the time it tears down): a gloo rank was seen to abort at exit with a live reducer
    del ddp, fwd
    gc.collect()
    dist.teardown()  # a barrier, then the group is destroyed
    log(f"SFT run written to {out}: held-out assistant loss {first_val.get('val_loss', float('nan')):.4f} -> "
        f"{last_val.get('val_loss', float('nan')):.4f}")
    if cfg.probes and info.is_main:
        from chatforge.posttrain.probes import run_probes

        run_probes(out, device=str(device), log=log)
    return out
