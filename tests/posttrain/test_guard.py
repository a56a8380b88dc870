"""The reward-hacking guard: degeneracy signals, and a synthetic RL run in which the optimised
reward model can be gamed (it pays for a magic word) and the judge cannot (it pays for varied
content and penalises repetition). The guard must stop the run and keep the judge's best step."""

import json

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
