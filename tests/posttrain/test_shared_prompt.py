"""A preference pair's prompt read once for both replies (pairs.shared_prompt_batch): the same
log-probabilities and gradients as the two-row layout, on a model with GQA and uneven lengths."""

import random

import pytest
import torch

from chatforge.posttrain.dpo import dpo_loss, reply_logps
from chatforge.posttrain.pairs import PairIds, pair_batch, shared_prompt_batch


@pytest.fixture(autouse=True)
def one_thread(one_torch_thread):
    yield


def _pairs(n, vocab, seed=0):
    rng = random.Random(seed)
    ids = lambda k: [rng.randrange(2, vocab) for _ in range(k)]  # noqa: E731
    return [PairIds(ids(rng.randint(1, 12)), ids(rng.randint(1, 7)), ids(rng.randint(1, 7))) for _ in range(n)]


def _model(vocab):
    from chatforge.model import GPT, GPTConfig

    torch.manual_seed(0)
    model = GPT(GPTConfig.from_preset("d2", vocab_size=vocab, seq_len=64, n_kv_head=1))  # GQA: 2 heads, 1 kv head
    with torch.no_grad():  # zero-init projections would leave most gradients zero: perturb them all
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model


def test_shared_prompt_layout():
    pairs = [PairIds([1, 2, 3], [4, 5], [6, 7, 8]), PairIds([9], [10], [11])]
    x, y, pos, mask = shared_prompt_batch(pairs, pad_id=0, device="cpu")
    assert x.tolist() == [[1, 2, 3, 4, 5, 6, 7, 8], [9, 10, 11, 0, 0, 0, 0, 0]]
    assert pos[0].tolist() == [0, 1, 2, 3, 4, 3, 4, 5]  # the rejected reply starts where the prompt ends
    assert y[0].tolist() == [-1, -1, 4, 5, -1, -1, -1, -1]  # chosen: predicted from positions 2 and 3
    assert y[2].tolist() == [-1, -1, 6, -1, -1, 7, 8, -1]  # rejected: its first token from the prompt's end
    assert y[3].tolist() == [11, -1, -1, -1, -1, -1, -1, -1]
    m = mask[0, 0]
    assert m[5, :3].all() and not m[5, 3:5].any() and m[5, 5]  # rejected sees the prompt and itself only
    assert m[4, 3] and not m[3, 4]  # causal within the chosen reply


def test_same_logps_and_gradients_as_two_rows():
    V = 97
    model = _model(V)
    pairs = _pairs(5, V)
    x2, y2, _ = pair_batch(pairs, 0, "cpu")
    want = reply_logps(model, x2, y2)
    x, y, pos, mask = shared_prompt_batch(pairs, 0, "cpu")
    got = reply_logps(model, x, y, positions=pos, mask=mask)
    assert x.numel() < x2.numel()
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-5)
    B = len(pairs)
    grads = []
    for lp in (want, got):  # two separate graphs over the same weights
        model.zero_grad()
        dpo_loss(lp[:B], lp[B:], torch.zeros(B), torch.zeros(B), 0.1)[0].backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None]))
    assert grads[0].abs().sum() > 0
    torch.testing.assert_close(grads[1], grads[0], atol=1e-5, rtol=1e-4)


@pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated:DeprecationWarning")  # torch's own import
def test_compile_reaches_the_blocks_that_run():
    """`chatforge dpo --compile` used to wrap the model, whose forward the DPO step never calls
    (hidden_states runs the blocks): nothing was compiled. Now each block is compiled in place."""
    from chatforge.posttrain.dpo import compile_blocks

    model = _model(97)
    assert all(b._compiled_call_impl is None for b in model.model.layers)
    compile_blocks(model)
    assert all(b._compiled_call_impl is not None for b in model.model.layers)
