"""SwiGLU on the fused gate/up matmul's output, with a hand-written backward (`MLP.swiglu_kernel`,
on in training on GPUs through `GPT.set_kernels`, used with `--fp8 forward`; with the RoPE kernel
it saved 2.3 ms of a 114 ms d12 step on an H100, docs/benchmarks.md). Not with `--fp8 all`: there
the gradient's FP8 scale needs its amax, which inductor fuses into its own SwiGLU backward, and a
separate kernel would cost a second pass over the gradient for it.

`swiglu(gate_up)` = silu(gate) * up for gate_up [..., 2I] = [gate | up]. Its forward is plain
PyTorch (inductor fuses it with the FP8 cast that follows). Its backward reads gate, up and the
output's gradient once and writes the gradient of gate_up in one Triton kernel, each program
covering a [rows, columns] tile of both halves. Inductor wrote that gradient as a concatenation
of masked loads: 6.9 ms a d12 step in an H100 profile (docs/benchmarks.md), where its ~16 GB
(reading gate, up and the gradient, writing both gradients) would take ~5.4 ms at 3 TB/s.
A PyTorch twin does the backward on CPU.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

try:
    import triton
    import triton.language as tl
except ImportError:  # CPU-only installs: the torch twin does the work
    triton = None


def swiglu_backward_reference(gate_up, dh):
    """d(gate_up) [M, 2I] for h = silu(g) * u: [dh * u * silu'(g) | dh * silu(g)], computed in fp32
    and rounded once; silu'(g) = sigmoid(g) * (1 + g * (1 - sigmoid(g)))."""
    g, u = gate_up.float().chunk(2, dim=-1)
    d = dh.float()
    sig = torch.sigmoid(g)
    return torch.cat((d * u * sig * (1 + g * (1 - sig)), d * g * sig), dim=-1).to(gate_up.dtype)


if triton is not None:
    @triton.jit
    def _swiglu_bwd_kernel(gu_ptr, dh_ptr, out_ptr, M, I, BLOCK_M: tl.constexpr, BLOCK_I: tl.constexpr):
        pid_m, pid_i = tl.program_id(0), tl.program_id(1)
        rows = (pid_m * BLOCK_M + tl.arange(0, BLOCK_M)).to(tl.int64)
        cols = pid_i * BLOCK_I + tl.arange(0, BLOCK_I)
        ok = (rows < M)[:, None] & (cols < I)[None, :]
        gate = gu_ptr + rows[:, None] * (2 * I) + cols[None, :]   # up is I columns to the right
        g = tl.load(gate, mask=ok, other=0.0).to(tl.float32)
        u = tl.load(gate + I, mask=ok, other=0.0).to(tl.float32)
        d = tl.load(dh_ptr + rows[:, None] * I + cols[None, :], mask=ok, other=0.0).to(tl.float32)
        sig = tl.sigmoid(g)
        dtype = out_ptr.dtype.element_ty
        out = out_ptr + rows[:, None] * (2 * I) + cols[None, :]
        tl.store(out, (d * u * sig * (1 + g * (1 - sig))).to(dtype), mask=ok)
        tl.store(out + I, (d * g * sig).to(dtype), mask=ok)


def launch_swiglu_backward(gate_up, dh, out, launch=None, block_m=32, block_i=128):
    """Run the kernel into out [M, 2I]; gate_up [M, 2I] and dh [M, I] contiguous."""
    M, I = dh.shape
    grid = (triton.cdiv(M, block_m), triton.cdiv(I, block_i))
    (launch or (lambda k: k))(_swiglu_bwd_kernel)[grid](gate_up, dh, out, M, I, BLOCK_M=block_m, BLOCK_I=block_i)


_HAS_OP = triton is not None and hasattr(torch.library, "triton_op")
if _HAS_OP:
    @torch.library.triton_op("chatforge::swiglu_backward", mutates_args=())
    def _swiglu_backward_op(gate_up: torch.Tensor, dh: torch.Tensor) -> torch.Tensor:
        out = torch.empty_like(gate_up)
        launch_swiglu_backward(gate_up, dh, out, launch=torch.library.wrap_triton)
        return out


def swiglu_backward(gate_up, dh):
    """The Triton kernel on CUDA, the reference elsewhere; any leading dims, flattened to rows."""
    if not (_HAS_OP and gate_up.is_cuda):
        return swiglu_backward_reference(gate_up, dh)
    shape = gate_up.shape
    gu = gate_up.reshape(-1, shape[-1]).contiguous()
    return torch.ops.chatforge.swiglu_backward(gu, dh.reshape(gu.size(0), -1).to(gu.dtype).contiguous()).view(shape)


class _SwiGLU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, gate_up):
        ctx.save_for_backward(gate_up)
        gate, up = gate_up.chunk(2, dim=-1)
        return F.silu(gate) * up

    @staticmethod
    def backward(ctx, dh):
        (gate_up,) = ctx.saved_tensors
        return swiglu_backward(gate_up, dh)


def swiglu(gate_up: torch.Tensor) -> torch.Tensor:
    """silu(gate) * up for gate_up = [gate | up] on the last dim, the backward in one kernel."""
    return _SwiGLU.apply(gate_up)
