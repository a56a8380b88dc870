"""Muon (train/optim.py) against a plain per-matrix reference of the same update rule."""

import pytest
import torch

from chatforge.train.optim import Muon, zeropower_via_newtonschulz5


def test_muon_matches_the_per_matrix_reference():
    """Nesterov momentum, Newton-Schulz, the shape scale and decoupled weight decay, written out
    matrix by matrix; Muon batches same-shape matrices and fuses the elementwise work."""
    torch.manual_seed(0)
    shapes = [(32, 16), (32, 16), (16, 48), (24, 24), (32, 16)]  # groups of equal shapes and a singleton
    grads_per_step = [[torch.randn(*s) for s in shapes] for _ in range(3)]
    lrs, momentum, wd = [0.05, 0.05, 0.01], 0.9, 0.1  # the schedule changes lr between steps
    weights = [torch.randn(*s) for s in shapes]

    params = [torch.nn.Parameter(w.clone()) for w in weights]
    opt = Muon(params, lr=lrs[0], momentum=momentum, weight_decay=wd)
    for lr, grads in zip(lrs, grads_per_step):
        opt.param_groups[0]["lr"] = lr
        for p, g in zip(params, grads):
            p.grad = g.clone()
        opt.step()

    ws, bufs = [w.clone() for w in weights], [torch.zeros_like(w) for w in weights]
    for lr, grads in zip(lrs, grads_per_step):
        for i, g in enumerate(grads):
            bufs[i] = momentum * bufs[i] + (1 - momentum) * g
            ortho = zeropower_via_newtonschulz5((1 - momentum) * g + momentum * bufs[i], 5)
            scale = max(1.0, shapes[i][0] / shapes[i][1]) ** 0.5
            ws[i] = ws[i] * (1 - lr * wd) - lr * scale * ortho
    for p, w, b in zip(params, ws, bufs):
        torch.testing.assert_close(p.detach(), w, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(opt.state[p]["momentum_buffer"], b, atol=1e-6, rtol=1e-6)


def test_lr_scale_multiplies_every_group_rate_and_its_schedule_base():
    """Fine-tuning's --lr-frac: every group (AdamW's and Muon's) starts at scale x the pretraining rate."""
    from chatforge.model import GPT, GPTConfig
    from chatforge.train.optim import build_optimizers

    model = GPT(GPTConfig(vocab_size=64, n_layer=1, n_head=2, n_kv_head=2, n_embd=32, intermediate_size=64, seq_len=16))
    full, scaled = build_optimizers(model), build_optimizers(model, lr_scale=0.05)
    pairs = [(a, b) for o1, o2 in zip(full, scaled) for a, b in zip(o1.param_groups, o2.param_groups)]
    assert len(pairs) >= 3  # embeddings, head, matrices at least
    for a, b in pairs:
        assert b["lr"] == pytest.approx(0.05 * a["lr"]) and b["initial_lr"] == pytest.approx(0.05 * a["initial_lr"])
