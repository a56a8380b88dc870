"""The static (CUDA-graph-ready) decoder computes what the model's own KV-cache forward computes."""

import pytest
import torch

from chatforge.infer.decode import ModelDecoder, StaticDecoder
from chatforge.model import GPT, GPTConfig


@pytest.mark.parametrize("n_kv_head,pad_rows", [(None, False), (1, False), (None, True)])
def test_static_decoder_matches_model_forward(n_kv_head, pad_rows):
    """GQA or not; pad_rows: 3 live rows decoded as 4 (what CUDA graphs and compile do)."""
    torch.manual_seed(0)
    extra = {} if n_kv_head is None else {"n_kv_head": n_kv_head}
    model = GPT(GPTConfig.from_preset("d2", vocab_size=300, seq_len=128, **extra))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 2:
                p.normal_(0, 1.0 if "embed" in name else 0.1)
    model.eval()
    ids = torch.randint(0, 300, (3, 20))
    mask = torch.ones(3, 20, dtype=torch.long)
    mask[0, :7] = 0  # ragged rows, left-padded
    mask[2, :3] = 0
    with torch.inference_mode():
        fast, ref = StaticDecoder(model, 6, 64), ModelDecoder(model, 3, 64)
        fast.pad_rows = pad_rows
        a, b = fast.prefill(ids, mask), ref.prefill(ids, mask)
        assert torch.allclose(a, b, atol=1e-4)
        for step in range(6):
            if step == 3:  # duplicate and drop rows in place (n samples / finished rows)
                idx = torch.tensor([2, 0, 0, 1])
                fast.select(idx), ref.select(idx)
                a, b = a[idx], b[idx]
            t = a.argmax(-1)
            a, b = fast.step(t, pick=pad_rows), ref.step(t)
            assert a.shape == b.shape and torch.allclose(a, b, atol=1e-4), step
            if pad_rows:  # the greedy pick covers the live rows only
                assert torch.equal(fast.picked[0], a.argmax(-1)) and fast.picked[1].shape == (2, len(t))
    assert fast.pos == ref.pos == 26


@pytest.mark.parametrize("inference_tensors", [False, True])
def test_static_decoder_follows_weights_changed_in_place(inference_tensors):
    """The decoder's fused q/k/v and gate/up copies follow an in-place weight update (an optimizer
    step between generations, as in RL) at the next prefill; also for a model built under
    torch.inference_mode, whose weights have no version counter (that once raised)."""
    torch.manual_seed(0)
    with torch.inference_mode(inference_tensors):
        model = GPT(GPTConfig.from_preset("d2", vocab_size=300, seq_len=128)).eval()
    with torch.inference_mode(inference_tensors), torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.normal_(0, 0.1)
    ids = torch.randint(0, 300, (2, 10))
    with torch.inference_mode():
        fast = StaticDecoder(model, 2, 64)
        before = fast.prefill(ids, None)
        with torch.no_grad():  # (inside inference mode: inference tensors can only change there)
            for layer in model.model.layers:
                layer.self_attn.k_proj.weight.mul_(3.0)
                layer.mlp.up_proj.weight.add_(0.05)
        after = fast.prefill(ids, None)
        expected = ModelDecoder(model, 2, 64).prefill(ids, None)
    assert not torch.allclose(before, expected, atol=1e-3)
    torch.testing.assert_close(after, expected, atol=1e-4, rtol=1e-4)


def check_against_model_forward(device, compile=False, steps=300):
    torch.manual_seed(0)
    model = GPT(GPTConfig.from_preset("d2", vocab_size=300, seq_len=1024, n_kv_head=1)).to(device)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 2:
                p.normal_(0, 1.0 if "embed" in name else 0.1)
    model.eval()
    ids = torch.randint(0, 300, (3, 20), device=device)
    mask = torch.ones(3, 20, dtype=torch.long, device=device)
    mask[0, :7] = 0
    close = dict(atol=2e-3, rtol=2e-3)
    with torch.inference_mode():
        fast = StaticDecoder(model, 8, 600, cuda_graphs=True, compile=compile)
        ref = ModelDecoder(model, 3, 600, dtype=torch.float32)  # fp32 cache on CUDA too
        a, b = fast.prefill(ids, mask), ref.prefill(ids, mask)
        for step in range(steps):  # on CUDA this crosses the 256-position bucket boundary
            if step == steps // 3:
                idx = torch.tensor([2, 0, 0, 1], device=device)
                fast.select(idx), ref.select(idx)
                b = b[idx]
            t = b.argmax(-1)
            pick = step % 2 == 0  # all-greedy steps: the argmax and its log-prob come from the step (graph) itself
            a, b = fast.step(t, pick=pick), ref.step(t)
            torch.testing.assert_close(a, b, **close)
            if pick:
                ids, both = fast.picked
                assert torch.equal(ids, a.argmax(-1)) and torch.equal(both[0].long(), ids)
                torch.testing.assert_close(both[1], torch.log_softmax(a, -1).gather(1, ids[:, None])[:, 0])
            else:
                assert fast.picked is None
        # a late row joins at the batch position and continues like the same prompt run alone
        late = torch.randint(0, 300, (1, 50), device=device)
        alone = ModelDecoder(model, 1, 600, dtype=torch.float32)
        c = alone.prefill(late, None)
        torch.testing.assert_close(fast.join(late, torch.ones_like(late)), c, **close)
        for _ in range(5):
            t = torch.cat([b.argmax(-1), c.argmax(-1)])
            out = fast.step(t)
            b, c = ref.step(t[:4]), alone.step(t[4:])
            torch.testing.assert_close(out[:4], b, **close)
            torch.testing.assert_close(out[4:], c, **close)
    return fast


def test_decoder_drop_duplicate_join_rows_cpu():
    check_against_model_forward("cpu", steps=40)


@pytest.mark.gpu
@pytest.mark.parametrize("compile", [False, True])
def test_cuda_graph_decoder_matches_model_forward(compile):
    """On a GPU: the CUDA-graph path (captured per batch size and 256-position bucket; rows
    dropped, duplicated and joined in place) computes what the model's own forward computes."""
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    fast = check_against_model_forward("cuda", compile=compile)
    assert fast.use_graphs and len(fast.graphs) >= 3  # rows padded to 4 or 8: (4, 256), (4, 512), (8, 512)


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated:DeprecationWarning")  # torch internals
def test_compiled_decoder_cpu():
    """torch.compile'd decode step (needs a C++ compiler for inductor; ~30 s of compiling)."""
    fast = check_against_model_forward("cpu", compile=True, steps=40)
    assert fast._step_fn is not fast._forward  # still compiled: no fallback to eager happened
