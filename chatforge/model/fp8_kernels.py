"""Triton kernels for the FP8 training path (model/fp8.py), with plain-PyTorch twins for CPU.

`_scaled_mm` on Hopper takes only row-major x column-major operands, so the weight-gradient matmul
wants the gradient transposed: a second copy of a tensor that is often the size of the logits
(65,536 x 32,768 at d12). Written by inductor from the row-major gradient, that copy's stores are
strided (consecutive bytes of a row land a column apart). These kernels write both layouts from
registers, one tile at a time, so both stores are coalesced and the gradient is never written in
bf16 (H100 numbers: docs/benchmarks.md).

- `ce_grad_fp8`: the gradient of the mean cross-entropy with respect to the logits, computed from
  the saved logits and log-sum-exp and written straight to float8_e5m2, row-major and transposed.
"""

from __future__ import annotations

import torch

try:
    import triton
    import triton.language as tl
except ImportError:  # CPU-only installs: the torch twins below do the work
    triton = None

E5M2 = torch.float8_e5m2
E5M2_MAX = torch.finfo(E5M2).max


def ce_grad_fp8_reference(logits, lse, targets, coef):
    """(softmax(logits) - onehot(targets)) * coef, zero on rows whose target is -1, as e5m2 in both
    layouts: ([M, V], [V, M] contiguous). coef is a 1-element fp32 tensor (the gradient's FP8 scale folded in)."""
    p = torch.exp(logits.float() - lse[:, None])
    rows = torch.arange(logits.size(0), device=logits.device)
    valid = targets >= 0
    p[rows[valid], targets[valid]] -= 1.0
    g = (p * torch.where(valid, coef.reshape(()), 0.0)[:, None]).clamp(-E5M2_MAX, E5M2_MAX).to(E5M2)
    return g, g.t().contiguous()


if triton is not None:
    @triton.jit
    def _ce_grad_fp8_kernel(logits_ptr, lse_ptr, targets_ptr, coef_ptr, out_ptr, out_t_ptr, M, V,
                            BLOCK_M: tl.constexpr, BLOCK_V: tl.constexpr):
        pid_m, pid_v = tl.program_id(0), tl.program_id(1)
        rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
        cols = pid_v * BLOCK_V + tl.arange(0, BLOCK_V)
        row_ok, col_ok = rows < M, cols < V
        mask = row_ok[:, None] & col_ok[None, :]
        rows64 = rows.to(tl.int64)
        logit = tl.load(logits_ptr + rows64[:, None] * V + cols[None, :], mask=mask, other=0.0).to(tl.float32)
        lse = tl.load(lse_ptr + rows, mask=row_ok, other=0.0)
        target = tl.load(targets_ptr + rows, mask=row_ok, other=-1)
        coef = tl.load(coef_ptr)
        p = tl.exp(logit - lse[:, None])
        p = tl.where(cols[None, :] == target[:, None], p - 1.0, p)
        g = p * tl.where(target >= 0, coef, 0.0)[:, None]
        g = tl.minimum(tl.maximum(g, -57344.0), 57344.0).to(tl.float8e5, fp_downcast_rounding="rtne")
        tl.store(out_ptr + rows64[:, None] * V + cols[None, :], g, mask=mask)
        # the transposed tile: rows become columns, so consecutive tokens are consecutive bytes
        cols64 = cols.to(tl.int64)
        tl.store(out_t_ptr + cols64[None, :] * M + rows[:, None], g, mask=mask)


def launch_ce_grad_fp8(logits, lse, targets, coef, out, out_t, launch=None):
    """Run the kernel into out [M, V] and out_t [V, M] (`launch` wraps it for torch.compile)."""
    M, V = logits.shape
    grid = (triton.cdiv(M, 64), triton.cdiv(V, 128))
    (launch or (lambda k: k))(_ce_grad_fp8_kernel)[grid](logits, lse, targets, coef, out, out_t, M, V,
                                                         BLOCK_M=64, BLOCK_V=128)


_HAS_OP = triton is not None and hasattr(torch.library, "triton_op")
if _HAS_OP:
    @torch.library.triton_op("chatforge::ce_grad_fp8", mutates_args=())
    def _ce_grad_fp8_op(logits: torch.Tensor, lse: torch.Tensor, targets: torch.Tensor,
                        coef: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        M, V = logits.shape
        out = torch.empty((M, V), device=logits.device, dtype=E5M2)
        out_t = torch.empty((V, M), device=logits.device, dtype=E5M2)
        launch_ce_grad_fp8(logits, lse, targets, coef, out, out_t, launch=torch.library.wrap_triton)
        return out, out_t


def ce_grad_fp8(logits, lse, targets, coef):
    """The Triton kernel on CUDA, the reference elsewhere. logits [M, V] (bf16, contiguous), lse [M]
    fp32, targets [M] int64 (-1 = ignored), coef a 1-element fp32 tensor. Returns ([M, V], [V, M])."""
    if not (_HAS_OP and logits.is_cuda):
        return ce_grad_fp8_reference(logits, lse, targets, coef)
    return torch.ops.chatforge.ce_grad_fp8(logits.contiguous(), lse.contiguous(), targets.contiguous(), coef.reshape(1))
