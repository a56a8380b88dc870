"""Symmetric products for Muon's Newton-Schulz iteration, computing only half of each. Muon uses
them on GPUs for matrices with a side of 1024 or more (`--ns-kernel auto`, optim.use_ns_kernel):
on an H100 a d20 step's Newton-Schulz takes 17.0 ms instead of cuBLAS's 24.0 (benchmarks/muon_ns.py,
docs/benchmarks.md), with no larger error against fp32.

Each Newton-Schulz step (optim.py) is A = X X^T, B = b A + c A A, X = a X + B X. A is symmetric, so
is B (A A = A A^T when A is), and a matmul that knows its output is symmetric needs only the tiles
on and above the diagonal: each one is computed once and stored twice (itself and its mirror). That
halves the work of two of the three matmuls, about 30-40% of Muon's FLOPs (the third, B X, is not
symmetric). Muon's share of a step grows with width: its FLOPs go as width^3 per step, the model's
as width^2 per token.

`sym_matmul(X, Y=None, alpha=1, beta=0, diag=0)` = alpha X X^T + beta Y + diag I for X [N, m, k]
and a symmetric Y [N, m, m]. The diag term lets Newton-Schulz's last product be one plain matmul:
a X + B X = (B + a I) X, so cuBLAS need not first copy X into its output (beta != 0 needs that).
The Triton kernel runs on CUDA; a PyTorch twin does the same math elsewhere.
"""

from __future__ import annotations

import torch

try:
    import triton
    import triton.language as tl
except ImportError:  # CPU-only installs: the torch twin does the work
    triton = None


def sym_matmul_reference(X, Y=None, alpha: float = 1.0, beta: float = 0.0, diag: float = 0.0):
    """alpha X X^T (+ beta Y) + diag I, accumulated in fp32 and rounded once, as the kernel does."""
    out = alpha * (X.float() @ X.float().mT)
    if Y is not None:
        out = out + beta * Y.float()
    if diag:
        out = out + diag * torch.eye(X.size(-2), device=X.device)
    return out.to(X.dtype)


if triton is not None:
    @triton.jit
    def _sym_matmul_kernel(x_ptr, y_ptr, out_ptr, M, K, sx_n, sx_m, sx_k, sy_n, sy_m, sy_c, so_n, so_m, so_c,
                           alpha, beta, diag, HAS_Y: tl.constexpr, BLOCK: tl.constexpr, BLOCK_K: tl.constexpr):
        pid_m, pid_c, n = tl.program_id(0), tl.program_id(1), tl.program_id(2)
        if pid_m > pid_c:  # below the diagonal: its mirror tile writes it
            return
        rm = pid_m * BLOCK + tl.arange(0, BLOCK)   # output rows = rows of X
        rc = pid_c * BLOCK + tl.arange(0, BLOCK)   # output columns = rows of X too
        rk = tl.arange(0, BLOCK_K)
        x = x_ptr + n.to(tl.int64) * sx_n
        a_ptrs = x + rm[:, None] * sx_m + rk[None, :] * sx_k   # [BLOCK, BLOCK_K] of X
        b_ptrs = x + rc[None, :] * sx_m + rk[:, None] * sx_k   # [BLOCK_K, BLOCK] of X^T
        acc = tl.zeros((BLOCK, BLOCK), dtype=tl.float32)
        for k0 in range(0, K, BLOCK_K):
            k_ok = (k0 + rk) < K
            a = tl.load(a_ptrs, mask=(rm[:, None] < M) & k_ok[None, :], other=0.0)
            b = tl.load(b_ptrs, mask=k_ok[:, None] & (rc[None, :] < M), other=0.0)
            acc = tl.dot(a, b, acc)
            a_ptrs += BLOCK_K * sx_k
            b_ptrs += BLOCK_K * sx_k
        acc = acc * alpha
        ok = (rm[:, None] < M) & (rc[None, :] < M)
        if HAS_Y:
            y = tl.load(y_ptr + n.to(tl.int64) * sy_n + rm[:, None] * sy_m + rc[None, :] * sy_c, mask=ok, other=0.0)
            acc += beta * y.to(tl.float32)
        if pid_m == pid_c:  # the identity term lives on the diagonal tiles only
            acc += tl.where(rm[:, None] == rc[None, :], diag, 0.0)
        tile = acc.to(out_ptr.dtype.element_ty)
        out = out_ptr + n.to(tl.int64) * so_n
        tl.store(out + rm[:, None] * so_m + rc[None, :] * so_c, tile, mask=ok)
        if pid_m != pid_c:  # the mirror tile, written row-major from the transposed registers
            tl.store(out + rc[:, None] * so_m + rm[None, :] * so_c, tl.trans(tile), mask=tl.trans(ok))


# tiles and pipelining: the fastest of seven configurations at d20 on an H100 (benchmarks/muon_ns.py
# --block/--block-k/--warps/--stages; docs/benchmarks.md lists them)
TILES = dict(block=128, block_k=64, num_warps=8, num_stages=3)


def launch_sym_matmul(X, Y, out, alpha: float, beta: float, diag: float = 0.0, **tiles):
    """Run the kernel into out [N, m, m]. X [N, m, k] and Y [N, m, m] (or None) with any strides;
    `tiles` override TILES."""
    t = {**TILES, **tiles}
    block, block_k, num_warps, num_stages = t["block"], t["block_k"], t["num_warps"], t["num_stages"]
    N, M, K = X.shape
    y = Y if Y is not None else X  # a placeholder, never read without HAS_Y (not out: no aliasing)
    nb = triton.cdiv(M, block)
    _sym_matmul_kernel[(nb, nb, N)](
        X, y, out, M, K, X.stride(0), X.stride(1), X.stride(2), y.stride(0), y.stride(1), y.stride(2),
        out.stride(0), out.stride(1), out.stride(2), alpha, beta, diag,
        HAS_Y=Y is not None, BLOCK=block, BLOCK_K=block_k, num_warps=num_warps, num_stages=num_stages)


# An opaque custom op, not a triton_op: torch.compile then calls Triton's own launcher, as eager
# does. Traced into Inductor (triton_op) the same kernel ran 274 us instead of 192 us a call
# (H100, 40 x 1280x1280, torch 2.11), which cost more than the halved work saves.
_HAS_OP = triton is not None and hasattr(torch.library, "custom_op")
if _HAS_OP:
    @torch.library.custom_op("chatforge::sym_matmul", mutates_args=())
    def _sym_matmul_op(X: torch.Tensor, Y: torch.Tensor | None, alpha: float, beta: float,
                       diag: float) -> torch.Tensor:
        out = torch.empty((X.size(0), X.size(1), X.size(1)), device=X.device, dtype=X.dtype)
        launch_sym_matmul(X, Y, out, alpha, beta, diag)
        return out

    @_sym_matmul_op.register_fake
    def _(X, Y, alpha, beta, diag):
        return X.new_empty((X.size(0), X.size(1), X.size(1)))


def sym_matmul(X, Y=None, alpha: float = 1.0, beta: float = 0.0, diag: float = 0.0):
    """alpha X X^T + beta Y + diag I for X [N, m, k], Y symmetric [N, m, m] or None: the Triton
    kernel on CUDA (half the tiles computed, the result exactly symmetric), the reference elsewhere."""
    if not (_HAS_OP and X.is_cuda):
        return sym_matmul_reference(X, Y, alpha, beta, diag)
    return torch.ops.chatforge.sym_matmul(X, Y, float(alpha), float(beta), float(diag))
