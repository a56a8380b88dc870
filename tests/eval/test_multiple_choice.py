import math

import pytest
import torch

from chatforge.common import ChatforgeError
from chatforge.eval.multiple_choice import (
    MCExample, choice_logprob, evaluate_mc, load_arc, load_hellaswag, load_mmlu, mc_metrics, score_choices,
)

from .helpers import BigramModel, ByteTokenizer, bigram_preferring


def test_choice_logprob_reads_shifted_positions():
    # 4 positions, vocab 3; logits at t predict token t+1
    logprobs = torch.log(torch.tensor([
        [0.1, 0.8, 0.1],
        [0.2, 0.2, 0.6],
        [0.5, 0.25, 0.25],
        [1 / 3, 1 / 3, 1 / 3],
    ]))
    # sequence [x, 1, 2, 0]: choice = tokens [2, 0] starting at position 2
    got = choice_logprob(logprobs, [2, 0], start=2)
    assert got == pytest.approx(math.log(0.6) + math.log(0.5))


def test_scoring_picks_the_choice_the_model_prefers():
    tok = ByteTokenizer()
    # after 'x' the model strongly expects 'y'; everything else uniform
    model = BigramModel(bigram_preferring([("x", "y")]))
    examples = [
        MCExample("ax", ["z", "y", "w"], label=1),
        MCExample("ax", ["y", "z"], label=0),
        MCExample("aq", ["y", "z"], label=0),  # no preference after 'q': a tie, argmax takes the first
    ]
    scores = score_choices(model, tok, examples)
    uniform = -math.log(257)
    assert scores[2][0] == pytest.approx(uniform, abs=1e-4)
    assert scores[0][1] > scores[0][0] == pytest.approx(scores[0][2])
    m = mc_metrics(examples, scores)
    assert m["acc"] == 1.0 and m["n"] == 3
    assert m["chance"] == pytest.approx((1 / 3 + 1 / 2 + 1 / 2) / 3)


def test_length_normalisation_changes_the_winner():
    tok = ByteTokenizer()
    # 'yyyy' is a chain of likely tokens: per byte it beats the single unlikely 'z', but its sum is lower
    model = BigramModel(bigram_preferring([("x", "y"), ("y", "y")], strength=4.0))
    ex = [MCExample("x", ["yyyyyyyy", "z"], label=0)]
    scores = score_choices(model, tok, ex)
    sum_y, sum_z = scores[0]
    assert sum_y / 8 > sum_z  # better per byte
    m = mc_metrics(ex, [[sum_z - 1.0, sum_z]])  # sum favours the second
    assert m["acc"] == 0.0


def test_batching_and_truncation_do_not_change_scores():
    tok = ByteTokenizer()
    torch.manual_seed(0)
    model = BigramModel(torch.randn(257, 257))
    examples = [MCExample("hello world " * 3, [" a", " bcd", " efghij"], label=0),
                MCExample("q", [" a", " b"], label=1)]
    flat = lambda s: [x for row in s for x in row]  # noqa: E731
    s1 = flat(score_choices(model, tok, examples, batch_rows=1))
    s2 = flat(score_choices(model, tok, examples, batch_rows=64))
    assert s1 == pytest.approx(s2, abs=1e-5)
    # a bigram only looks one token back, so left-truncating the context keeps scores identical
    s3 = flat(score_choices(model, tok, examples, max_len=12))
    assert s3 == pytest.approx(s1, abs=1e-5)
    assert evaluate_mc(model, tok, examples)["n"] == 2


def test_load_hellaswag(tmp_path):
    p = tmp_path / "hs.jsonl"
    p.write_text(
        '{"ind": 4, "activity_label": "Removing ice from car", "ctx": "Then, the man writes over the snow [title] covering",'
        ' "endings": ["a", "b", "c", "d"], "label": 3}\n'
        '{"ctx_a": "A man sits.", "ctx_b": "he", "endings": ["e", "f", "g", "h"], "label": "1"}\n'
    )
    ex = load_hellaswag(p)
    assert len(ex) == 2
    assert ex[0].context == "Removing ice from car: Then, the man writes over the snow. covering"
    assert ex[0].choices == [" a", " b", " c", " d"] and ex[0].label == 3
    assert ex[1].context == "A man sits. He" and ex[1].label == 1
    assert len(load_hellaswag(p, limit=1)) == 1


def test_load_arc(tmp_path):
    p = tmp_path / "arc.jsonl"
    p.write_text(
        '{"id": "q1", "question": {"stem": "Which is a metal?", "choices": [{"label": "A", "text": "wood"},'
        ' {"label": "B", "text": "iron"}]}, "answerKey": "B"}\n'
        '{"id": "q2", "question": {"stem": "2+2?", "choices": [{"label": "1", "text": "3"}, {"label": "2", "text": "4"},'
        ' {"label": "3", "text": "5"}]}, "answerKey": "2"}\n'
    )
    ex = load_arc(p)
    assert ex[0].context == "Question: Which is a metal?\nAnswer:"
    assert ex[0].choices == [" wood", " iron"] and ex[0].label == 1
    assert ex[1].label == 1 and len(ex[1].choices) == 3
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": {"stem": "x", "choices": [{"label": "A", "text": "y"}]}, "answerKey": "C"}\n')
    with pytest.raises(ChatforgeError):
        load_arc(bad)


def test_load_mmlu(tmp_path):
    d = tmp_path / "test"
    d.mkdir()
    (d / "high_school_physics_test.csv").write_text(
        'What is the unit of force?,joule,newton,watt,pascal,B\n'
        '"A question, with a comma?",1,2,3,4,D\n'
    )
    (d / "anatomy_test.csv").write_text("question,A,B,C,D,answer\nWhich bone?,femur,skull,rib,ulna,A\n")
    ex = load_mmlu(d)
    assert len(ex) == 3
    assert ex[0].meta["subject"] == "anatomy" and ex[0].label == 0
    phys = ex[1]
    assert phys.context.startswith("The following is a multiple choice question about high school physics.")
    assert "\nB. newton\n" in phys.context and phys.context.endswith("Answer:")
    assert phys.choices == [" A", " B", " C", " D"] and phys.label == 1
    assert ex[2].label == 3 and "A question, with a comma?" in ex[2].context
    (d / "broken_test.csv").write_text("only,three,cols\n")
    with pytest.raises(ChatforgeError):
        load_mmlu(d)
