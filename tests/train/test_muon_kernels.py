"""Muon's symmetric Newton-Schulz products (train/muon_kernels.py): the Triton kernel (run by Triton's
CPU interpreter) matches its PyTorch twin and is exactly symmetric; Newton-Schulz and a Muon step
give the same result with it."""

import pytest
import torch

from chatforge.train.optim import Muon, zeropower_via_newtonschulz5


def test_newton_schulz_with_symmetric_products_matches():
    torch.manual_seed(0)
    for shape in [(3, 40, 72), (2, 72, 40), (24, 24)]:  # wide, tall (transposed inside), square unbatched
        G = torch.randn(*shape)
        ref = zeropower_via_newtonschulz5(G, 5)
        out = zeropower_via_newtonschulz5(G, 5, symmetric=True)
        assert out.shape == ref.shape
        assert torch.allclose(out, ref, atol=1e-4), (out - ref).abs().max()
        # and it is Newton-Schulz: singular values pushed towards 1 (the quintic leaves them in ~0.7-1.2)
        s = torch.linalg.svdvals(out.float())
        assert (s > 0.5).all() and (s < 1.3).all()


def test_muon_step_with_the_kernel_option_matches(monkeypatch):
    import chatforge.train.optim as O
    calls = []
    real = O.sym_matmul
    monkeypatch.setattr(O, "sym_matmul", lambda *a, **k: calls.append(1) or real(*a, **k))
    runs, counts = [], []
    for kernel in (False, True):
        torch.manual_seed(1)
        ws = [torch.nn.Parameter(torch.randn(48, 32)) for _ in range(3)] + [torch.nn.Parameter(torch.randn(32, 48))]
        opt = Muon([dict(params=ws, lr=0.05)], ns_kernel=kernel)
        calls.clear()
        for _ in range(2):
            for w in ws:
                w.grad = torch.randn_like(w)
            opt.step()
        runs.append([w.detach().clone() for w in ws])
        counts.append(len(calls))
    assert counts == [0, 2 * 2 * 5 * 2]  # 2 steps x 2 shape groups x 5 iterations x 2 products
    for a, b in zip(*runs):
        assert torch.allclose(a, b, atol=1e-5), (a - b).abs().max()


SCRIPT = r"""
import torch
from chatforge.train import muon_kernels as K
torch.manual_seed(0)
N, M, D = 2, 37, 45                       # neither a multiple of the 16-wide tiles
X = torch.randn(N, D, M).mT               # a strided view, as Newton-Schulz passes a transposed X
Y = torch.randn(N, M, M); Y = Y + Y.mT    # symmetric
for yy, alpha, beta, diag in ((None, 1.0, 0.0, 0.0), (Y, 2.0315, -4.775, 3.4445)):
    ref = K.sym_matmul_reference(X, yy, alpha, beta, diag)
    out = torch.full((N, M, M), 7.0)
    K.launch_sym_matmul(X, yy, out, alpha, beta, diag, block=16, block_k=16, num_warps=1, num_stages=1)
    # tiles off the diagonal are computed once and stored twice: exact copies. A diagonal tile is one
    # tl.dot of a tile with its own transpose; the interpreter runs it on numpy's BLAS, whose fp32
    # rounding need not be symmetric (seen on an AMD EPYC box: 2e-6), so those are checked to rounding
    i = torch.arange(M)
    diag_tile = (i[:, None] // 16) == (i[None, :] // 16)
    assert torch.equal(out[:, ~diag_tile], out.mT[:, ~diag_tile]), "the mirror tiles are exact copies"
    assert torch.allclose(out, out.mT, rtol=0, atol=1e-5), "diagonal tiles symmetric to rounding"
    assert torch.allclose(out, ref, rtol=1e-5, atol=1e-4), (beta, (out - ref).abs().max())
print("ok")
"""


def test_sym_matmul_kernel_in_the_triton_interpreter(triton_interpreter):
    """fp32 only: the interpreter's tl.dot multiplies bf16 inputs' raw bits (triton 3.9: a 16-long
    dot of bf16 ones gave 4.2e9 = 0x3F80^2 * 16), so bf16 is checked on a GPU (below)."""
    triton_interpreter(SCRIPT)


@pytest.mark.gpu
def test_sym_matmul_kernel_on_cuda_in_bf16():
    from chatforge.train.muon_kernels import sym_matmul, sym_matmul_reference
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    torch.manual_seed(0)
    X = torch.randn(3, 1280, 384, device="cuda").mT.to(torch.bfloat16)  # [3, 384, 1280] strided; 3 tiles a side
    X = X / X.norm(dim=(-2, -1), keepdim=True)
    A = sym_matmul(X)
    assert torch.equal(A, A.mT)
    ref = sym_matmul_reference(X)
    assert ((A.float() - ref.float()).abs() <= 2.0 ** -7 * ref.float().abs().max()).all()
    B = sym_matmul(A, A, alpha=2.0315, beta=-4.775, diag=3.4445)
    ref = sym_matmul_reference(A, A, 2.0315, -4.775, 3.4445)
    assert torch.equal(B, B.mT)
    assert ((B.float() - ref.float()).abs() <= 2.0 ** -7 * ref.float().abs().max()).all()
    G = torch.randn(4, 1280, 3456, device="cuda")
    out = torch.compile(zeropower_via_newtonschulz5)(G, 5, True)  # through torch.compile, as Muon runs it
    ref = zeropower_via_newtonschulz5(G, 5)
    assert (out.float() - ref.float()).norm() / ref.float().norm() < 0.05  # bf16 roundings differ, not the math


def test_ns_kernel_auto_takes_the_kernel_for_large_matrices_on_gpus_only():
    from chatforge.train.optim import use_ns_kernel
    assert use_ns_kernel(None, (1280, 3456), cuda=True)   # d20's MLP: 1.34x on an H100
    assert use_ns_kernel(None, (2048, 768), cuda=True)    # d12's MLP: 1.41x
    assert not use_ns_kernel(None, (768, 768), cuda=True)  # d12's attention: 0.73x
    assert not use_ns_kernel(None, (1280, 3456), cuda=False)  # CPUs: the twin is only slower
    assert use_ns_kernel(True, (64, 64), cuda=False) and not use_ns_kernel(False, (4096, 4096), cuda=True)
