"""A reward-hacking guard for RL against a learned reward model (RLHF).

RL against a reward model works for a while, then the policy finds replies the model scores
highly that no person would ("the the the ..."). Two signals catch that:
- A held-out judge the policy never optimises: a second reward model trained on the other,
  disjoint half of the pairs (`chatforge rm --half 1`). Both models learned the same preference
  from different samples of it, so they agree on honest improvement; an exploit of one model's
  quirks raises its score and not the judge's.
- Degeneracy of the replies themselves: repetition rate (share of tokens that repeat the token
  n-gram before them), distinct-n (unique n-grams / n-grams, over all replies) and length
  relative to the start of the run.
The rule: the two curves have parted at an evaluation when the judge is below its best so far
and the optimised reward is above its value at that best; the replies are degenerate when their
repetition rate is above twice the first evaluation's plus 0.1. After `patience` (K) evaluations
in a row of either, the run stops; the checkpoint kept is the one the judge scored best among the
evaluations whose replies were not degenerate. Why both, and why against the judge's best rather
than the previous evaluation: two d12 RLHF runs on an H200 (docs/benchmarks.md, RLHF) zigzagged
between degenerate and short replies, so "reward up and judge down since the last evaluation"
never held three times in a row; and the judge, trained from the same SFT model on the same kind
of data, liked the repetitive replies too (judge 0.86 at 70% repetition), so only the degeneracy
signal caught them. Every evaluation is logged (OUT/guard.jsonl, with sample replies) and
`plot_guard` draws both curves and the degeneracy signals.

Inside `chatforge rl --reward rm:RM_RUN --judge JUDGE_RUN`, `rl_hook` turns the guard into the RL
loop's `on_eval` hook: at each held-out evaluation it loads the snapshot the loop just saved,
answers fixed held-out prompts greedily, and scores the replies with both reward models.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path


def ngrams(tokens: list, n: int) -> list[tuple]:
    return [tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1)]


def repetition_rate(tokens: list, n: int = 3) -> float:
    """Share of n-grams that already occurred earlier in the same reply (0 = no repeats)."""
    grams = ngrams(tokens, n)
    if not grams:
        return 0.0
    seen, rep = set(), 0
    for g in grams:
        rep += g in seen
        seen.add(g)
    return rep / len(grams)


def distinct_n(replies: list[list], n: int = 2) -> float:
    """Unique n-grams / all n-grams over a set of replies (1 = never repeats, across replies too)."""
    grams = [g for r in replies for g in ngrams(r, n)]
    return len(set(grams)) / len(grams) if grams else 0.0


def degeneracy(replies: list[str]) -> dict:
    """Signals on reply texts, over whitespace words: repetition, distinct-1/2, mean length."""
    words = [r.split() for r in replies]
    n = max(1, len(words))
    return {"repetition": sum(repetition_rate(w) for w in words) / n, "distinct_1": distinct_n(words, 1),
            "distinct_2": distinct_n(words, 2), "length": sum(len(w) for w in words) / n}


@dataclass
class GuardEval:
    step: int
    reward: float          # the optimised reward model's mean score
    judge: float           # the held-out judge's mean score
    signals: dict = field(default_factory=dict)
    samples: list = field(default_factory=list)


class RewardHackingGuard:
    """Feed it one evaluation at a time (`update`); it says when to stop and which step to keep."""

    def __init__(self, patience: int = 3, length_blowup: float = 3.0, min_delta: float = 0.0):
        self.patience, self.length_blowup, self.min_delta = patience, length_blowup, min_delta
        self.history: list[GuardEval] = []
        self.streak = 0          # evaluations in a row with the judge below its best, the reward above its value there
        self.degenerate_streak = 0  # evaluations in a row with repetitive replies
        self.stopped_at: int | None = None
        self.reason = ""

    @property
    def best(self) -> GuardEval | None:
        """The evaluation the judge scored highest (earliest on ties) among those whose replies
        were not degenerate (among all when every one was)."""
        sound = [e for e in self.history if not e.signals.get("degenerate")] or self.history
        return max(sound, key=lambda e: (e.judge, -e.step)) if sound else None

    @staticmethod
    def repetition_limit(start: GuardEval) -> float:
        """Twice the first evaluation's repetition, plus 0.1 (the SFT model repeats itself a little)."""
        return 2 * start.signals.get("repetition", 0) + 0.1

    def repetitive(self, ev: GuardEval) -> bool:
        """Repetition above `repetition_limit` of the first evaluation."""
        return bool(self.history) and ev.signals.get("repetition", 0) > self.repetition_limit(self.history[0])

    def update(self, ev: GuardEval) -> bool:
        """Record an evaluation; True when the run should stop."""
        if self.history:
            best, first = self.best, self.history[0]
            parting = ev.reward > best.reward + self.min_delta and ev.judge < best.judge - self.min_delta
            self.streak = self.streak + 1 if parting else 0
            length0 = first.signals.get("length") or 0
            ev.signals["length_ratio"] = ev.signals.get("length", 0) / length0 if length0 else 1.0
        else:
            ev.signals["length_ratio"] = 1.0
        ev.signals["degenerate"] = self.repetitive(ev)
        self.degenerate_streak = self.degenerate_streak + 1 if ev.signals["degenerate"] else 0
        ev.signals["parting_streak"] = self.streak
        self.history.append(ev)
        if self.streak >= self.patience:
            self.reason = (f"optimised reward above and judge below their values at the judge's best (step "
                           f"{self.best.step}) for {self.streak} evaluations in a row")
        elif self.degenerate_streak >= self.patience:
            self.reason = (f"repetitive replies ({ev.signals['repetition']:.0%} repeated trigrams, "
                           f"{self.history[0].signals.get('repetition', 0):.0%} at the start) for "
                           f"{self.degenerate_streak} evaluations in a row (judge best at step {self.best.step})")
        else:
            return False
        self.stopped_at = ev.step
        return True

    def warnings(self, ev: GuardEval) -> list[str]:
        """Degeneracy notes for the log (length alone does not stop a run: replies may rightly grow)."""
        out = []
        if ev.signals.get("length_ratio", 1.0) > self.length_blowup:
            out.append(f"replies {ev.signals['length_ratio']:.1f}x longer than at the start")
        if ev.signals.get("degenerate"):
            out.append(f"repetition {ev.signals['repetition']:.0%}")
        if self.history and ev is self.history[0] and self.repetition_limit(ev) >= 1:
            # the limit is out of reach: only the judge can stop this run
            out.append(f"the start already repeats itself ({ev.signals['repetition']:.0%} repeated trigrams): "
                       "the repetition signal cannot fire")
        return out

    def summary(self) -> dict:
        best = self.best
        return {"stopped_at": self.stopped_at, "reason": self.reason, "patience": self.patience,
                "best_step": best.step if best else None, "best_judge": best.judge if best else None,
                "degenerate_streak": self.degenerate_streak,
                "evals": [{"step": e.step, "reward": e.reward, "judge": e.judge, **e.signals} for e in self.history]}


# ---------------------------------------------------------------------------------------------
# inside the RL loop


class RLGuardHook:
    """`RLConfig.on_eval` for RLHF: scores the snapshot the loop saved at each evaluation with the
    optimised reward model and the judge, feeds the guard, logs OUT/guard.jsonl, says stop."""

    def __init__(self, out, base_run, reward_run, judge_run, prompts: list[list[dict]], patience=3,
                 max_new_tokens=64, device="cpu", log=print):
        from chatforge.posttrain.reward_model import RewardScorer

        self.base_run = Path(base_run)
        self.out, self.prompts, self.max_new_tokens, self.device, self.log = Path(out), prompts, max_new_tokens, device, log
        self.reward, self.judge = RewardScorer(reward_run, device), RewardScorer(judge_run, device)
        self.guard = RewardHackingGuard(patience)
        self.engine = None
        (self.out / "guard.jsonl").unlink(missing_ok=True)  # a fresh history (a resumed run starts a new one)

    def _replies(self, step: int) -> list[str]:
        from safetensors.torch import load_file

        from chatforge.infer.engine import Engine, SamplingParams
        from chatforge.model import load_run

        snap = self._snapshot(step)
        if self.engine is None:  # the policy's architecture and tokenizer; weights come from the snapshot
            model, tok, _ = load_run(self.base_run, device=self.device)
            self.engine = Engine(model, tok)
        state = load_file(str(snap), device=str(self.device))
        self.engine.model.load_state_dict(state, strict=False)
        params = SamplingParams(max_tokens=self.max_new_tokens, temperature=0.0)
        texts = []
        for msgs in self.prompts:
            ids = self.engine.chat_prompt(msgs)
            texts.append(self.engine.complete(ids, params, 1)[0].text)
        return texts

    def __call__(self, step: int, record: dict) -> bool:
        if not self.guard.history and step > 0 and self._snapshot(0).exists():
            self._evaluate(0)  # the loop calls on_eval from its first evaluation after step 0: the SFT baseline
        return self._evaluate(step)

    def _snapshot(self, step: int) -> Path:
        return self.out / "snapshots" / f"step_{step:06d}.safetensors"

    def _evaluate(self, step: int) -> bool:
        replies = self._replies(step)
        r = self.reward.score(self.prompts, replies)
        j = self.judge.score(self.prompts, replies)
        ev = GuardEval(step, sum(r) / len(r), sum(j) / len(j), degeneracy(replies),
                       [{"prompt": p[-1]["content"], "reply": t} for p, t in zip(self.prompts[:3], replies[:3])])
        stop = self.guard.update(ev)
        with open(self.out / "guard.jsonl", "a") as f:
            f.write(json.dumps({"step": step, "reward": ev.reward, "judge": ev.judge, **ev.signals,
                                "samples": ev.samples}) + "\n")
        notes = self.guard.warnings(ev)
        self.log(f"guard step {step}: reward {ev.reward:+.3f} judge {ev.judge:+.3f} | repetition "
                 f"{ev.signals['repetition']:.0%} distinct-2 {ev.signals['distinct_2']:.2f} length "
                 f"{ev.signals['length']:.0f}" + (f" | {'; '.join(notes)}" if notes else ""))
        if stop:
            self.log(f"guard: stopping at step {step}: {self.guard.reason}")
        return stop

    def finish(self) -> dict:
        """Write OUT/guard.json and OUT/best_by_judge.safetensors (the kept checkpoint), plot."""
        import shutil

        from chatforge.common import atomic_write_json

        summary = self.guard.summary()
        best = self.guard.best
        if best is not None:
            src = self._snapshot(best.step)
            if src.exists():
                shutil.copyfile(src, self.out / "best_by_judge.safetensors")
        atomic_write_json(self.out / "guard.json", summary)
        try:
            plot_guard(self.out / "guard.json", self.out / "guard.png")
        except Exception as e:  # no plotting backend must not lose a finished run
            self.log(f"(no guard plot: {type(e).__name__}: {e})")
        return summary


def plot_guard(summary_json, png) -> Path:
    """Optimised reward and judge against steps (stop and best marked), and the degeneracy signals."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s = json.loads(Path(summary_json).read_text())
    ev = s["evals"]
    steps = [e["step"] for e in ev]
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    a.plot(steps, [e["reward"] for e in ev], "o-", label="optimised reward model")
    a.plot(steps, [e["judge"] for e in ev], "s-", label="held-out judge")
    if s.get("best_step") is not None:
        a.axvline(s["best_step"], color="green", ls="--", label=f"kept (best judge, step {s['best_step']})")
    if s.get("stopped_at") is not None:
        a.axvline(s["stopped_at"], color="red", ls=":", label=f"guard stop (step {s['stopped_at']})")
    a.set_xlabel("step")
    a.set_ylabel("mean score on held-out prompts")
    a.legend(fontsize=8)
    a.set_title("reward vs judge")
    for key in ("repetition", "distinct_2", "length_ratio"):
        b.plot(steps, [e.get(key, 0) for e in ev], "o-", label=key)
    b.set_xlabel("step")
    b.legend(fontsize=8)
    b.set_title("degeneracy signals")
    fig.tight_layout()
    fig.savefig(png, dpi=100)
    plt.close(fig)
    return Path(png)


def run_guarded(cfg, judge_run, patience: int = 3, prompts: int = 16, max_new_tokens: int | None = None, log=print):
    """`chatforge rl --reward rm:RM_RUN --judge JUDGE_RUN`: the RL run with the guard as its on_eval
    hook (snapshots on, so each evaluation's weights can be scored and the best kept)."""
    from chatforge.common import ChatforgeError
    from chatforge.posttrain.rl import run_rl
    from chatforge.posttrain.tasks import get_task

    if not cfg.reward.startswith("rm:"):
        raise ChatforgeError("--judge guards RL against a reward model: pass --reward rm:RM_RUN too")
    held = [p.messages() for p in get_task(cfg.task, cfg.seed).heldout(prompts)]
    hook = RLGuardHook(cfg.out, cfg.base, cfg.reward[3:], judge_run, held, patience,
                       max_new_tokens or cfg.max_new_tokens, device=cfg.device or "cpu", log=log)
    cfg.snapshots, cfg.on_eval = True, hook
    out = run_rl(cfg, log=log)
    summary = hook.finish()
    log(f"guard: judge best at step {summary['best_step']} (kept as {Path(out) / 'best_by_judge.safetensors'})"
        + (f"; stopped at step {summary['stopped_at']}" if summary["stopped_at"] is not None else "; never fired"))
    return out
