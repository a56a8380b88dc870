"""Reward model: our Transformer with a scalar head, trained on preference pairs (Bradley-Terry).

- The model is the base/SFT run's GPT plus `score`, a bias-free width -> 1 projection read at
  the last token of a conversation (its <|assistant_end|>): r(prompt, reply). Parameter names
  are HF's LlamaForSequenceClassification (`model.*`, `score.weight`); the unused `lm_head` is
  kept, frozen, so the run directory loads like any other. `score` starts at zero, so the
  untrained model ties every pair (accuracy 50% by definition, not by luck).
- Bradley-Terry: P(chosen > rejected) = sigmoid(r_c - r_r); the loss is -log of it, averaged
  over pairs (TRL's RewardTrainer without its optional centring term).
- Training is SFT's recipe (Muon for hidden matrices, AdamW for the rest and for `score`, a
  fraction of pretraining's rates decaying linearly to 0), one forward per step over the
  chosen and rejected rows together. Validation: held-out pair accuracy, loss and mean margin.
- `half=0|1` trains on one of two disjoint halves of the training pairs: two reward models
  that never saw each other's pairs, one to optimise against and one to judge (guard.py).
- `RewardScorer(RM_RUN).score(items, completions)` is the reward RL calls (`--reward rm:RM_RUN`).
"""

from __future__ import annotations

import json
import math
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from chatforge.common import ChatforgeError
from chatforge.model.gpt import GPT


class RewardModel(GPT):
    def __init__(self, config):
        super().__init__(config)
        if not config.tie_embeddings:  # unused (rewards read the hidden state): no gradient, no optimizer state
            self.lm_head.requires_grad_(False)
        self.score = nn.Linear(config.n_embd, 1, bias=False)
        nn.init.zeros_(self.score.weight)

    def hidden(self, idx):
        """Final-norm hidden states [B, T, C] (GPT.forward without the output head)."""
        from chatforge.posttrain.dpo import hidden_states

        return hidden_states(self, idx)

    def forward(self, idx, last):
        """idx [B, T], last [B] (each row's final real position) -> rewards [B] (fp32)."""
        h = self.hidden(idx)
        h_last = h[torch.arange(idx.size(0), device=idx.device), last]
        return self.score(h_last).float().squeeze(-1)


def bradley_terry_loss(r_chosen, r_rejected):
    """-log sigmoid(r_c - r_r), mean over pairs."""
    return -F.logsigmoid(r_chosen - r_rejected).mean()


def from_lm(gpt: GPT) -> RewardModel:
    """A reward model whose body is `gpt`'s weights and whose score head is zero."""
    p = gpt.lm_head.weight
    with torch.device(p.device):
        rm = RewardModel(gpt.config)
    missing, unexpected = rm.load_state_dict(gpt.state_dict(), strict=False)
    assert missing == ["score.weight"] and not unexpected, (missing, unexpected)
    return rm.to(p.dtype)


def load_reward_model(run_dir, device="cpu"):
    """RM_RUN -> (RewardModel in eval mode, tokenizer, config dict)."""
    from chatforge.model.run_dir import load_run

    run_dir = Path(run_dir)
    cfg_path = run_dir / "config.json"
    if not cfg_path.is_file():
        raise ChatforgeError(f"{run_dir} is not a run directory; train a reward model with `chatforge rm`")
    kind = json.loads(cfg_path.read_text()).get("kind")
    if kind != "rm":
        raise ChatforgeError(f"{run_dir} is a {kind!r} run, not a reward model (`chatforge rm`)")
    return load_run(run_dir, device=device, model_cls=RewardModel)


@torch.no_grad()
def pair_rewards(rm, pairs, pad_id, device, batch_size=16, autocast=None):
    """Rewards of every pair's chosen and rejected reply -> (r_chosen [N], r_rejected [N]) on CPU."""
    import contextlib

    from chatforge.posttrain.pairs import pair_batch

    autocast = autocast or contextlib.nullcontext
    was = rm.training
    rm.eval()
    rc, rr = [], []
    for s in range(0, len(pairs), batch_size):
        chunk = pairs[s:s + batch_size]
        x, _, last = pair_batch(chunk, pad_id, device)
        with autocast():
            r = rm(x, last).cpu()
        rc.append(r[:len(chunk)])
        rr.append(r[len(chunk):])
    rm.train(was)
    return torch.cat(rc), torch.cat(rr)


def preference_metrics(r_chosen, r_rejected) -> dict:
    margin = r_chosen - r_rejected
    return {"val_accuracy": float((margin > 0).float().mean()), "val_loss": float(bradley_terry_loss(r_chosen, r_rejected)),
            "val_margin": float(margin.mean()), "val_pairs": len(margin)}


# ---------------------------------------------------------------------------------------------
# training


@dataclass
class RMConfig:
    base: str                      # base or SFT run to start from
    pairs: str                     # preference pairs (JSONL, or 'hh-rlhf')
    out: str                       # reward-model run directory
    steps: int | None = None       # default: one pass over the training pairs
    batch_size: int = 16           # pairs per optimizer step
    device_batch_size: int = 8     # pairs per forward (gradient accumulation)
    max_seq_len: int | None = None # default: the model's context; longer pairs are skipped
    lr_frac: float = 0.02          # fraction of pretraining's learning rates
    head_lr: float = 1e-3          # AdamW rate of the score head (new weights: a rate of their own)
    val_frac: float = 0.1          # held-out share of the pairs
    max_val: int = 256             # at most this many held out
    half: int | None = None        # train on half 0 or 1 of the training pairs (the guard's judge)
    limit: int | None = None       # read at most this many pairs
    eval_every: int = 50
    save_every: int = 200
    log_every: int = 10
    device: str | None = None
    seed: int = 0
    resume: bool = False


def load_split_pairs(path, tokenizer, max_len, val_frac, max_val, seed, limit=None, half=None, log=print):
    """Read, split (held-out first, so every half and every run shares it), tokenize; reports what
    was skipped. -> (train PairIds, val PairIds, stats)."""
    from chatforge.posttrain.pairs import format_stats, read_pairs, split_pairs, tokenize_pairs

    stats = Counter()
    pairs = read_pairs(path, stats, limit=limit)
    train, val = split_pairs(pairs, min(val_frac, max_val / max(1, len(pairs))) if val_frac else 0, seed)
    if half is not None:
        if half not in (0, 1):
            raise ChatforgeError("--half must be 0 or 1")
        train = train[half::2]  # train is already shuffled: alternate items are a random halving
    train_ids = tokenize_pairs(tokenizer, train, max_len, stats)
    val_ids = tokenize_pairs(tokenizer, val, max_len, stats)
    log(f"pairs from {path}: {format_stats(stats)} -> {len(train_ids):,} train, {len(val_ids):,} held out"
        + (f" (half {half} of the training pairs)" if half is not None else ""))
    if not train_ids:
        raise ChatforgeError("no training pairs fit; raise --max-seq-len or check the pairs file")
    return train_ids, val_ids, stats


def run_rm(cfg: RMConfig, log=print) -> Path:
    from chatforge.common import default_device
    from chatforge.model import load_run
    from chatforge.posttrain.loop import (check_dirs, check_finite, due, is_finished, logged_start, optimizer_step,
                                          resume, save_final)
    from chatforge.posttrain.pairs import pair_batch
    from chatforge.posttrain.sft import step_rows
    from chatforge.train.checkpoint import has_checkpoint, save_checkpoint
    from chatforge.train.optim import build_optimizers, set_lr
    from chatforge.train.progress import RunLogger
    from chatforge.train.schedule import lr_multiplier
    from chatforge.train.trainer import autocast_for

    out, base = Path(cfg.out), Path(cfg.base)
    check_dirs(base, out, cfg.resume)
    if is_finished(out):
        log(f"{out} is a finished reward model; nothing to do")
        return out
    resuming = cfg.resume and has_checkpoint(out)
    device = torch.device(cfg.device or default_device())
    torch.manual_seed(cfg.seed)
    gpt, tokenizer, base_config = load_run(base, device=device)
    if tokenizer is None:
        raise ChatforgeError(f"{base}/tokenizer is missing")
    rm = from_lm(gpt).train()
    del gpt
    max_len = min(cfg.max_seq_len or rm.config.seq_len, rm.config.seq_len)
    pad_id = tokenizer.bos_id
    autocast = autocast_for(device)
    train, val, stats = load_split_pairs(cfg.pairs, tokenizer, max_len, cfg.val_frac, cfg.max_val, cfg.seed,
                                         cfg.limit, cfg.half, log)
    total = cfg.steps or math.ceil(len(train) / cfg.batch_size)
    optimizers = build_optimizers(rm, lr_scale=cfg.lr_frac)
    optimizers[0].add_param_group({"params": [rm.score.weight], "lr": cfg.head_lr, "initial_lr": cfg.head_lr,
                                   "weight_decay": 0.0})
    data_state = {"seed": cfg.seed, "batch_size": cfg.batch_size, "n_train": len(train)}
    meta = dict(kind="rm", base=str(base), pairs=str(cfg.pairs), rm={**asdict(cfg)}, max_seq_len=max_len,
                total_steps=total, pair_stats=dict(stats), n_train_pairs=len(train), n_val_pairs=len(val))
    step = resume(out, rm, optimizers, total, log) if resuming else 0
    logger = RunLogger(out, config=meta, resume_step=step if resuming else None)

    def run_eval(at):
        res = preference_metrics(*pair_rewards(rm, val, pad_id, device, cfg.device_batch_size * 2, autocast))
        logger.log({"step": at, "kind": "val", **res})
        log(f"step {at:>5}/{total} | held-out pair accuracy {res['val_accuracy']:.1%} | loss {res['val_loss']:.4f} "
            f"| margin {res['val_margin']:+.3f}")
        return res

    first = run_eval(0) if step == 0 and val else None
    t0 = time.time()
    while step < total:
        set_lr(optimizers, lr_multiplier(step, total, kind="wsd", warmdown=1.0))
        idx = step_rows(len(train), cfg.batch_size, step, cfg.seed)
        loss_sum, acc = 0.0, 0.0
        for s in range(0, len(idx), cfg.device_batch_size):
            chunk = [train[i] for i in idx[s:s + cfg.device_batch_size]]
            x, _, last = pair_batch(chunk, pad_id, device)
            with autocast():
                r = rm(x, last)
            rc, rr = r[:len(chunk)], r[len(chunk):]
            loss = bradley_terry_loss(rc, rr)
            (loss * len(chunk) / len(idx)).backward()
            loss_sum += loss.item() * len(chunk) / len(idx)
            acc += float((rc > rr).float().sum()) / len(idx)
        grad_norm = optimizer_step(rm, optimizers, grad_clip=1.0)
        step += 1
        check_finite(loss_sum, step, "lower --lr-frac")
        if step % cfg.log_every == 0 or step == total:
            logger.log({"step": step, "kind": "train", "loss": loss_sum, "accuracy": acc, "grad_norm": grad_norm})
            log(f"step {step:>5}/{total} | loss {loss_sum:.4f} | batch accuracy {acc:.0%} | {time.time() - t0:.0f}s")
        if due(cfg.eval_every, step, total) and val:
            run_eval(step)
        if due(cfg.save_every, step, total):
            save_checkpoint(out, rm, optimizers, step=step, loader_state=data_state, tokenizer=base / "tokenizer",
                            run_config=meta)
    last = run_eval(step) if val else {}
    if first is None:  # resumed: the start-of-run evaluation is in the log
        first = logged_start(out)
    save_final(out, rm, base, step, meta, val_before=first, val_after=last)
    logger.close()
    log(f"reward model written to {out}: held-out pair accuracy {first.get('val_accuracy', float('nan')):.1%} -> "
        f"{last.get('val_accuracy', float('nan')):.1%} (chance 50%)")
    return out


# ---------------------------------------------------------------------------------------------
# scoring


def _prompt_messages(item) -> list[dict]:
    if isinstance(item, str):
        return [{"role": "user", "content": item}]
    if isinstance(item, list):
        return item
    if isinstance(item, dict):
        for key in ("messages", "prompt"):
            if key in item:
                return _prompt_messages(item[key])
    raise ChatforgeError(f"cannot read a prompt from {type(item).__name__}; give messages, a string or {{'prompt': ...}}")


class RewardScorer:
    """Scores (prompt, reply) with a trained reward model: `score(items, completions) -> [float]`.

    An item is a prompt: a string, a list of messages, or a dict with 'messages' / 'prompt'. A
    completion is the assistant's reply text. Replies longer than the context keep their start."""

    def __init__(self, run_dir, device="cpu", batch_size: int = 16):
        self.model, self.tokenizer, self.config = load_reward_model(run_dir, device)
        self.model.requires_grad_(False)
        self.device, self.batch_size = torch.device(device), batch_size
        self.max_len = self.config.get("max_seq_len") or self.model.config.seq_len

    def conversation_ids(self, item, completion: str) -> list[int]:
        msgs = _prompt_messages(item) + [{"role": "assistant", "content": completion or " "}]
        ids, _ = self.tokenizer.render_conversation(msgs)
        if len(ids) > self.max_len:  # keep the reply's start and its end token, drop the prompt's start
            ids = ids[len(ids) - self.max_len:]
        return ids

    @torch.no_grad()
    def score(self, items, completions) -> list[float]:
        seqs = [self.conversation_ids(it, c) for it, c in zip(items, completions)]
        out = []
        for s in range(0, len(seqs), self.batch_size):
            chunk = seqs[s:s + self.batch_size]
            x = torch.full((len(chunk), max(map(len, chunk))), self.tokenizer.bos_id, dtype=torch.long)
            for i, ids in enumerate(chunk):
                x[i, :len(ids)] = torch.tensor(ids)
            last = torch.tensor([len(ids) - 1 for ids in chunk])
            ctx = torch.autocast("cuda", dtype=torch.bfloat16) if self.device.type == "cuda" else _null()
            with ctx:
                out += self.model(x.to(self.device), last.to(self.device)).tolist()
        return out


def _null():
    import contextlib

    return contextlib.nullcontext()


# ---------------------------------------------------------------------------------------------
# win rate of one chat model against another, as a reward model judges it


def greedy_replies(run_dir, prompts: list[list[dict]], max_new_tokens: int = 128, device="cpu") -> list[str]:
    """Each prompt's greedy reply from RUN's model (tools off: the judge reads plain text)."""
    from chatforge.infer.engine import Engine, SamplingParams

    engine = Engine.from_run(run_dir, device=device, tools=False)
    params = SamplingParams(max_tokens=max_new_tokens, temperature=0.0)
    requests = []
    for msgs in prompts:
        try:
            requests.append(engine.chat_prompt(msgs))
        except ChatforgeError:  # the prompt does not fit the context: no reply
            requests.append(None)
    return [engine.complete(ids, params, 1)[0].text if ids is not None else "" for ids in requests]


def win_rate(judge_run, run_a, run_b, pairs="hh-rlhf", n: int = 64, max_new_tokens: int = 128, device="cpu",
             seed: int = 0) -> dict:
    """How often the judge scores run A's greedy reply above run B's on n held-out prompts of
    `pairs` (the prompts of pairs the reward models held out: prompt_task's split); ties count
    half. E.g. A = the DPO run, B = its SFT run, judge = a reward model trained on other pairs."""
    from chatforge.posttrain.pairs import prompt_task

    prompts = [p.messages() for p in prompt_task(pairs, seed).heldout(n)]
    scorer = RewardScorer(judge_run, device)
    a = greedy_replies(run_a, prompts, max_new_tokens, device)
    b = greedy_replies(run_b, prompts, max_new_tokens, device)
    sa, sb = scorer.score(prompts, a), scorer.score(prompts, b)
    wins = sum(x > y for x, y in zip(sa, sb)) + 0.5 * sum(x == y for x, y in zip(sa, sb))
    return {"win_rate": wins / len(prompts), "n": len(prompts), "judge": str(judge_run), "a": str(run_a),
            "b": str(run_b), "score_a": sum(sa) / len(sa), "score_b": sum(sb) / len(sb),
            "samples": [{"prompt": p[-1]["content"], "a": x, "b": y} for p, x, y in zip(prompts[:3], a, b)]}
