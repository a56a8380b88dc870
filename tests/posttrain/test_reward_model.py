"""Reward model: accuracy rises on a tiny generated preference set; halves are disjoint; the
scorer RL calls gives the trained model's scores; the run directory round-trips."""

import json

import pytest
import torch

from chatforge.common import ChatforgeError
from .helpers import assert_same_weights, stop_at_call
from chatforge.posttrain.pairs import synthetic_pairs
from chatforge.posttrain.reward_model import (RMConfig, RewardScorer, from_lm, load_reward_model, load_split_pairs,
                                              run_rm)


@pytest.fixture(autouse=True)
def one_thread(one_torch_thread):
    yield


@pytest.fixture
def setup(sft_and_pairs):
    return sft_and_pairs(300)


def test_reward_model_accuracy_rises(setup, tmp_path, capsys):
    base, pairs = setup
    out = run_rm(RMConfig(base=str(base), pairs=str(pairs), out=str(tmp_path / "rm"), steps=25, batch_size=16,
                          val_frac=0.2, eval_every=0, device="cpu"), log=lambda *a: None)
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["kind"] == "rm" and cfg["val_before"]["val_accuracy"] == 0.0  # zero head: every pair a tie
    assert cfg["val_after"]["val_accuracy"] > 0.9 and cfg["val_after"]["val_margin"] > 0.5
    # the scorer RL uses prefers a chosen reply to its rejected one on pairs it never saw
    scorer = RewardScorer(out)
    held = synthetic_pairs(20, seed=99)
    good = scorer.score([p.prompt for p in held], [p.chosen for p in held])
    bad = scorer.score([{"prompt": p.prompt} for p in held], [p.rejected for p in held])
    assert sum(g > b for g, b in zip(good, bad)) >= 18
    rm, _, _ = load_reward_model(out)
    assert set(rm.state_dict()) >= {"score.weight", "model.embed_tokens.weight"}

    from chatforge.cli import main
    from chatforge.posttrain.reward_model import win_rate

    assert main(["rm", "score", str(out), "--pairs", str(pairs), "--limit", "40"]) == 0
    assert '"val_accuracy"' in capsys.readouterr().out
    res = win_rate(out, base, base, pairs=str(pairs), n=4, max_new_tokens=6)
    assert res["win_rate"] == 0.5 and res["n"] == 4  # a model against itself: every prompt a tie


def test_halves_are_disjoint_and_share_the_heldout_set(tiny_tokenizer, tmp_path):
    pairs = tmp_path / "unique.jsonl"  # every pair distinct, so overlap would show
    pairs.write_text("".join(json.dumps({"prompt": f"question {i}", "chosen": f"yes {i}", "rejected": f"no {i}"}) + "\n"
                             for i in range(101)))
    a_train, a_val, _ = load_split_pairs(pairs, tiny_tokenizer, 128, 0.1, 256, 0, half=0, log=lambda *a: None)
    b_train, b_val, _ = load_split_pairs(pairs, tiny_tokenizer, 128, 0.1, 256, 0, half=1, log=lambda *a: None)
    key = lambda p: (tuple(p.prompt), tuple(p.chosen), tuple(p.rejected))  # noqa: E731
    assert [key(p) for p in a_val] == [key(p) for p in b_val]
    assert not {key(p) for p in a_train} & {key(p) for p in b_train}
    assert abs(len(a_train) - len(b_train)) <= 1


def test_untrained_head_scores_zero_and_body_is_the_lm(setup):
    from chatforge.model import load_run

    base, _ = setup
    gpt, tok, _ = load_run(base)
    rm = from_lm(gpt)
    x = torch.tensor([tok.encode("hello there")])
    assert torch.equal(rm(x, torch.tensor([x.size(1) - 1])), torch.zeros(1))
    with torch.no_grad():  # the body is the language model's: its head on rm.hidden gives gpt's logits
        torch.testing.assert_close(rm.lm_head(rm.hidden(x)), gpt(x))


def test_errors_are_one_line(setup, tmp_path, capsys):
    from chatforge.cli import main

    base, _ = setup
    assert main(["rm", "--base", str(base), "--pairs", str(tmp_path / "none.jsonl"), "--out", str(tmp_path / "o")]) == 2
    assert "does not exist" in capsys.readouterr().err
    with pytest.raises(ChatforgeError, match="not a reward model"):
        load_reward_model(base)


def test_reward_model_resume_continues_exactly(setup, tmp_path, monkeypatch):
    """Stopped after its step-4 checkpoint, a resumed run continues from step 4 to the weights,
    log and results of an uninterrupted one."""
    from chatforge.posttrain import sft as sft_mod

    base, pairs = setup

    def run(out, log=lambda *a: None, **kw):
        return run_rm(RMConfig(base=str(base), pairs=str(pairs), out=str(tmp_path / out), steps=6, batch_size=8,
                               device_batch_size=4, val_frac=0.2, eval_every=3, log_every=1, device="cpu", **kw),
                      log=log)

    full = run("full")
    # the loop asks for each step's pairs once: dies at step 5
    stop_at_call(monkeypatch, sft_mod, "step_rows", 5, lambda: run("cut", save_every=2))
    assert json.loads((tmp_path / "cut" / "config.json").read_text())["step"] == 4
    messages = []
    run("cut", log=messages.append, save_every=2, resume=True)
    assert any("resumed from" in m and "at step 4/6" in m for m in messages)
    assert_same_weights(full, tmp_path / "cut")
    cfg_full, cfg_cut = (json.loads((d / "config.json").read_text()) for d in (full, tmp_path / "cut"))
    assert cfg_cut["step"] == 6 and cfg_cut["val_after"] == cfg_full["val_after"]
    assert {k: cfg_cut["val_before"][k] for k in cfg_full["val_before"]} == cfg_full["val_before"]  # from the log
    train_steps = [json.loads(line)["step"] for line in (tmp_path / "cut" / "log.jsonl").read_text().splitlines()
                   if json.loads(line).get("kind") == "train"]
    assert train_steps == [1, 2, 3, 4, 5, 6]  # steps 5-6 logged once, after the resume
    assert not (tmp_path / "cut" / "checkpoint").exists()
    rm, _, _ = load_reward_model(tmp_path / "cut")  # the resumed run loads like any reward model
    assert "score.weight" in rm.state_dict()
