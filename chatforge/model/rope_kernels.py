"""RoPE on the fused q/k/v matmul's output, with a hand-written backward (`Attention.rope_kernel`,
on in training on GPUs through `GPT.set_kernels`; with the SwiGLU kernel it saved 2.3 ms of a
114 ms d12 step on an H100, and alone 1.2 ms of a 381 ms d20 step: docs/benchmarks.md).

`rope_qkv(qkv, cos, sin, n_head, n_kv_head)` splits qkv [B, T, H + 2*Hkv, D] into q and k with
RoPE applied and a dense copy of v. Its forward is plain PyTorch (inductor fuses it into one pass).
Its backward turns the three attention gradients (dq, dk, dv, in whatever layout SDPA returned
them) back into the gradient of qkv in one Triton kernel. Each program takes one head's
[rows, D] tile, so it reads one source and writes one slice. Inductor's fused version of that
backward, a concatenation of masked loads from all three sources, ran at about half the memory
bandwidth of the forward on an H100 (docs/benchmarks.md).
A PyTorch twin does the backward on CPU.
"""

from __future__ import annotations

import torch

try:
    import triton
    import triton.language as tl
except ImportError:  # CPU-only installs: the torch twin does the work
    triton = None


def rope_qkv_backward_reference(dq, dk, dv, cos, sin):
    """d(qkv) [B, T, H + 2*Hkv, D] from the gradients of RoPE(q), RoPE(k) and v: the inverse
    rotation (dx1 = dy1 c + dy2 s, dx2 = dy2 c - dy1 s), computed in fp32 and rounded once."""
    def unrotate(g):
        d = g.size(-1) // 2
        g1, g2 = g[..., :d].float(), g[..., d:].float()
        c, s = cos.to(g.dtype).float(), sin.to(g.dtype).float()
        return torch.cat((g1 * c + g2 * s, g2 * c - g1 * s), dim=-1).to(g.dtype)
    return torch.cat((unrotate(dq), unrotate(dk), dv.to(dq.dtype)), dim=2)


if triton is not None:
    @triton.jit
    def _rope_qkv_bwd_kernel(dq_ptr, dk_ptr, dv_ptr, cos_ptr, sin_ptr, out_ptr, T, ROWS,
                             sq_b, sq_t, sq_h, sk_b, sk_t, sk_h, sv_b, sv_t, sv_h,
                             H: tl.constexpr, HKV: tl.constexpr, HALF: tl.constexpr, BLOCK_R: tl.constexpr):
        pid_r, j = tl.program_id(0), tl.program_id(1)  # a block of token rows, one head of the output
        rows = pid_r * BLOCK_R + tl.arange(0, BLOCK_R)
        cols = tl.arange(0, HALF)
        ok = (rows < ROWS)[:, None]
        b, t = rows // T, rows % T
        out = out_ptr + (rows.to(tl.int64)[:, None] * (H + 2 * HKV) + j) * (2 * HALF) + cols[None, :]
        if j < H + HKV:  # q or k: undo the rotation
            if j < H:
                src = dq_ptr + b.to(tl.int64)[:, None] * sq_b + t[:, None] * sq_t + j * sq_h + cols[None, :]
            else:
                src = dk_ptr + b.to(tl.int64)[:, None] * sk_b + t[:, None] * sk_t + (j - H) * sk_h + cols[None, :]
            g1 = tl.load(src, mask=ok, other=0.0).to(tl.float32)
            g2 = tl.load(src + HALF, mask=ok, other=0.0).to(tl.float32)
            dtype = out_ptr.dtype.element_ty  # the tables are cast to the activations' dtype, as in apply_rotary
            c = tl.load(cos_ptr + t[:, None] * HALF + cols[None, :], mask=ok, other=0.0).to(dtype).to(tl.float32)
            s = tl.load(sin_ptr + t[:, None] * HALF + cols[None, :], mask=ok, other=0.0).to(dtype).to(tl.float32)
            tl.store(out, (g1 * c + g2 * s).to(dtype), mask=ok)
            tl.store(out + HALF, (g2 * c - g1 * s).to(dtype), mask=ok)
        else:  # v: a copy into its slice
            src = dv_ptr + b.to(tl.int64)[:, None] * sv_b + t[:, None] * sv_t + (j - H - HKV) * sv_h + cols[None, :]
            tl.store(out, tl.load(src, mask=ok, other=0.0), mask=ok)
            tl.store(out + HALF, tl.load(src + HALF, mask=ok, other=0.0), mask=ok)


def launch_rope_qkv_backward(dq, dk, dv, cos, sin, out, launch=None, block_rows=32):
    """Run the kernel into out [B, T, H + 2*Hkv, D] (contiguous). dq/dk/dv: any strides whose last
    dim is contiguous; cos/sin [T, D/2] fp32 contiguous. `launch` wraps the kernel for torch.compile."""
    B, T, H, D = dq.shape
    HKV = dk.size(2)
    rows = B * T
    grid = (triton.cdiv(rows, block_rows), H + 2 * HKV)
    (launch or (lambda k: k))(_rope_qkv_bwd_kernel)[grid](
        dq, dk, dv, cos, sin, out, T, rows, dq.stride(0), dq.stride(1), dq.stride(2),
        dk.stride(0), dk.stride(1), dk.stride(2), dv.stride(0), dv.stride(1), dv.stride(2),
        H=H, HKV=HKV, HALF=D // 2, BLOCK_R=block_rows)


_HAS_OP = triton is not None and hasattr(torch.library, "triton_op")
if _HAS_OP:
    @torch.library.triton_op("chatforge::rope_qkv_backward", mutates_args=())
    def _rope_qkv_backward_op(dq: torch.Tensor, dk: torch.Tensor, dv: torch.Tensor, cos: torch.Tensor,
                              sin: torch.Tensor) -> torch.Tensor:
        B, T, H, D = dq.shape
        out = torch.empty((B, T, H + 2 * dk.size(2), D), device=dq.device, dtype=dq.dtype)
        launch_rope_qkv_backward(dq, dk, dv, cos, sin, out, launch=torch.library.wrap_triton)
        return out


def _last_dim_contiguous(t):
    return t if t.stride(-1) == 1 else t.contiguous()


def rope_qkv_backward(dq, dk, dv, cos, sin):
    """The Triton kernel on CUDA, the reference elsewhere. cos/sin [T, 1, D/2] fp32."""
    if not (_HAS_OP and dq.is_cuda):
        return rope_qkv_backward_reference(dq, dk, dv, cos, sin)
    c, s = cos.reshape(cos.size(0), -1).contiguous(), sin.reshape(sin.size(0), -1).contiguous()
    dv = dv.to(dq.dtype)
    return torch.ops.chatforge.rope_qkv_backward(*map(_last_dim_contiguous, (dq, dk, dv)), c, s)


class _RopeQKV(torch.autograd.Function):
    @staticmethod
    def forward(ctx, qkv, cos, sin, n_head, n_kv_head):
        from chatforge.model.gpt import apply_rotary  # the model's own RoPE (gpt.py imports this module)

        q, k, v = qkv.split([n_head, n_kv_head, n_kv_head], dim=2)
        ctx.save_for_backward(cos, sin)
        return apply_rotary(q, cos, sin), apply_rotary(k, cos, sin), v.contiguous()

    @staticmethod
    def backward(ctx, dq, dk, dv):
        cos, sin = ctx.saved_tensors
        return rope_qkv_backward(dq, dk, dv, cos, sin), None, None, None, None


def rope_qkv(qkv, cos, sin, n_head: int, n_kv_head: int):
    """qkv [B, T, H + 2*Hkv, D] -> (RoPE(q), RoPE(k), v) as [B, T, heads, D] tensors, the backward
    in one kernel (module docstring). Same values as splitting and calling gpt.apply_rotary."""
    return _RopeQKV.apply(qkv, cos, sin, n_head, n_kv_head)
