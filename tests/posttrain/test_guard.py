"""The reward-hacking guard: degeneracy signals, and a synthetic RL run in which the optimised
reward model can be gamed (it pays for a magic word) and the judge cannot (it pays for varied
content and penalises repetition). The guard must stop the run and keep the judge's best step."""

import json

import pytest

from chatforge.posttrain.guard import (GuardEval, RewardHackingGuard, degeneracy, distinct_n, plot_guard,
                                       repetition_rate)

CONTENT = "the river runs cold under the old stone bridge at dawn".split()


def test_degeneracy_signals():
    assert repetition_rate("a b c d".split(), n=1) == 0.0
    assert repetition_rate("the the the the".split(), n=1) == 0.75
    assert distinct_n([["a", "b", "a", "b"]], 2) == 2 / 3
    d = degeneracy(["one two three", "great great great great"])
    assert d["length"] == 3.5 and d["repetition"] > 0


def gameable_rm(reply: str) -> float:  # learned a real preference (varied content) and a quirk ("great")
    words = reply.split()
    return 0.5 * min(len(set(words) - {"great"}), 8) / 8 + 0.05 * words.count("great")


def judge(reply: str) -> float:  # the same preference, without the quirk
    words = reply.split()
    return min(len(set(words) - {"great"}), 8) / 8 - repetition_rate(words, n=1)


def synthetic_run(reward, steps=30, patience=3):
    """Greedy 'RL': each step the policy's reply takes whichever one-word edit the optimised
    reward likes best; an evaluation every step."""
    guard = RewardHackingGuard(patience=patience)
    reply, stop = "", False
    for step in range(steps):
        candidates = [reply + " " + w for w in CONTENT + ["great"]]
        reply = max(candidates, key=reward).strip()
        stop = guard.update(GuardEval(step, reward(reply), judge(reply), degeneracy([reply]), [reply]))
        if stop:
            break
    return guard, reply


def test_guard_stops_a_gamed_run_and_keeps_the_judges_best(tmp_path):
    guard, reply = synthetic_run(gameable_rm)
    assert guard.stopped_at is not None and guard.stopped_at < 29, "the guard never stopped"
    ev = guard.history
    rewards = [e.reward for e in ev]
    assert all(b > a for a, b in zip(rewards, rewards[1:])), "the optimised reward rose all along"
    best = guard.best
    assert best.judge == max(e.judge for e in ev) and best.step < guard.stopped_at
    assert "great" not in best.samples[0] and reply.endswith("great great great")  # hacked after, not before
    # stopped exactly `patience` evaluations after the two curves parted
    parted = next(b.step for a, b in zip(ev, ev[1:]) if b.judge < a.judge)
    assert guard.stopped_at == parted + 3 - 1
    assert ev[-1].signals["repetition"] > ev[best.step].signals["repetition"]
    (tmp_path / "guard.json").write_text(json.dumps(guard.summary()))
    assert plot_guard(tmp_path / "guard.json", tmp_path / "guard.png").stat().st_size > 1000


def test_guard_lets_an_honest_run_finish():
    honest = lambda r: judge(r) + 0.01 * len(set(r.split()))  # noqa: E731  agrees with the judge
    guard, _ = synthetic_run(honest, steps=12)
    assert guard.stopped_at is None and guard.streak == 0


def test_one_disagreement_is_not_a_stop():
    g = RewardHackingGuard(patience=2)
    seq = [(0, 1.0, 1.0), (1, 2.0, 0.5), (2, 2.5, 1.5), (3, 3.0, 1.0)]  # parts, recovers, parts once
    assert not any(g.update(GuardEval(s, r, j, {"length": 5})) for s, r, j in seq)
    assert g.best.step == 2 and g.update(GuardEval(4, 3.5, 0.2, {"length": 5}))


def test_a_zigzagging_run_whose_judge_never_recovers_is_stopped():
    """The first evaluations of the d12 RLHF run (H200, docs/benchmarks.md): reward up, judge down
    from the SFT start, but the judge zigzags, so it never fell three evaluations in a row."""
    g = RewardHackingGuard(patience=3)
    seq = [(0, 0.641, 0.848), (10, 0.662, 0.587), (20, 0.753, 0.697), (30, 0.863, 0.720)]
    stops = [g.update(GuardEval(s, r, j, {"length": 9})) for s, r, j in seq]
    assert stops == [False, False, False, True] and g.best.step == 0
    assert [e.signals["parting_streak"] for e in g.history] == [0, 1, 2, 3]


def test_the_live_d12_run_it_stopped():
    """The live d12 RLHF run 4 (H200, 2026-12-03, docs/runs/gpu-d12-rlhf4-guard.jsonl), which the
    guard stopped at step 30: both signals fired at every evaluation after the start."""
    g = RewardHackingGuard(patience=3)
    seq = [(0, 0.348, 0.678, 0.131, 15.6), (10, 0.776, 0.592, 0.540, 65.4), (20, 0.648, 0.630, 0.415, 42.6),
           (30, 0.598, 0.529, 0.646, 56.4)]
    stops = [g.update(GuardEval(s, r, j, {"repetition": rep, "length": n})) for s, r, j, rep, n in seq]
    assert stops == [False, False, False, True] and g.best.step == 0 and "judge" in g.reason
    assert [e.signals["parting_streak"] for e in g.history] == [0, 1, 2, 3]
    assert [e.signals["degenerate"] for e in g.history] == [False, True, True, True]


def test_repetitive_replies_stop_a_run_whose_judge_is_fooled_too():
    """The second d12 RLHF run (H200): the judge, trained from the same SFT model, liked the
    repetitive replies as much as the optimised reward did; the repetition signal stops the run,
    and the kept step is the judge's best among the evaluations that were not degenerate."""
    g = RewardHackingGuard(patience=3)
    seq = [(0, 0.377, 0.712, 0.05), (10, 0.661, 0.726, 0.43), (20, 0.820, 0.718, 0.62), (30, 0.856, 0.864, 0.70)]
    stops = [g.update(GuardEval(s, r, j, {"repetition": rep, "length": 10})) for s, r, j, rep in seq]
    assert stops == [False, False, False, True] and "repetitive" in g.reason
    assert g.best.step == 0 and max(g.history, key=lambda e: e.judge).step == 30
    assert [e.signals["degenerate"] for e in g.history] == [False, True, True, True]
    # the same curves with replies as varied as at the start do not stop it
    g = RewardHackingGuard(patience=3)
    assert not any(g.update(GuardEval(s, r, j, {"repetition": 0.06, "length": 10})) for s, r, j, _ in seq)


def test_reward_and_judge_falling_together_is_no_stop():
    """The live d12 RLHF run 3 (H200, 2026-12-03, docs/runs/gpu-d12-rlhf3-guard.jsonl): both rose
    to step 20, then both fell. That is no reward hacking by the guard's rule; it keeps step 20. Its
    SFT start already repeated itself (57%), so the repetition signal could not fire, and says so."""
    g = RewardHackingGuard(patience=3)
    seq = [(0, 0.779, 0.567, 0.570), (10, 0.943, 0.531, 0.666), (20, 0.982, 0.616, 0.571),
           (30, 0.981, 0.592, 0.664), (40, 0.938, 0.589, 0.599), (50, 0.719, 0.554, 0.572)]
    stops = [g.update(GuardEval(s, r, j, {"repetition": rep, "length": 60})) for s, r, j, rep in seq]
    assert not any(stops) and g.best.step == 20
    assert [e.signals["parting_streak"] for e in g.history] == [0, 1, 0, 0, 0, 0]
    assert any("cannot fire" in w for w in g.warnings(g.history[0]))
    assert not any("cannot fire" in w for w in g.warnings(g.history[1]))
    # a start that repeats itself less keeps the signal, and says nothing
    g = RewardHackingGuard()
    g.update(GuardEval(0, 0.5, 0.5, {"repetition": 0.3, "length": 60}))
    assert g.warnings(g.history[0]) == []


@pytest.mark.slow  # two reward models and an RL run with engine rollouts: ~60 s on a busy 2-core machine
def test_rlhf_run_with_guard_end_to_end(sft_and_pairs, tmp_path, one_torch_thread):
    """chatforge rl --reward rm:RM --judge JUDGE on a tiny model: two reward models on disjoint
    halves, the guard scores every evaluation's snapshot with both, keeps the judge's best."""
    from chatforge.cli import main
    from chatforge.posttrain.reward_model import RMConfig, run_rm

    base, pairs = sft_and_pairs(80)
    rms = [run_rm(RMConfig(base=str(base), pairs=str(pairs), out=str(tmp_path / f"rm{h}"), steps=3, batch_size=8,
                           half=h, eval_every=0, device="cpu"), log=lambda *a: None) for h in (0, 1)]
    rc = main(["rl", "--base", str(base), "--task", f"pairs:{pairs}", "--reward", f"rm:{rms[0]}", "--judge", str(rms[1]),
               "--out", str(tmp_path / "rl"), "--steps", "2", "--prompts", "2", "--group", "2", "--max-new-tokens", "8",
               "--eval-every", "1", "--eval-problems", "2", "--pass-k", "1", "--no-tools", "--save-every", "0",
               "--device", "cpu"])
    assert rc == 0
    out = tmp_path / "rl"
    summary = json.loads((out / "guard.json").read_text())
    assert [e["step"] for e in summary["evals"]] == [0, 1, 2]
    assert summary["best_step"] in (0, 1, 2) and (out / "best_by_judge.safetensors").is_file()
    assert all({"reward", "judge", "repetition", "distinct_2", "length_ratio"} <= set(e) for e in summary["evals"])
    assert json.loads((out / "config.json").read_text())["rl"]["kl"] == 0.05  # KL on by default against an RM
    assert (out / "guard.png").is_file()
    # RLHF's prompts have no answers: no held-out accuracy is measured (it would read 100%), the plot still comes
    evals = [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines() if '"eval"' in x]
    assert evals and not any("greedy_acc" in e for e in evals)
    assert (out / "rl.png").is_file()
