"""FP8 matmuls for the output head during training (Hopper: H100/H200), as modded-nanogpt does.

The lm_head is the widest matmul of a small GPT (d12: 768 x 32768, a quarter of the step's matmul
FLOPs), and FP8 tensor cores have twice bf16's peak rate (NVIDIA's Hopper specifications; measured
here: +2.3% for a whole d12 step, docs/benchmarks.md). `fp8_linear(x, w)` computes x @ w.T with
both operands in float8_e4m3 and, in the backward pass, the incoming gradient in float8_e5m2
(more range, less precision), through `torch._scaled_mm`. Scales (value = fp8 * scale):
- x: sqrt(width) / 448. The head's input comes out of an RMSNorm without gains, so every element
  is at most sqrt(width) in size and fits e4m3's +-448 with no measurement.
- w: max|w| / 448, measured each call (one small reduction over the weight).
- grad: 1 / (rows * 1024). The head's gradient is d(mean cross-entropy)/d(logits), at most 1/rows
  per element when every row counts; e5m2 reaches 57344, so even 1 row in 56 counting fits, and
  anything beyond is clamped rather than turned into inf/NaN.
Weights stay in their own dtype (the optimizer and checkpoints never see FP8).
"""

from __future__ import annotations

import torch

E4M3, E5M2 = torch.float8_e4m3fn, torch.float8_e5m2
E4M3_MAX, E5M2_MAX = torch.finfo(E4M3).max, torch.finfo(E5M2).max


def fp8_supported(device) -> bool:
    """FP8 tensor cores: compute capability 8.9 (Ada) or 9.0+ (Hopper)."""
    device = torch.device(device)
    return device.type == "cuda" and torch.cuda.get_device_capability(device) >= (8, 9)


def _to_fp8(t, scale, dtype, limit):
    return (t / scale).clamp(-limit, limit).to(dtype)


def _col_major(t):
    """The same matrix laid out column-major, as _scaled_mm wants its second operand."""
    return t.t().contiguous().t()


class _FP8Linear(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, w):
        x_s = torch.tensor(x.size(-1) ** 0.5 / E4M3_MAX, device=x.device, dtype=torch.float32)
        w_s = (w.detach().abs().amax().float() / E4M3_MAX).clamp_min(1e-12)
        x_f8, w_f8 = _to_fp8(x, x_s, E4M3, E4M3_MAX), _to_fp8(w, w_s, E4M3, E4M3_MAX)
        ctx.save_for_backward(x_f8, w_f8, x_s, w_s)
        ctx.w_dtype = w.dtype
        return torch._scaled_mm(x_f8, w_f8.t(), scale_a=x_s, scale_b=w_s, out_dtype=torch.bfloat16)

    @staticmethod
    def backward(ctx, grad):
        x_f8, w_f8, x_s, w_s = ctx.saved_tensors
        g_s = torch.tensor(1.0 / (grad.size(0) * 1024), device=grad.device, dtype=torch.float32)
        g_f8 = _to_fp8(grad, g_s, E5M2, E5M2_MAX)
        grad_x = torch._scaled_mm(g_f8, _col_major(w_f8), scale_a=g_s, scale_b=w_s, out_dtype=torch.bfloat16)
        grad_w = torch._scaled_mm(x_f8.t().contiguous(), _col_major(g_f8), scale_a=x_s, scale_b=g_s,
                                  out_dtype=torch.float32).t()
        return grad_x, grad_w.to(ctx.w_dtype)


def fp8_linear(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """x [..., K] @ w[N, K].T -> [..., N] in bf16, through FP8 matmuls (forward and backward)."""
    lead = x.shape[:-1]
    return _FP8Linear.apply(x.reshape(-1, x.size(-1)), w).view(*lead, w.size(0))
