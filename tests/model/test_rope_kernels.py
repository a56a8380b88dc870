"""RoPE with a hand-written backward (model/rope_kernels.py): the model gives the same loss and
gradients with it, and the Triton kernel (run by Triton's CPU interpreter) matches its PyTorch twin."""

import pytest
import torch

from chatforge.model.gpt import GPT, GPTConfig


@pytest.mark.parametrize("kv_heads", [None, 1])
def test_rope_kernel_path_gives_the_same_loss_and_gradients(kv_heads, loss_and_grads_switched):
    cfg = GPTConfig.from_preset("d2", vocab_size=64, seq_len=16, **({"n_kv_head": kv_heads} if kv_heads else {}))
    torch.manual_seed(0)
    model = GPT(cfg)
    torch.nn.init.normal_(model.model.layers[0].self_attn.o_proj.weight, std=0.05)  # zero-init would hide q/k grads
    x = torch.randint(0, 64, (2, 16))
    (l0, g0), (l1, g1) = loss_and_grads_switched(model, x, "self_attn.rope_kernel")
    assert torch.allclose(l0, l1, rtol=0, atol=1e-6)
    q = "model.layers.0.self_attn.q_proj.weight"
    assert g0[q].abs().max() > 0
    for name in g0:
        assert torch.allclose(g0[name], g1[name], rtol=1e-4, atol=1e-7), name


SCRIPT = r"""
import torch
from chatforge.model import rope_kernels as R
torch.manual_seed(0)
B, T, H, HKV, D = 2, 37, 4, 2, 16          # 74 rows: not a multiple of the 16-row block; GQA
cos, sin = torch.randn(T, 1, D // 2), torch.randn(T, 1, D // 2)
c, s = cos.reshape(T, -1).contiguous(), sin.reshape(T, -1).contiguous()
for dtype in (torch.float32, torch.bfloat16):
    dq = torch.randn(B, T, H, D).to(dtype)                                   # dense [B, T, H, D]
    dk = torch.randn(B, H, T, D)[:, :HKV].transpose(1, 2).to(dtype)          # a strided view
    dv = torch.randn(B, HKV, T, D).to(dtype).transpose(1, 2)                 # [B, H, T, D] memory, as SDPA returns it
    ref = R.rope_qkv_backward_reference(dq, dk, dv, cos, sin)
    out = torch.full((B, T, H + 2 * HKV, D), 7.0).to(dtype)
    R.launch_rope_qkv_backward(dq, dk, dv, c, s, out, block_rows=16)
    assert torch.equal(out[:, :, H + HKV:], ref[:, :, H + HKV:]), "v's slice is a copy"
    if dtype == torch.float32:
        assert torch.equal(out, ref), (out - ref).abs().max()
    else:  # the interpreter truncates fp32 -> bf16 where a GPU rounds to nearest: the twin, truncating
        trunc = lambda t: (t.float().view(torch.int32) & ~0xFFFF).view(torch.float32)  # noqa: E731
        tc, ts = trunc(cos), trunc(sin)
        g = lambda t: t.float()  # noqa: E731
        d = D // 2
        unrot = lambda t: torch.cat((trunc(g(t[..., :d]) * tc + g(t[..., d:]) * ts),  # noqa: E731
                                     trunc(g(t[..., d:]) * tc - g(t[..., :d]) * ts)), -1)
        assert torch.equal(out[:, :, :H].float(), unrot(dq)) and torch.equal(out[:, :, H:H + HKV].float(), unrot(dk))
        assert ((out.float() - ref.float()).abs() <= 2.0 ** -6 * ref.float().abs().max()).all()
print("ok")
"""


def test_rope_backward_kernel_in_the_triton_interpreter(triton_interpreter):
    triton_interpreter(SCRIPT)
