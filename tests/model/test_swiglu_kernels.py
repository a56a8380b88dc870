"""SwiGLU with a hand-written backward (model/swiglu_kernels.py): the model gives the same loss and
gradients with it, and the Triton kernel (run by Triton's CPU interpreter) matches its PyTorch twin."""

import pytest
import torch

from chatforge.model.gpt import GPT, GPTConfig
from chatforge.model.swiglu_kernels import swiglu, swiglu_backward_reference


def test_swiglu_reference_is_the_gradient_of_silu_gate_times_up():
    torch.manual_seed(0)
    gate_up = torch.randn(5, 2, 12, dtype=torch.float64, requires_grad=True)
    dh = torch.randn(5, 2, 6, dtype=torch.float64)
    gate, up = gate_up.chunk(2, dim=-1)
    (torch.nn.functional.silu(gate) * up).backward(dh)
    close = lambda a, b: torch.allclose(a, b, rtol=1e-5, atol=1e-6)  # noqa: E731 (the twin computes in fp32)
    assert close(swiglu_backward_reference(gate_up.detach(), dh), gate_up.grad)
    x = gate_up.detach().clone().requires_grad_()
    swiglu(x).backward(dh)
    assert close(x.grad, gate_up.grad)


@pytest.mark.skipif(not hasattr(torch, "_scaled_mm"), reason="this torch has no _scaled_mm")
def test_swiglu_kernel_path_gives_the_same_loss_and_gradients(loss_and_grads_switched):
    torch.manual_seed(0)
    model = GPT(GPTConfig.from_preset("d2", vocab_size=64, seq_len=16))
    for block in model.model.layers:
        torch.nn.init.normal_(block.mlp.down_proj.weight, std=0.05)  # zero-init would hide gate/up grads
    model.set_fp8("forward")  # the fused gate/up path (CPU _scaled_mm runs it)
    x = torch.randint(0, 64, (2, 16))
    (l0, g0), (l1, g1) = loss_and_grads_switched(model, x, "mlp.swiglu_kernel")
    assert torch.equal(l0, l1)
    assert g0["model.layers.0.mlp.gate_proj.weight"].abs().max() > 0
    for name in g0:
        assert torch.allclose(g0[name], g1[name], rtol=1e-4, atol=1e-7), name


SCRIPT = r"""
import torch
from chatforge.model import swiglu_kernels as S
torch.manual_seed(0)
M, I = 70, 200                                  # neither a multiple of the 32 x 128 tile
for dtype in (torch.float32, torch.bfloat16):
    gate_up = (torch.randn(M, 2 * I) * 3).to(dtype)
    dh = torch.randn(M, I).to(dtype)
    ref = S.swiglu_backward_reference(gate_up, dh).float()
    out = torch.full((M, 2 * I), 7.0).to(dtype)
    S.launch_swiglu_backward(gate_up, dh, out)
    o = out.float()
    if dtype == torch.float32:
        assert torch.allclose(o, ref, rtol=1e-5, atol=1e-6), (o - ref).abs().max()
    else:  # the interpreter truncates fp32 -> bf16 where a GPU rounds to nearest: within 1 bf16 step
        assert ((o - ref).abs() <= 2.0 ** -7 * ref.abs() + 1e-6).all(), (o - ref).abs().max()
print("ok")
"""


def test_swiglu_backward_kernel_in_the_triton_interpreter(triton_interpreter):
    triton_interpreter(SCRIPT)


@pytest.mark.skipif(not hasattr(torch, "_scaled_mm"), reason="this torch has no _scaled_mm")
def test_swiglu_kernel_only_with_fp8_forward(monkeypatch):
    """With --fp8 all, inductor fuses the gradient's amax into its own SwiGLU backward: the switch
    must leave that path alone."""
    import chatforge.model.gpt as G
    used = []
    monkeypatch.setattr(G, "swiglu", lambda gate_up: used.append(1) or swiglu(gate_up))
    model = GPT(GPTConfig.from_preset("d2", vocab_size=64, seq_len=16))
    for block in model.model.layers:
        block.mlp.swiglu_kernel = True
    x = torch.randint(0, 64, (2, 16))
    model.set_fp8("all")
    model(x, targets=x)
    assert used == []
    model.set_fp8("forward")
    model(x, targets=x)
    assert len(used) == 2
