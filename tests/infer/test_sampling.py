"""`_sample_rows` and the decoder's in-graph `sample_pick`: the sampled distribution, top-k / top-p
cuts, seeds, log-probs."""

import math
from types import SimpleNamespace

import pytest
import torch

from chatforge.infer.decode import sample_pick
from chatforge.infer.engine import SamplingParams, _sample_rows

P = [0.5, 0.25, 0.15, 0.07, 0.03]


def rows(n, seed=None, **params):
    out = []
    for i in range(n):
        g = None
        if seed is not None:
            g = torch.Generator().manual_seed(seed + i)
        out.append(SimpleNamespace(req=SimpleNamespace(params=SamplingParams(**params)), generator=g))
    return out


def freqs(toks, V=len(P)):
    return [toks.count(i) / len(toks) for i in range(V)]


@pytest.mark.parametrize("params, want", [
    (dict(temperature=1.0), P),
    (dict(temperature=1.0, top_k=2), [0.5 / 0.75, 0.25 / 0.75, 0, 0, 0]),
    (dict(temperature=1.0, top_p=0.6), [0.5 / 0.75, 0.25 / 0.75, 0, 0, 0]),      # nucleus {0, 1}
    (dict(temperature=1.0, top_k=3, top_p=0.99), [0.5 / 0.9, 0.25 / 0.9, 0.15 / 0.9, 0, 0]),
])
def test_sampled_frequencies_follow_the_cut_distribution(params, want):
    torch.manual_seed(0)
    n = 8000
    logits = torch.tensor(P).log().repeat(n, 1)
    toks, lps, dev = _sample_rows(logits, rows(n, **params))
    assert dev.tolist() == toks
    assert freqs(toks) == pytest.approx(want, abs=0.025)
    # log-probs are under the model's own distribution, whatever the cut
    assert all(lp == pytest.approx(math.log(P[t]), abs=1e-5) for t, lp in zip(toks[:50], lps[:50]))


@pytest.mark.parametrize("params, want", [
    (dict(temperature=1.0), P),
    (dict(temperature=1.0, top_k=2), [0.5 / 0.75, 0.25 / 0.75, 0, 0, 0]),
    (dict(temperature=1.0, top_p=0.6), [0.5 / 0.75, 0.25 / 0.75, 0, 0, 0]),
    (dict(temperature=1.0, top_k=3, top_p=0.99), [0.5 / 0.9, 0.25 / 0.9, 0.15 / 0.9, 0, 0]),
    (dict(temperature=0.5), [p * p / sum(q * q for q in P) for p in P]),          # p^(1/T), renormalised
])
def test_sample_pick_follows_the_same_distribution(params, want):
    """The decoder's pick for rows that share their settings: the engine's distribution, its
    (id, log-prob) rows under the unmodified model."""
    torch.manual_seed(0)
    n = 8000
    logits = torch.tensor(P).log().repeat(n, 1)
    ids, both = sample_pick(logits, params["temperature"], params.get("top_k"), params.get("top_p"))
    toks = ids.tolist()
    assert both[0].long().tolist() == toks
    assert freqs(toks) == pytest.approx(want, abs=0.025)
    assert both[1][:50].tolist() == pytest.approx([math.log(P[t]) for t in toks[:50]], abs=1e-5)


def test_greedy_rows_take_the_argmax_in_a_mixed_batch():
    # bug fixed: a row without top-k (greedy here) switched the cut off for the whole batch, so the
    # top-k rows sampled from the full vocabulary (~70% of draws outside their top 5)
    torch.manual_seed(0)
    for _ in range(50):
        logits = torch.randn(6, 100)
        rs = rows(3, temperature=0) + rows(3, temperature=1.0, top_k=5)
        toks, _, _ = _sample_rows(logits, rs)
        assert toks[:3] == logits[:3].argmax(-1).tolist()
        for j in range(3, 6):
            assert toks[j] in logits[j].topk(5).indices.tolist()


def test_a_row_without_top_k_keeps_the_full_vocab_beside_a_cut_row():
    torch.manual_seed(0)
    n = 4000
    logits = torch.tensor(P).log().repeat(2 * n, 1)
    toks, _, _ = _sample_rows(logits, rows(n, temperature=1.0) + rows(n, temperature=1.0, top_k=2))
    assert freqs(toks[:n]) == pytest.approx(P, abs=0.03)
    assert freqs(toks[n:]) == pytest.approx([0.5 / 0.75, 0.25 / 0.75, 0, 0, 0], abs=0.03)


def test_a_seeded_row_draws_the_same_whatever_else_is_in_the_batch():
    torch.manual_seed(1)
    logits = torch.randn(1, 300)
    alone = _sample_rows(logits, rows(1, seed=7, temperature=1.0, top_k=40))[0][0]
    seeded = rows(1, seed=7, temperature=1.0, top_k=40)
    others = rows(2, temperature=1.0, top_p=0.9)  # no top-k: the batch's candidate set is the whole vocab
    batched = _sample_rows(logits.repeat(3, 1), others[:1] + seeded + others[1:])[0][1]
    assert batched == alone
    a = [_sample_rows(logits, r)[0][0] for r in [rows(1, seed=s, temperature=1.0) for s in range(20)]]
    b = [_sample_rows(logits, r)[0][0] for r in [rows(1, seed=s, temperature=1.0) for s in range(20)]]
    assert a == b and len(set(a)) > 1
