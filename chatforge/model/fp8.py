"""FP8 matmuls for training on Hopper/Ada GPUs (H100/H200): `fp8_linear(x, w)` = x @ w.T.

FP8 tensor cores have twice bf16's peak rate (NVIDIA's Hopper specifications). Both operands go
to float8_e4m3 and, in the backward pass, the incoming gradient to float8_e5m2 (more range, less
precision), through `torch._scaled_mm` with one scale per tensor (value = fp8 * scale). Outputs
come back in the autocast dtype (bf16) and weight gradients in the weight's dtype, so the optimizer,
checkpoints and evaluation never see FP8.

What `chatforge train --fp8 MODE` puts in FP8 (GPT.set_fp8; `auto` picks forward or all by width,
`resolve_mode`); which pays depends on the width,
because the scale and cast passes cost tokens x width while the matmuls save tokens x width^2
(H100 numbers in docs/benchmarks.md):
- head: the output head, forward and backward (as modded-nanogpt does).
- forward: the head, plus the forward matmul of every block linear with a static input scale
  (below), so the cast fuses into the kernel that makes the input and nothing is measured; the
  backward stays bf16 (`fp8_forward_linear`). Best at d12.
- all: every matmul, forward and backward (`fp8_linear`); the gradients' scales are measured.
  Best at d20.

Two ways to pick the scales:
- Dynamic (the default): each tensor's scale is max|t| / fp8_max, measured every call. This is
  the "tensorwise dynamic" recipe of PyTorch's torchao float8 training. Each measurement is a
  pass over the tensor before its cast; the saved activations take half of bf16's memory.
- Static where a bound is known (it needs RMSNorm without gains, the default). An RMSNorm output
  has every element at most sqrt(width) in size (`rmsnorm_output_scale`): the q/k/v, gate/up
  and head inputs. The attention output averages rows of v = x @ Wv.T, and |silu(g) * u| <=
  |g| * |u|, so o_proj's and down_proj's inputs are bounded through the weights' row norms
  (`matmul_output_bound`, Cauchy-Schwarz). A bound is looser than the measured maximum, which
  costs small values some precision (150-step d12 runs ended within 0.002 bpb of bf16,
  docs/benchmarks.md). The head's gradient is d(mean cross-entropy)/d(logits), at most 1/rows
  per element, so `grad_scale = 1/(rows*1024)`: e5m2 reaches 57344, so even 1 row in 56
  counting fits, and anything beyond is clamped rather than turned into inf/NaN.
"""

from __future__ import annotations

import torch

from chatforge.model.fp8_kernels import ce_grad_fp8

E4M3, E5M2 = torch.float8_e4m3fn, torch.float8_e5m2
E4M3_MAX, E5M2_MAX = torch.finfo(E4M3).max, torch.finfo(E5M2).max
MODES = ("off", "head", "forward", "all")
TRAIN_MODES = ("auto",) + MODES  # what `chatforge train --fp8` takes (`resolve_mode` turns auto into one of MODES)
AUTO_ALL_FROM_WIDTH = 1024  # `auto`: `all` from this width up, `forward` below (H100: d12 and d20, docs/benchmarks.md)
# Forward matmuls accumulate with Hopper's fast FP8 accumulation (no periodic promotion to fp32):
# their K is the width (768-1280 here), short enough for it, as in torchao's float8 recipe; the
# gradient matmuls, whose weight-gradient K is every token of the batch, keep the exact mode.
FAST_ACCUM_FORWARD = True


def fp8_supported(device) -> bool:
    """FP8 tensor cores: compute capability 8.9 (Ada) or 9.0+ (Hopper)."""
    device = torch.device(device)
    return device.type == "cuda" and torch.cuda.get_device_capability(device) >= (8, 9)


def resolve_mode(mode: str, width: int, device) -> str:
    """The FP8 mode to train with: `auto` is the faster of `forward` and `all` for this width (H100
    measurements) where FP8 tensor cores exist, else off; any mode is off on other devices."""
    if mode not in TRAIN_MODES:
        raise ValueError(f"unknown fp8 mode {mode!r}: {', '.join(TRAIN_MODES)}")
    if not fp8_supported(device):
        return "off"
    if mode == "auto":
        return "all" if width >= AUTO_ALL_FROM_WIDTH else "forward"
    return mode


def _amax_scale(t, limit):
    """Dynamic per-tensor scale: the largest magnitude maps to the format's largest value."""
    return (t.detach().abs().amax().float() / limit).clamp_min(1e-12)


def _const_scale(value, like):
    if isinstance(value, torch.Tensor):  # a bound computed from the weights (matmul_output_bound)
        return value.detach().float().clamp_min(1e-12)
    return torch.tensor(value, device=like.device, dtype=torch.float32)


def _to_fp8(t, scale, dtype, limit):
    return (t / scale).clamp(-limit, limit).to(dtype)


def _col_major(t):
    """The same matrix laid out column-major, as _scaled_mm wants its second operand."""
    return t.t().contiguous().t()


def _out_dtype(x):
    """What F.linear would return: the autocast dtype (bf16 when training on GPU), else x's own dtype."""
    kind = x.device.type
    return torch.get_autocast_dtype(kind) if torch.is_autocast_enabled(kind) else x.dtype


def _fp8_matmul(x, w, x_scale, out_dtype):
    """The forward matmul x @ w.T in FP8 (x_scale None = measured); returns the output and what
    the backward needs: (y, x_f8, w_f8, x_s, w_s)."""
    x_s = _amax_scale(x, E4M3_MAX) if x_scale is None else _const_scale(x_scale, x)
    w_s = _amax_scale(w, E4M3_MAX)
    x_f8, w_f8 = _to_fp8(x, x_s, E4M3, E4M3_MAX), _to_fp8(w, w_s, E4M3, E4M3_MAX)
    y = torch._scaled_mm(x_f8, w_f8.t(), scale_a=x_s, scale_b=w_s, out_dtype=out_dtype, use_fast_accum=FAST_ACCUM_FORWARD)
    return y, x_f8, w_f8, x_s, w_s


def _fp8_grad_matmuls(g_f8, g_f8_t, g_s, x_f8, x_s, w_f8, w_s, grad_x_dtype, w_dtype):
    """The two backward matmuls from the e5m2 gradient (g_f8 [M, N]) and its transpose (g_f8_t [N, M],
    contiguous): grad_x = g @ w, grad_w = g.T @ x, in the layouts _scaled_mm takes."""
    grad_x = torch._scaled_mm(g_f8, _col_major(w_f8), scale_a=g_s, scale_b=w_s, out_dtype=grad_x_dtype)
    grad_w = torch._scaled_mm(x_f8.t().contiguous(), g_f8_t.t(), scale_a=x_s, scale_b=g_s,
                              out_dtype=torch.float32).t()
    return grad_x, grad_w.to(w_dtype)


class _FP8Linear(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, w, x_scale, grad_scale_per_row, out_dtype):
        y, x_f8, w_f8, x_s, w_s = _fp8_matmul(x, w, x_scale, out_dtype)
        ctx.save_for_backward(x_f8, w_f8, x_s, w_s)
        ctx.w_dtype, ctx.grad_scale_per_row = w.dtype, grad_scale_per_row
        return y

    @staticmethod
    def backward(ctx, grad):
        x_f8, w_f8, x_s, w_s = ctx.saved_tensors
        if ctx.grad_scale_per_row is None:
            g_s = _amax_scale(grad, E5M2_MAX)
        else:
            g_s = _const_scale(ctx.grad_scale_per_row / grad.size(0), grad)
        g_f8 = _to_fp8(grad, g_s, E5M2, E5M2_MAX)
        grad_x, grad_w = _fp8_grad_matmuls(g_f8, g_f8.t().contiguous(), g_s, x_f8, x_s, w_f8, w_s,
                                           torch.bfloat16, ctx.w_dtype)
        return grad_x, grad_w, None, None, None


class _FP8ForwardLinear(torch.autograd.Function):
    """FP8 forward matmul with a static input scale; the backward matmuls stay in bf16, so no gradient
    is measured or cast (those passes are what FP8 costs at small widths; docs/benchmarks.md)."""

    @staticmethod
    def forward(ctx, x, w, x_scale, out_dtype):
        ctx.save_for_backward(x.to(out_dtype), w)  # what autocast's F.linear would save
        return _fp8_matmul(x, w, x_scale, out_dtype)[0]

    @staticmethod
    def backward(ctx, grad):
        x, w = ctx.saved_tensors
        grad_x = grad.mm(w.to(grad.dtype))
        grad_w = grad.t().mm(x.to(grad.dtype))
        return grad_x, grad_w.to(w.dtype), None, None


def fp8_forward_linear(x: torch.Tensor, w: torch.Tensor, x_scale: float) -> torch.Tensor:
    """x @ w.T with the forward matmul in FP8 (static input scale) and a bf16 backward."""
    lead = x.shape[:-1]
    return _FP8ForwardLinear.apply(x.reshape(-1, x.size(-1)), w, x_scale, _out_dtype(x)).view(*lead, w.size(0))


def fp8_linear(x: torch.Tensor, w: torch.Tensor, x_scale: float | None = None,
               grad_scale_per_row: float | None = None) -> torch.Tensor:
    """x [..., K] @ w[N, K].T -> [..., N] (autocast dtype), through FP8 matmuls forward and backward.

    Scales are measured per call unless given: `x_scale` fixes the input's, `grad_scale_per_row`
    fixes the gradient's as grad_scale_per_row / rows (the static head recipe, module docstring).
    """
    lead = x.shape[:-1]
    out = _FP8Linear.apply(x.reshape(-1, x.size(-1)), w, x_scale, grad_scale_per_row, _out_dtype(x))
    return out.view(*lead, w.size(0))


def rmsnorm_output_scale(width: int, norm_gains: bool) -> float | None:
    """Static FP8 scale for an RMSNorm's output: |x_i| <= sqrt(width) when the norm has no gains
    (sum x_i^2 = width). With learnable gains there is no bound: None (measured per call)."""
    return None if norm_gains else width ** 0.5 / E4M3_MAX


def matmul_output_bound(w: torch.Tensor, width: int) -> torch.Tensor:
    """Per output feature, the largest |(x @ w.T)_i| for any x with ||x||_2 <= sqrt(width), i.e. any
    RMSNorm output without gains: sqrt(width) * ||w_i||_2 (Cauchy-Schwarz). Weight-sized work."""
    return width ** 0.5 * w.detach().float().norm(dim=1)


HEAD_GRAD_SCALE_PER_ROW = 1.0 / 1024  # the head's static gradient scale, per row (module docstring)


def fp8_head_linear(x: torch.Tensor, w: torch.Tensor, norm_gains: bool = False) -> torch.Tensor:
    """The output head: x is the final RMSNorm's output; the gradient scale is static (docstring)."""
    return fp8_linear(x, w, x_scale=rmsnorm_output_scale(x.size(-1), norm_gains), grad_scale_per_row=HEAD_GRAD_SCALE_PER_ROW)


class _FP8HeadCrossEntropy(torch.autograd.Function):
    """Mean cross-entropy of x @ w.T, the matmuls in FP8. The backward writes the logits' gradient
    once, as e5m2, in both layouts the two gradient matmuls want (model/fp8_kernels.py), instead
    of a bf16 gradient, its cast and a strided transposed copy."""

    @staticmethod
    def forward(ctx, x, w, targets, x_scale, out_dtype):
        logits, x_f8, w_f8, x_s, w_s = _fp8_matmul(x, w, x_scale, out_dtype)
        lse = torch.logsumexp(logits.float(), dim=-1)
        valid = targets >= 0
        target_logit = logits.gather(1, targets.clamp_min(0)[:, None]).squeeze(1).float()
        count = valid.sum()
        loss = torch.where(valid, lse - target_logit, 0.0).sum() / count
        ctx.save_for_backward(x_f8, w_f8, x_s, w_s, logits, lse, targets, count)
        ctx.w_dtype = w.dtype
        return loss

    @staticmethod
    def backward(ctx, dloss):
        x_f8, w_f8, x_s, w_s, logits, lse, targets, count = ctx.saved_tensors
        rows = logits.size(0)
        g_s = _const_scale(HEAD_GRAD_SCALE_PER_ROW / rows, logits)
        coef = (dloss.float() / count / g_s).reshape(1)  # d(loss)/d(logit) = dloss * (p - onehot) / count
        g_f8, g_f8_t = ce_grad_fp8(logits, lse, targets, coef)
        grad_x, grad_w = _fp8_grad_matmuls(g_f8, g_f8_t, g_s, x_f8, x_s, w_f8, w_s, logits.dtype, ctx.w_dtype)
        return grad_x, grad_w, None, None, None


def fp8_head_cross_entropy(x: torch.Tensor, w: torch.Tensor, targets: torch.Tensor,
                           norm_gains: bool = False) -> torch.Tensor:
    """F.cross_entropy(x @ w.T, targets, ignore_index=-1) with the head's matmuls in FP8 (x: the final
    RMSNorm's output, [..., K]; targets [...]). Same scales as fp8_head_linear."""
    x2 = x.reshape(-1, x.size(-1))
    scale = rmsnorm_output_scale(x.size(-1), norm_gains)
    return _FP8HeadCrossEntropy.apply(x2, w, targets.reshape(-1), scale, _out_dtype(x))
