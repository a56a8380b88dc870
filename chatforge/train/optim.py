"""Optimizers: Muon for the hidden weight matrices, AdamW for everything else (nanochat / modded-nanogpt).

Muon (Keller Jordan, 2024) = SGD-momentum whose update is orthogonalised: the Nesterov momentum
matrix G is replaced by the nearest semi-orthogonal matrix U V^T (from G = U S V^T), computed
without an SVD by a few Newton-Schulz iterations in bf16. It lets hidden matrices take large,
well-conditioned steps. Embeddings, the output head and norm gains are not "hidden matrices"
(their rows are looked up / compared, not mixed), so they stay with AdamW.

Matrices of the same shape are orthogonalised together as one batched matmul, which keeps the
optimizer step to a few dozen kernels instead of a few thousand. On GPU the momentum update and
the weight update are compiled too (one pass per matrix, `_gpu_compiled`). Under torchrun (DDP or
FSDP2) each rank orthogonalises 1/W of the matrices and collectives share the results (_orthogonalize).

`build_optimizers(model, ...)` returns [adamw, muon]; SFT uses it too.
"""

from __future__ import annotations

from collections import defaultdict

import torch
import torch.distributed as dist

from chatforge.model.run_dir import unwrap
from chatforge.train.muon_kernels import sym_matmul


NS_COEFFS = (3.4445, -4.7750, 2.0315)  # the quintic's a, b, c (modded-nanogpt)


def zeropower_via_newtonschulz5(G: torch.Tensor, steps: int = 5, symmetric: bool = False) -> torch.Tensor:
    """Approximate U V^T for G [..., m, n] (quintic iteration tuned for speed, modded-nanogpt).
    symmetric: the two symmetric products through muon_kernels.sym_matmul (half the tiles), and
    a X + B X as the one plain matmul (B + a I) X."""
    a, b, c = NS_COEFFS
    X = G.to(torch.bfloat16) if G.is_cuda else G.float()  # bf16 on GPU; CPU bf16 matmul is slow
    transposed = G.size(-2) > G.size(-1)
    if transposed:
        X = X.mT
    X = X / (X.norm(dim=(-2, -1), keepdim=True) + 1e-7)
    squeeze = X.dim() == 2
    if squeeze:
        X = X.unsqueeze(0)
    for _ in range(steps):
        if symmetric:
            A = sym_matmul(X)                                # X X^T
            B = sym_matmul(A, A, alpha=c, beta=b, diag=a)    # c*A A^T + b*A + a*I (A is symmetric)
            X = B @ X                                        # = a*X + (b*A + c*A@A) @ X
        else:
            A = X @ X.mT
            B = torch.baddbmm(A, A, A, beta=b, alpha=c)  # b*A + c*A@A in one kernel
            X = torch.baddbmm(X, B, X, beta=a)           # a*X + B@X
    if squeeze:
        X = X.squeeze(0)
    if transposed:
        X = X.mT
    return X


_compiled = {}


def _gpu_compiled(fn, cuda: bool):
    """fn compiled once per process on GPU (fusing its elementwise work), eager on CPU."""
    if not cuda:
        return fn
    if fn not in _compiled:
        _compiled[fn] = torch.compile(fn, dynamic=False)
    return _compiled[fn]


def _newton_schulz_symmetric(G: torch.Tensor, steps: int = 5) -> torch.Tensor:
    return zeropower_via_newtonschulz5(G, steps, symmetric=True)


# Shapes whose larger side is at least this run Newton-Schulz through the symmetric kernel when
# Muon's ns_kernel is None (auto). Measured on an H100 (benchmarks/muon_ns.py, 2026-11-26, two
# calls): it won on every d20 group (1.31-1.60x) and on d12's 768x2048 / 2048x768 (1.03-1.41x);
# on d12's 384x768 it lost (0.42x, 0.45x: few tiles leave the GPU idle), on 768x768 it lost once
# (0.73x) and won once (1.16x). So small matrices stay with cuBLAS.
NS_KERNEL_MIN_SIDE = 1024


def use_ns_kernel(setting: bool | None, shape, cuda: bool) -> bool:
    """Whether a group of `shape` matrices takes the symmetric kernel: setting, or by size if None."""
    if setting is None:
        return cuda and max(shape) >= NS_KERNEL_MIN_SIDE
    return setting


def _newton_schulz(cuda: bool, kernel: bool = False):
    return _gpu_compiled(_newton_schulz_symmetric if kernel else zeropower_via_newtonschulz5, cuda)


def _device_scalar(value: float, device) -> torch.Tensor:
    """A hyperparameter as a 0-d device tensor: compiled functions take new values without
    recompiling, and filling it on the device does not wait for the GPU as a host copy would."""
    return torch.full((), value, device=device, dtype=torch.float32)


def _momentum_update(grads, bufs, momentum, nesterov: bool):
    """Momentum on one group of same-shape matrices: bufs updated in place, the updates returned
    stacked [N, ...] for a batched Newton-Schulz. Compiled, each matrix is one pass, not four."""
    for g, b in zip(grads, bufs):
        b.lerp_(g, 1 - momentum)
    return torch.stack([g.lerp(b, momentum) for g, b in zip(grads, bufs)] if nesterov else bufs)


def _apply_update(params, ortho, step, decay):
    """p <- p * decay - step * update, one pass per matrix when compiled."""
    for p, u in zip(params, ortho.unbind(0)):
        p.mul_(decay).sub_(u.to(p.dtype) * step)


def _local(t):
    """The tensor itself, or a DTensor's local shard (a view: in-place ops update the DTensor)."""
    return t.to_local() if hasattr(t, "to_local") else t


class Muon(torch.optim.Optimizer):
    """Momentum + Newton-Schulz orthogonalised update for 2D weights.

    The update is scaled by sqrt(max(1, rows/cols)) so tall and wide matrices move at a
    comparable RMS. Decoupled weight decay as in AdamW (off by default).
    """

    def __init__(self, params, lr=0.02, momentum=0.95, nesterov=True, ns_steps=5, weight_decay=0.0,
                 ns_kernel: bool | None = None):
        super().__init__(params, dict(lr=lr, momentum=momentum, nesterov=nesterov, ns_steps=ns_steps,
                                      weight_decay=weight_decay))
        # Newton-Schulz's symmetric products in half the work (muon_kernels.py); None: by shape
        self.ns_kernel = ns_kernel

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            by_shape = defaultdict(list)
            for p in group["params"]:
                if p.grad is not None:
                    by_shape[tuple(p.shape)].append(p)
            for shape, params in by_shape.items():
                for p in params:
                    if "momentum_buffer" not in self.state[p]:
                        self.state[p]["momentum_buffer"] = torch.zeros_like(p.grad)
                # Elementwise work runs on the local tensors (under FSDP2 each rank's shard: DTensor
                # has no sharding rule for some foreach ops); only Newton-Schulz needs whole matrices.
                grads = [_local(p.grad) for p in params]
                bufs = [_local(self.state[p]["momentum_buffer"]) for p in params]
                dev = grads[0].device
                cuda = dev.type == "cuda"
                momentum = _device_scalar(group["momentum"], dev)
                updates = _gpu_compiled(_momentum_update, cuda)(grads, bufs, momentum, group["nesterov"])
                kernel = use_ns_kernel(self.ns_kernel, shape, cuda)
                ortho = _orthogonalize(updates, params, group["ns_steps"], kernel)
                scale = max(1.0, shape[0] / shape[1]) ** 0.5
                step = _device_scalar(group["lr"] * scale, dev)
                decay = _device_scalar(1 - group["lr"] * group["weight_decay"], dev)
                _gpu_compiled(_apply_update, cuda)([_local(p) for p in params], ortho, step, decay)
        return loss


def _orthogonalize(updates, params, ns_steps, kernel=False):
    """Newton-Schulz of N same-shape updates, stacked [N, ...] -> [N, ...] orthogonalised updates,
    each shaped like the local update (under FSDP2 our shard of the matrix).

    Under torchrun each rank orthogonalises only N/W of the matrices (W = world size), so this, the
    optimizer's main cost, shrinks W-fold instead of being repeated on every GPU:
    - DDP (replicated gradients): rank r takes matrices r*N/W.., then one all-gather shares them.
    - FSDP2 (rows sharded): an all-to-all brings rank r the full matrices of its group (every rank
      sends its rows of them), and a second all-to-all returns each rank its rows of every result.
    """
    cuda = updates[0].is_cuda
    ns = _newton_schulz(cuda, kernel)
    mesh = getattr(params[0], "device_mesh", None)
    pg = mesh.get_group() if mesh is not None else None
    if mesh is None and not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
        return ns(updates, ns_steps)
    world = dist.get_world_size(pg)
    rank = dist.get_rank(pg)
    rows, cols = params[0].shape
    if mesh is not None:
        from torch.distributed.tensor import DTensor, Shard, distribute_tensor
        even = all(isinstance(pl, Shard) and pl.dim == 0 for pl in params[0].placements) and rows % world == 0
        if not even:  # uneven or unusual sharding: gather every matrix whole, orthogonalise all of them
            full = [DTensor.from_local(u, mesh, p.placements, shape=p.shape, stride=p.stride()).full_tensor()
                    for p, u in zip(params, updates.unbind(0))]
            ortho = ns(torch.stack(full), ns_steps)
            return torch.stack([distribute_tensor(u, mesh, p.placements, src_data_rank=None).to_local()
                                for p, u in zip(params, ortho.unbind(0))])
    n, per = len(updates), -(-len(updates) // world)
    X = updates.to(torch.bfloat16 if cuda else torch.float32)  # NS runs in bf16 on GPU anyway
    X = torch.cat([X, X.new_zeros(per * world - n, *X.shape[1:])]) if per * world > n else X  # pad: zeros stay zero
    if mesh is None:  # DDP: every rank holds every (all-reduced) gradient
        mine = ns(X[rank * per:(rank + 1) * per], ns_steps)
        out = torch.empty_like(X)
        dist.all_gather(list(out.chunk(world)), mine.contiguous())
        return out[:n]
    send = X.view(world, per, rows // world, cols)          # [to rank, its matrices, our rows, cols]
    recv = torch.empty_like(send)                           # [from rank, my matrices, its rows, cols]
    dist.all_to_all_single(recv, send, group=pg)
    mine = ns(recv.transpose(0, 1).reshape(per, rows, cols), ns_steps)
    send = mine.view(per, world, rows // world, cols).transpose(0, 1).contiguous()
    dist.all_to_all_single(recv, send.to(recv.dtype), group=pg)
    return recv.reshape(per * world, rows // world, cols)[:n]


def param_groups(model):
    """Split the GPT's parameters: (embedding, lm_head, 1-D gains, hidden matrices).

    Only the GPT's own (`model.*`, `lm_head`): a subclass's extra head (the reward model's
    `score`) is no hidden matrix, and its trainer gives it an optimizer group of its own."""
    m = unwrap(model)
    embed = [m.model.embed_tokens.weight]
    head = [] if m.config.tie_embeddings else [m.lm_head.weight]
    special = {id(p) for p in embed + head}
    gains = [p for p in m.model.parameters() if p.dim() < 2 and id(p) not in special]
    matrices = [p for p in m.model.parameters() if p.dim() >= 2 and id(p) not in special]
    return embed, head, gains, matrices


def build_optimizers(model, *, embedding_lr=0.2, unembedding_lr=0.004, matrix_lr=0.02, scalar_lr=0.02,
                     weight_decay=0.0, adam_betas=(0.8, 0.95), use_muon=True, fused=None, ns_kernel=None,
                     lr_scale=1.0):
    """[AdamW(embeddings, head, gains), Muon(hidden matrices)], with nanochat's learning rates.

    lr_scale multiplies every rate: fine-tuning (SFT, RL, DPO, reward models) trains at a small
    fraction of the pretraining rates (their --lr-frac).

    AdamW rates are scaled by (width/768)^-0.5 (tuned at d12). Each param group remembers its
    base rate in `initial_lr`, which the schedule multiplies. use_muon=False puts the matrices in
    AdamW (lr 3e-3 * the same width scaling) for comparison runs.
    """
    m = unwrap(model)
    scale = (m.config.n_embd / 768) ** -0.5
    embed, head, gains, matrices = param_groups(m)
    groups = [dict(params=embed, lr=embedding_lr * scale)]
    if gains:  # learnable norm gains (GPTConfig.norm_gains)
        groups.append(dict(params=gains, lr=scalar_lr))
    if head:
        groups.append(dict(params=head, lr=unembedding_lr * scale))
    if not use_muon:
        groups.append(dict(params=matrices, lr=3e-3 * scale, weight_decay=weight_decay))
    for g in groups:
        g["lr"] *= lr_scale
        g["initial_lr"] = g["lr"]
        g.setdefault("weight_decay", 0.0)
    p0 = m.lm_head.weight
    is_dtensor = hasattr(p0, "device_mesh")
    if fused is None:
        fused = p0.is_cuda and not is_dtensor
    adamw = torch.optim.AdamW(groups, betas=adam_betas, eps=1e-10, fused=fused or None,
                              foreach=None if fused else True)
    opts = [adamw]
    if use_muon:
        muon = Muon([dict(params=matrices, lr=matrix_lr * lr_scale, initial_lr=matrix_lr * lr_scale)],
                    weight_decay=weight_decay,
                    ns_kernel=ns_kernel)
        opts.append(muon)
    return opts


def set_lr(optimizers, multiplier: float, muon_momentum: float | None = None) -> None:
    for opt in optimizers:
        for g in opt.param_groups:
            g["lr"] = g["initial_lr"] * multiplier
            if muon_momentum is not None and isinstance(opt, Muon):
                g["momentum"] = muon_momentum


def muon_momentum(step: int, warmup_steps: int = 300, start: float = 0.85, end: float = 0.95) -> float:
    """Muon momentum ramps 0.85 -> 0.95 over the first 300 steps (nanochat)."""
    frac = min(step / warmup_steps, 1.0) if warmup_steps else 1.0
    return (1 - frac) * start + frac * end
