"""The static (CUDA-graph-ready) decoder computes what the model's own KV-cache forward computes."""

import pytest
import torch

from chatforge.infer.decode import ModelDecoder, StaticDecoder
from chatforge.model import GPT, GPTConfig


@pytest.mark.parametrize("n_kv_head", [None, 1])  # plain multi-head and grouped-query attention
def test_static_decoder_matches_model_forward(n_kv_head):
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
        a, b = fast.prefill(ids, mask), ref.prefill(ids, mask)
        assert torch.allclose(a, b, atol=1e-4)
        for step in range(6):
            if step == 3:  # duplicate and drop rows in place (n samples / finished rows)
                idx = torch.tensor([2, 0, 0, 1])
                fast.select(idx), ref.select(idx)
                a, b = a[idx], b[idx]
            t = a.argmax(-1)
            a, b = fast.step(t), ref.step(t)
            assert torch.allclose(a, b, atol=1e-4), step
    assert fast.pos == ref.pos == 26
