"""GRPO: reinforcement learning on problems a program can check, our engine doing the rollouts.

    chatforge rl --base SFT_RUN --task arithmetic --out RL_RUN

A step: `prompts` problems from the task (chatforge/posttrain/tasks.py), `group` samples of each
from chatforge.infer's Engine (batched, KV cache, python tool calls run mid-rollout), a reward per
sample, advantages within each problem's group, a policy-gradient update on the sampled tokens.
How it departs from textbook GRPO (DeepSeekMath) and why, as nanochat's chat_rl.py does:
1. Advantages are mean-centred in the group, A = r - mean(r_group). Dividing by the group's std is
   an option (--std-norm), off by default: it blows up near-unanimous groups (1 right of 16 gets
   A = 3.9) and so over-weights problems that are nearly always or never solved (Dr. GRPO).
2. Token-level normalisation (DAPO): the loss is the sum over every sampled token of the step
   of -A * ratio, divided by the number of sampled tokens of the step, so a long answer counts
   per token, not as one sequence averaged down.
3. On-policy by default (--updates 1): the ratio is exactly 1 and clipping is a no-op. With
   --updates N > 1 each batch is reused N times, the ratio to the log-probs before the first
   update clipped to [1 - clip, 1 + clip] (PPO, --clip 0.2).
4. No KL penalty by default (--kl 0): a verifier cannot be fooled by drifting style, and the
   penalty slows learning. The KL to the reference (the starting model; k3 estimator, per token)
   is still measured and logged every step; --kl C adds C * KL to the loss (RLHF with a learned
   reward wants it: issue 20 turns it on).
5. Only tokens the model wrote get a gradient: prompt tokens and the tool output the engine
   forced (Completion.logprobs is None there) are masked out; the tool-call tokens themselves
   and <|assistant_end|> are trained.
6. A rollout whose tool call failed (an error, a timeout) gets reward 0 whatever it answered.
   Pure arithmetic tool calls are evaluated in process on the AST (the same text the sandbox
   prints, tested), anything else runs in the sandbox: a sandbox process costs ~0.2 s.

Trainer and engine: the trainer holds the fp32 model; the engine its own copy (bf16 on CUDA).
`sync_engine_weights(model, engine)` copies the trainer's tensors into the engine's in place
(copy_, never a reload) after every optimizer step, so the decoder's buffers and CUDA graphs stay
valid (its fused q/k/v copies are re-made when it sees the weights' versions move).

Interfaces other stages build on:
- Reward: `resolve_reward(spec, device)` maps `--reward` to an object with
  `score(problems: list[Problem], completions: list[Completion]) -> list[float]`, one float per
  completion (problems repeated per sample). "verifier" (default): 1.0 when the problem's verifier
  accepts the reply's text, else 0.0. "rm:RM_RUN": `ModelReward` over `chatforge.posttrain.reward_model.
  RewardScorer(RM_RUN)` (the reward-model stage), which scores (prompt messages, reply text).
- `RLConfig.on_eval(step, record) -> bool`: called after each held-out evaluation with its log
  record; returning True stops the run there (it is saved as the final model). With
  `snapshots=True` each evaluation also writes OUT/snapshots/step_N.safetensors, so a guard
  against reward hacking can pick the best one.
Under torchrun each rank rolls out its share of the step's problems; gradients are summed across
ranks (token-normalised by the global count). Held-out evaluation: `pass@1` (mean of k samples
at the rollout temperature), `pass@k`, and greedy accuracy with a Wilson 95% interval.
"""

from __future__ import annotations

import copy
import json
import math
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

from chatforge.common import ChatforgeError
from chatforge.posttrain.tasks import Problem, Task, get_task


@dataclass
class RLConfig:
    base: str                      # SFT run directory
    out: str                       # RL run directory to write
    task: str = "arithmetic"       # tasks.get_task spec: gsm8k | arithmetic[:LEVEL] | jsonl:PATH
    reward: str = "verifier"       # verifier | rm:RM_RUN
    steps: int = 50
    prompts: int = 8               # problems per step
    group: int = 8                 # samples per problem (G)
    max_new_tokens: int = 128
    temperature: float = 1.0
    top_k: int | None = 50
    lr_frac: float = 0.05          # fraction of pretraining's learning rates (nanochat RL)
    use_muon: bool = True
    updates: int = 1               # gradient updates per batch; > 1 turns on ratio clipping
    clip: float = 0.2
    kl: float = 0.0                # KL-to-reference coefficient in the loss
    std_norm: bool = False         # divide advantages by the group's std
    grad_clip: float = 1.0
    device_batch_size: int = 32    # rollouts per forward/backward
    rollout_batch: int = 256       # rows per engine call (eval chunks)
    eval_every: int = 10           # steps between held-out evaluations (0: only before and after)
    eval_problems: int = 200
    pass_k: int = 4
    eval_max_new_tokens: int | None = None  # default: max_new_tokens
    save_every: int = 50
    log_every: int = 1
    tools: bool = True
    stop_token_ids: tuple[int, ...] | None = None  # None: the engine's (<|assistant_end|>, turn starts, <|bos|>)
    device: str | None = None
    seed: int = 0
    resume: bool = False
    snapshots: bool = False        # save weights at each evaluation (OUT/snapshots/)
    on_eval: Callable[[int, dict], bool] | None = field(default=None, repr=False)


# ---------------------------------------------------------------------------------------------
# rewards


class VerifierReward:
    """1.0 when the problem's verifier accepts the reply's text (tool calls and output excluded)."""

    def score(self, problems: list[Problem], completions) -> list[float]:
        return [float(p.check(c.text)) for p, c in zip(problems, completions)]


class ModelReward:
    """A learned reward model's score of (the prompt's messages, the reply's text)."""

    def __init__(self, scorer):
        self.scorer = scorer  # anything with score(list of message lists, list of reply texts)

    def score(self, problems: list[Problem], completions) -> list[float]:
        return [float(x) for x in self.scorer.score([p.messages() for p in problems], [c.text for c in completions])]


def resolve_reward(spec: str, device=None):
    """`--reward` -> an object with score(problems, completions) -> list[float]."""
    if spec == "verifier":
        return VerifierReward()
    if spec.startswith("rm:") and spec[3:]:
        try:
            from chatforge.posttrain.reward_model import RewardScorer
        except ImportError:
            raise ChatforgeError("--reward rm:RUN needs chatforge.posttrain.reward_model (the reward-model "
                                 "stage), which this install lacks; use --reward verifier") from None
        return ModelReward(RewardScorer(spec[3:], device=device or "cpu"))
    raise ChatforgeError(f"unknown --reward {spec!r}; use verifier or rm:RM_RUN")


_TOOL_FAILED = re.compile(r"\[(?:[^\[\]]*; )?(?:timed out, process killed|exit code -?\d+)\]\s*$|^\[tool \w+ failed: ")


def tool_failed(completion) -> bool:
    """Did any tool call of this rollout error or time out? (the sandbox's notes, infer/sandbox.py)"""
    return any(p["type"].endswith("_output") and _TOOL_FAILED.search(p["text"]) for p in completion.parts)


def tool_calls(completion) -> int:
    return sum(p["type"] == "python" for p in completion.parts)


def rollout_tools():
    """The python tool for rollouts: a plain arithmetic expression is evaluated on its AST in this
    process (the text the sandbox would print: repr of the value and a newline), anything else
    goes to the sandbox."""
    from chatforge.infer.tools import Tool, ToolRegistry, python_tool
    from chatforge.posttrain.sources import arithmetic_value

    sandboxed = python_tool()

    def run(code: str) -> str:
        value = arithmetic_value(code)
        if value is not None and not isinstance(value, bool) and len(repr(value)) < 4000:
            return repr(value) + "\n"
        return sandboxed.run(code)

    return ToolRegistry([Tool(sandboxed.name, sandboxed.start, sandboxed.end, run)])


# ---------------------------------------------------------------------------------------------
# the algorithm's pieces


def group_advantages(rewards, std_norm: bool = False, eps: float = 1e-4):
    """rewards [P, G] -> advantages [P, G]: r - mean of its group (/ (std + eps) with std_norm)."""
    adv = rewards - rewards.mean(dim=1, keepdim=True)
    if std_norm:
        adv = adv / (rewards.std(dim=1, keepdim=True, unbiased=False) + eps)
    return adv


@dataclass
class Rollout:
    ids: list[int]            # prompt + completion
    targets: list[int]        # len(ids) - 1: the next token where the model sampled it, else -1
    advantage: float = 0.0
    old_logp: list | None = None  # per target position, for --updates > 1

    @property
    def n_loss(self) -> int:
        return sum(t != -1 for t in self.targets)


def rollout_row(prompt: list[int], completion, advantage: float = 0.0) -> Rollout:
    """Inputs and targets of one rollout: targets only where the model sampled the token (forced
    tool output has logprob None, the prompt has none at all)."""
    ids = list(prompt) + list(completion.token_ids)
    targets = [-1] * (len(prompt) - 1)
    targets += [t if lp is not None else -1 for t, lp in zip(completion.token_ids, completion.logprobs)]
    return Rollout(ids, targets, advantage)


def token_loss(logits, targets, adv, old_logp=None, ref_logp=None, clip: float = 0.2, kl: float = 0.0):
    """Per-token GRPO loss [B, T] (0 where targets == -1) and stats.

    logits [B, T, V], targets [B, T] (-1: no gradient), adv [B] per row, old_logp / ref_logp
    [B, T] or None (None: on-policy, ratio 1 / no reference). Sum it and divide by the step's
    sampled-token count (token-level normalisation)."""
    import torch

    from chatforge.posttrain.loop import token_logprobs

    mask = targets != -1
    logp = token_logprobs(logits, targets)
    old = logp.detach() if old_logp is None else old_logp
    ratio = torch.exp(logp - old)
    a = adv[:, None]
    pg = -torch.minimum(ratio * a, ratio.clamp(1 - clip, 1 + clip) * a)
    stats = {"clipped": float(((ratio - 1).abs() > clip)[mask].sum())}
    loss = pg
    if ref_logp is not None:
        d = ref_logp - logp
        k3 = torch.exp(d) - d - 1  # unbiased, always >= 0 (Schulman's k3)
        stats["kl_sum"] = float(k3.detach()[mask].sum())
        if kl:
            loss = loss + kl * k3
    with torch.no_grad():
        lg = logits.float()[mask]
        stats["entropy_sum"] = float((torch.logsumexp(lg, -1) - (lg.softmax(-1) * lg).sum(-1)).sum())
    return loss * mask, logp.detach(), stats


def sync_engine_weights(model, engine) -> None:
    """THE trainer -> engine hand-off: copy every trained tensor into the engine's model in place
    (copy_ casts to its dtype). The engine's decoder sees the weights' versions move and re-makes
    its fused copies at the next prefill; its buffers and CUDA graphs keep their addresses."""
    import torch

    src = dict(model.named_parameters())
    with torch.no_grad():
        for name, p in engine.model.named_parameters():
            p.copy_(src[name])


def wilson(correct: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score 95% interval of a proportion."""
    if n == 0:
        return 0.0, 1.0
    p = correct / n
    d = 1 + z * z / n
    c = (p + z * z / (2 * n)) / d
    h = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    return max(0.0, c - h), min(1.0, c + h)


# ---------------------------------------------------------------------------------------------
# rollouts and held-out evaluation


def generate(engine, prompts: list[list[int]], n: int, max_tokens: int, temperature: float, top_k, tools: bool,
             chunk_rows: int = 256, stop_token_ids=None) -> list[list]:
    """n completions of each prompt, in engine calls of at most ~chunk_rows rows."""
    from chatforge.infer.engine import Request, SamplingParams

    out = []
    per_call = max(1, chunk_rows // n)
    for s in range(0, len(prompts), per_call):
        reqs = [Request(p, SamplingParams(max_tokens=max_tokens, temperature=temperature,
                                          top_k=top_k if temperature > 0 else None, use_tools=tools,
                                          stop_token_ids=stop_token_ids, stream_text=False), n)
                for p in prompts[s:s + per_call]]
        done = engine.run_to_completion(reqs)
        out += [done[r.id] for r in reqs]
    return out


def prompt_ids(engine, problem: Problem, max_new_tokens: int) -> list[int] | None:
    """The problem's chat prompt, or None when it leaves no room for max_new_tokens (and tool output)
    in the model's context: such problems are counted and skipped."""
    ids = engine.tok.render_for_completion(problem.messages())
    return ids if len(ids) + max_new_tokens + 8 <= engine.max_context else None


def evaluate_heldout(engine, problems: list[Problem], k: int, max_tokens: int, temperature: float, top_k,
                     tools: bool, chunk_rows: int = 256, rank: int = 0, world: int = 1, device="cpu") -> dict:
    """Greedy accuracy (with a Wilson 95% interval), pass@1 and pass@k of k samples, on `problems`."""
    import torch

    from chatforge.train.distributed import all_reduce_sum

    mine = problems[rank::world]
    prompts = [prompt_ids(engine, p, max_tokens) for p in mine]
    mine, prompts = [p for p, ids in zip(mine, prompts) if ids], [ids for ids in prompts if ids]
    greedy = generate(engine, prompts, 1, max_tokens, 0.0, None, tools, chunk_rows)
    sampled = generate(engine, prompts, k, max_tokens, temperature, top_k, tools, chunk_rows) if k else [[]] * len(mine)
    sums = torch.zeros(6, dtype=torch.float64)  # greedy right, pass@1 sum, pass@k, n, length sum, tool rows
    for p, g, ss in zip(mine, greedy, sampled):
        oks = [p.check(c.text) for c in ss]
        sums += torch.tensor([float(p.check(g[0].text)), sum(oks) / max(1, k), float(any(oks)), 1.0,
                              g[0].completion_tokens, float(tool_calls(g[0]) > 0)], dtype=torch.float64)
    if world > 1:
        sums = all_reduce_sum(sums.to(device)).cpu()
    right, p1, pk, n, length, tool_rows = sums.tolist()
    n = int(n)
    lo, hi = wilson(int(right), n)
    return {"greedy_acc": right / max(1, n), "n": n, "correct": int(right), "ci95": [lo, hi],
            "pass@1": p1 / max(1, n), f"pass@{k}": pk / max(1, n), "k": k,
            "eval_response_len": length / max(1, n), "eval_tool_call_rate": tool_rows / max(1, n)}


# ---------------------------------------------------------------------------------------------
# the run


def rl(base_run, task="arithmetic", out_dir="runs/rl", log=print, **kwargs) -> Path:
    """Python API: GRPO from `base_run` on `task` into `out_dir`; kwargs are RLConfig fields."""
    return run_rl(RLConfig(base=str(base_run), out=str(out_dir), task=task, **kwargs), log=log)


def _check_config(cfg: RLConfig) -> None:
    for name in ("steps", "prompts", "group", "max_new_tokens", "updates", "device_batch_size", "rollout_batch"):
        if getattr(cfg, name) < 1:
            raise ChatforgeError(f"--{name.replace('_', '-')} must be >= 1")
    if cfg.group < 2:
        raise ChatforgeError("--group must be >= 2: advantages compare samples of the same problem")
    if not 0 <= cfg.temperature <= 100 or cfg.temperature == 0:
        raise ChatforgeError("--temperature must be in (0, 100]: RL needs varied samples")
    if not (cfg.reward == "verifier" or (cfg.reward.startswith("rm:") and len(cfg.reward) > 3)):
        raise ChatforgeError(f"unknown --reward {cfg.reward!r}; use verifier or rm:RM_RUN")
    if cfg.kl < 0 or not 0 < cfg.clip < 1:
        raise ChatforgeError("--kl must be >= 0 and --clip in (0, 1)")


def run_rl(cfg: RLConfig, log=print) -> Path:
    import shutil

    import torch

    from chatforge.infer.engine import Engine
    from chatforge.model import load_run
    from chatforge.model.run_dir import model_state_dict, save_weights
    from chatforge.posttrain.loop import (due, is_finished, logged_start, optimizer_step, resume, save_final,
                                         token_logprobs)
    from chatforge.posttrain.sft import collate, step_rows
    from chatforge.train import distributed as dist
    from chatforge.train.checkpoint import has_checkpoint, save_checkpoint
    from chatforge.train.optim import build_optimizers, set_lr
    from chatforge.train.progress import RunLogger, fmt_duration
    from chatforge.train.trainer import autocast_for

    # --- everything a user can get wrong, before any work --------------------------------------
    _check_config(cfg)
    out, base = Path(cfg.out), Path(cfg.base)
    task: Task = get_task(cfg.task, cfg.seed)
    if not (base / "config.json").exists():
        raise ChatforgeError(f"--base {base} is not a run directory; make a chat model with `chatforge sft` first")
    if out.resolve() == base.resolve():
        raise ChatforgeError("--out must differ from --base (the base run stays untouched)")
    if is_finished(out, "heldout_after") and cfg.resume:
        shutil.rmtree(out / "checkpoint", ignore_errors=True)
        log(f"{out} is a finished RL run; nothing to resume")
        return out
    resuming = cfg.resume and has_checkpoint(out)
    if (out / "config.json").exists() and not resuming:
        raise ChatforgeError(f"{out} already holds a run; pick another --out, delete it, or pass --resume")
    info = dist.setup(cfg.device)
    device, world, rank = info.device, info.world_size, info.rank
    if cfg.prompts % world:
        raise ChatforgeError(f"--prompts {cfg.prompts} must be a multiple of the number of processes ({world}) "
                             "so every rank rolls out the same number of problems")
    if not info.is_main:
        log = lambda *a, **k: None  # noqa: E731  (rank 0 reports)
    reward_fn = resolve_reward(cfg.reward, device)

    # --- models: the trained policy (fp32), the engine's copy, the frozen reference -------------
    model, tok, base_config = load_run(base, device=device)
    if tok is None:
        raise ChatforgeError(f"{base}/tokenizer is missing; RL needs the tokenizer the model was trained with")
    model.train()
    cuda = device.type == "cuda"
    engine_model = copy.deepcopy(model).eval().requires_grad_(False)
    if cuda:
        engine_model.to(torch.bfloat16)
    engine = Engine(engine_model, tok, tools=rollout_tools() if cfg.tools else None)
    ref = copy.deepcopy(model).eval().requires_grad_(False)  # the starting model, for KL
    autocast = autocast_for(device)
    heldout = task.heldout(cfg.eval_problems)
    fits = [p for p in heldout if prompt_ids(engine, p, cfg.eval_max_new_tokens or cfg.max_new_tokens)]
    if len(fits) < len(heldout):
        log(f"{len(heldout) - len(fits)} of {len(heldout)} held-out problems do not fit the context: skipped")
    heldout = fits
    eval_tokens = cfg.eval_max_new_tokens or cfg.max_new_tokens

    optimizers = build_optimizers(model, use_muon=cfg.use_muon, weight_decay=0.0, lr_scale=cfg.lr_frac)
    data_state = {"task": task.name, "seed": cfg.seed, "prompts": cfg.prompts, "group": cfg.group}
    meta = dict(kind="rl", base=str(base), base_kind=base_config.get("kind"), base_step=base_config.get("step"),
                task=task.name, rl={k: v for k, v in asdict(cfg).items() if k != "on_eval"})
    step = 0
    if resuming:
        step = resume(out, model, optimizers, cfg.steps, log, data_state, settings="settings",
                      flags="--task, --seed, --prompts and --group")
        sync_engine_weights(model, engine)
    logger = RunLogger(out, enabled=info.is_main, config=meta, resume_step=step if resuming else None)

    # a task without answers to check (RLHF's prompts: the reward model is the reward) has no accuracy
    # to measure; its evaluations only save snapshots for on_eval (the guard scores its own replies)
    checkable = task.checkable

    def run_eval(at_step) -> dict:
        t = time.time()
        res = evaluate_heldout(engine, heldout, cfg.pass_k, eval_tokens, cfg.temperature, cfg.top_k, cfg.tools,
                               cfg.rollout_batch, rank, world, device) if checkable else {}
        rec = {"step": at_step, "kind": "eval", **res, "eval_s": round(time.time() - t, 2)}
        logger.log(rec)
        if checkable:
            passk = f" pass@{cfg.pass_k} {res[f'pass@{cfg.pass_k}']:.1%}" if cfg.pass_k else ""
            log(f"step {at_step:>5}/{cfg.steps} | held-out greedy {res['greedy_acc']:.1%} "
                f"[{res['ci95'][0]:.1%}, {res['ci95'][1]:.1%}] n={res['n']} | pass@1 {res['pass@1']:.1%}"
                f"{passk} | {rec['eval_s']:.1f}s")
        if cfg.snapshots and info.is_main:
            save_weights(out / "snapshots" / f"step_{at_step:06d}.safetensors", model_state_dict(model))
        return rec

    first = run_eval(0) if step == 0 else None
    t_start, step0 = time.time(), step
    stop = False
    while step < cfg.steps and not stop:
        lrm = 1.0 - step / cfg.steps  # linear decay to 0
        set_lr(optimizers, lrm)
        # --- rollouts: this rank's share of the step's problems, G samples each -----------------
        t0 = time.time()
        if task.n_train:
            idx = step_rows(task.n_train, cfg.prompts, step, cfg.seed)
        else:
            idx = list(range(step * cfg.prompts, (step + 1) * cfg.prompts))
        problems = [task.problem(i) for i in idx][rank::world]
        torch.manual_seed(cfg.seed * 1_000_003 + step * world + rank)  # the engine samples from torch's RNG
        prompts = [prompt_ids(engine, p, cfg.max_new_tokens) for p in problems]
        too_long = sum(ids is None for ids in prompts)  # counted and skipped, never a crash
        problems, prompts = [p for p, ids in zip(problems, prompts) if ids], [ids for ids in prompts if ids]
        groups = generate(engine, prompts, cfg.group, cfg.max_new_tokens, cfg.temperature, cfg.top_k, cfg.tools,
                          max(cfg.rollout_batch, cfg.group), cfg.stop_token_ids)
        flat_p = [p for p, g in zip(problems, groups) for _ in g]
        flat_c = [c for g in groups for c in g]
        rewards = torch.tensor(reward_fn.score(flat_p, flat_c), dtype=torch.float32)
        failed = torch.tensor([tool_failed(c) for c in flat_c])
        rewards[failed] = 0.0
        adv = group_advantages(rewards.view(len(problems), cfg.group), cfg.std_norm).view(-1)
        rows = [rollout_row(pr, c) for pr, g in zip(prompts, groups) for c in g]
        for r, a in zip(rows, adv.tolist()):
            r.advantage = a
        t_roll = time.time() - t0
        sampled = sum(c.completion_tokens for c in flat_c)
        # --- policy update(s) on the sampled tokens ----------------------------------------------
        t1 = time.time()
        stats = torch.tensor([float(sum(r.n_loss for r in rows)), float(rewards.sum()), float((rewards ** 2).sum()),
                              float(len(rows)), float(sampled), float(sum(tool_calls(c) > 0 for c in flat_c)),
                              float(failed.sum()), float(sum(c.finish_reason == "length" for c in flat_c)),
                              float(too_long), 0.0, 0.0, 0.0, 0.0], dtype=torch.float64)
        if world > 1:
            stats[:9] = dist.all_reduce_sum(stats[:9].to(device)).cpu()
        n_tokens = max(1.0, float(stats[0]))
        order = sorted(range(len(rows)), key=lambda i: len(rows[i].ids))
        mbs = [[rows[i] for i in order[s:s + cfg.device_batch_size]]
               for s in range(0, len(order), cfg.device_batch_size)]
        if cfg.updates > 1:  # the log-probs the clipped ratio compares against
            with torch.no_grad():
                for mb in mbs:
                    x, y = collate(mb, tok.bos_id, device)
                    with autocast():
                        logits = model(x)
                    lp = token_logprobs(logits, y)
                    for r, row_lp in zip(mb, lp):
                        r.old_logp = row_lp
        loss_sum, grad_norm, ref_lps = 0.0, 0.0, {}
        for u in range(cfg.updates if stats[0] > 0 else 0):  # nothing sampled anywhere: no update
            for j, mb in enumerate(mbs):
                x, y = collate(mb, tok.bos_id, device)
                a = torch.tensor([r.advantage for r in mb], device=device)
                if j not in ref_lps:  # the reference's log-probs: KL is logged always, penalised with --kl
                    with torch.no_grad(), autocast():
                        ref_logits = ref(x)
                    ref_lps[j] = token_logprobs(ref_logits, y)
                    del ref_logits
                ref_lp = ref_lps[j]
                old = torch.stack([r.old_logp for r in mb]) if cfg.updates > 1 else None
                with autocast():
                    logits = model(x)
                per_tok, _, st = token_loss(logits, y, a, old, ref_lp, cfg.clip, cfg.kl)
                loss = per_tok.sum() / n_tokens * world  # summed over ranks below: the global mean
                loss.backward()
                loss_sum += float(loss.detach()) / world
                if u == 0:
                    stats[9] += st["entropy_sum"]
                    stats[10] += st.get("kl_sum", 0.0)
                stats[11] += st["clipped"]
            if world > 1:
                for p in model.parameters():  # a rank with nothing to train on still joins every reduce
                    p.grad = dist.all_reduce_sum(p.grad if p.grad is not None else torch.zeros_like(p)) / world
            grad_norm = optimizer_step(model, optimizers, cfg.grad_clip)
        sync_engine_weights(model, engine)
        if world > 1:
            stats[9:] = dist.all_reduce_sum(stats[9:].to(device)).cpu()
        step += 1
        t_train = time.time() - t1
        n_roll = max(1.0, float(stats[3]))
        r_mean = float(stats[1]) / n_roll
        rec = {"step": step, "kind": "train", "reward_mean": r_mean,
               "reward_std": math.sqrt(max(0.0, float(stats[2]) / n_roll - r_mean ** 2)),
               "response_len": float(stats[4]) / n_roll, "tool_call_rate": float(stats[5]) / n_roll,
               "tool_fail_rate": float(stats[6]) / n_roll, "truncated_rate": float(stats[7]) / n_roll,
               "skipped_too_long": int(stats[8]),
               "entropy": float(stats[9]) / n_tokens, "kl": float(stats[10]) / n_tokens,
               "clip_frac": float(stats[11]) / (n_tokens * cfg.updates), "loss": loss_sum, "lr_mult": lrm,
               "grad_norm": grad_norm, "rollout_s": round(t_roll, 3), "train_s": round(t_train, 3),
               "rollout_tok_s": float(stats[4]) / max(1e-9, t_roll)}
        if step % cfg.log_every == 0 or step == cfg.steps:
            logger.log(rec)
            elapsed = time.time() - t_start
            log(f"step {step:>5}/{cfg.steps} | reward {r_mean:.3f} ± {rec['reward_std']:.3f} | len "
                f"{rec['response_len']:.0f} | tools {rec['tool_call_rate']:.0%} | H {rec['entropy']:.2f} | "
                f"KL {rec['kl']:.4f} | rollout {t_roll:.1f}s train {t_train:.1f}s | {fmt_duration(elapsed)} elapsed, "
                f"ETA {fmt_duration(elapsed / max(1, step - step0) * (cfg.steps - step))}")
        if due(cfg.eval_every, step, cfg.steps):
            last = run_eval(step)
            if cfg.on_eval is not None and cfg.on_eval(step, last):
                log(f"stopped at step {step} by the on_eval hook")
                stop = True
                continue
        if due(cfg.save_every, step, cfg.steps):
            save_checkpoint(out, model, optimizers, step=step, loader_state=data_state,
                            tokenizer=base / "tokenizer", is_main=info.is_main, run_config=meta)

    if not stop:  # a stopped run was evaluated at this step already
        last = run_eval(step)
        if cfg.on_eval is not None:
            cfg.on_eval(step, last)
    if first is None:  # resumed: the start-of-run evaluation is in the log
        first = logged_start(out, kind="eval")
    keys = ("greedy_acc", "n", "correct", "ci95", "pass@1", f"pass@{cfg.pass_k}", "k")
    save_final(out, model, base, step, meta, info.is_main,
               heldout_before={k: first.get(k) for k in keys}, heldout_after={k: last.get(k) for k in keys})
    if info.is_main:
        try:
            plot_rl(out)
        except Exception as e:  # a missing plotting backend must not lose a finished run
            log(f"(no plot: {type(e).__name__}: {e})")
    logger.close()
    dist.teardown()
    log(f"RL run written to {out}" + (f": held-out greedy accuracy {first.get('greedy_acc', float('nan')):.1%} -> "
                                      f"{last['greedy_acc']:.1%} (n={last['n']}), pass@1 "
                                      f"{first.get('pass@1', float('nan')):.1%} -> {last['pass@1']:.1%}"
                                      if checkable else f" (task {task.name}: no answers to check)"))
    return out


def plot_rl(run_dir) -> Path:
    """RUN/rl.png: reward mean ± std, held-out pass@1 / pass@k / greedy, response length,
    tool-call rate, entropy and KL per step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from chatforge.common import atomic_path
    from chatforge.eval.report import read_log

    run_dir = Path(run_dir)
    recs = read_log(run_dir / "log.jsonl")
    tr = [r for r in recs if r.get("kind") == "train"]
    ev = [r for r in recs if r.get("kind") == "eval" and "greedy_acc" in r]  # none for RLHF: no answers
    fig, axes = plt.subplots(2, 3, figsize=(13, 6.5))
    s = [r["step"] for r in tr]

    def series(ax, key, label=None):
        ax.plot(s, [r[key] for r in tr], label=label or key)

    ax = axes[0, 0]
    m = [r["reward_mean"] for r in tr]
    sd = [r["reward_std"] for r in tr]
    ax.plot(s, m, label="reward mean")
    ax.fill_between(s, [a - b for a, b in zip(m, sd)], [a + b for a, b in zip(m, sd)], alpha=0.2, label="± std")
    ax.set_title("train reward")
    ax = axes[0, 1]
    if ev:
        k = ev[-1].get("k", 0)
        es = [r["step"] for r in ev]
        ax.plot(es, [r["greedy_acc"] for r in ev], "o-", label="greedy")
        ax.plot(es, [r["pass@1"] for r in ev], "o-", label="pass@1")
        if k:
            ax.plot(es, [r.get(f"pass@{k}", 0) for r in ev], "o-", label=f"pass@{k}")
        ax.set_title(f"held-out (n={ev[-1]['n']})")
    else:
        ax.set_title("held-out: no answers to check")
    for ax, key, title in ((axes[0, 2], "response_len", "response length (sampled tokens)"),
                           (axes[1, 0], "tool_call_rate", "tool-call rate"),
                           (axes[1, 1], "entropy", "entropy (nats / token)"),
                           (axes[1, 2], "kl", "KL to reference (k3, per token)")):
        series(ax, key)
        ax.set_title(title)
        if key == "tool_call_rate":
            ax.set_ylim(-0.02, 1.02)
    for ax in axes.flat:
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    cfg = json.loads((run_dir / "config.json").read_text()) if (run_dir / "config.json").exists() else {}
    fig.suptitle(f"GRPO on {cfg.get('task', '?')}: {run_dir.name}")
    fig.tight_layout()
    path = run_dir / "rl.png"
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=90, format="png")
    plt.close(fig)
    return path


def _start_label(base) -> str:
    """'after SFT', or 'after SFT + cold start (...)' when the RL run started from an SFT run of an
    SFT run (the speedrun's rl-start: a few steps on the task's own conversations)."""
    try:
        start = json.loads((Path(base) / "config.json").read_text())
        parent = json.loads((Path(start["base"]) / "config.json").read_text())
    except (OSError, KeyError, TypeError, ValueError):
        return "after SFT"
    if start.get("kind") == "sft" and parent.get("kind") == "sft":
        return f"after SFT + cold start ({start.get('step')} steps of `{start.get('mixture', {}).get('name')}`)"
    return "after SFT"


def rl_report_section(out_dir) -> str:
    """The report card's RL section (DIR/rl/): held-out accuracy after SFT and after RL with n and a
    Wilson 95% interval, the run's settings and its plot. '' when there is no finished RL run."""
    import os

    rl_dir = Path(out_dir) / "rl"
    if not (rl_dir / "config.json").is_file():
        return ""
    cfg = json.loads((rl_dir / "config.json").read_text())
    if cfg.get("kind") != "rl" or (cfg.get("heldout_after") or {}).get("greedy_acc") is None:  # RLHF: no answers
        return ""
    s = cfg.get("rl", {})
    k = cfg["heldout_after"].get("k") or 0
    lines = [f"| model | greedy accuracy | 95% CI (Wilson) | n | pass@1 ({k} samples) | pass@{k} |",
             "|---|---|---|---|---|---|"]
    start = _start_label(cfg.get("base"))
    for name, h in ((start, cfg.get("heldout_before") or {}), (f"after RL ({cfg.get('step')} steps)", cfg["heldout_after"])):
        if h.get("greedy_acc") is None:
            continue
        lo, hi = h.get("ci95") or (float("nan"), float("nan"))
        lines.append(f"| {name} | {h['greedy_acc']:.1%} ({h['correct']}/{h['n']}) | [{lo:.1%}, {hi:.1%}] | {h['n']} | "
                     f"{h.get('pass@1', float('nan')):.1%} | {h.get(f'pass@{k}', float('nan')):.1%} |")
    lines += ["", f"Task `{cfg.get('task')}` (held-out problems never trained on), reward `{s.get('reward')}`; "
              f"{s.get('prompts')} problems x {s.get('group')} samples per step, <= {s.get('max_new_tokens')} new "
              f"tokens at temperature {s.get('temperature')}, python tool {'on' if s.get('tools') else 'off'}, "
              f"{'Muon + AdamW' if s.get('use_muon', True) else 'AdamW'} at lr x{s.get('lr_frac')}, KL coefficient "
              f"{s.get('kl')}, {s.get('updates')} update(s) per batch."]
    if (rl_dir / "rl.png").is_file():
        lines += ["", f"![RL curves]({os.path.relpath(rl_dir / 'rl.png', out_dir)})"]
    return "\n".join(lines)
