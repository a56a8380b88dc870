"""FP8 head matmuls (model/fp8.py): close to the bf16/fp32 result, forward and backward."""

import pytest
import torch
import torch.nn.functional as F

from chatforge.model import GPT, GPTConfig
from chatforge.model.fp8 import fp8_linear, fp8_supported


def _cpu_scaled_mm_works() -> bool:
    try:
        one = torch.tensor(1.0)
        a = torch.zeros(16, 16, dtype=torch.float8_e4m3fn)
        torch._scaled_mm(a, a.t(), scale_a=one, scale_b=one, out_dtype=torch.bfloat16)
        return True
    except (RuntimeError, NotImplementedError):
        return False


needs_fp8_mm = pytest.mark.skipif(not _cpu_scaled_mm_works(), reason="this torch build has no CPU _scaled_mm")


def rel(a, b):
    return ((a - b).norm() / b.norm()).item()


@needs_fp8_mm
def test_fp8_linear_matches_full_precision_head():
    torch.manual_seed(0)
    M, K, N = 512, 64, 1024
    x = F.rms_norm(torch.randn(M, K), (K,)).requires_grad_()   # the head's input: normed, no gains
    w = (torch.randn(N, K) * 0.02).requires_grad_()
    t = torch.randint(0, N, (M,))
    loss = F.cross_entropy(fp8_linear(x, w).float(), t)
    loss.backward()
    gx, gw = x.grad, w.grad
    x2, w2 = x.detach().clone().requires_grad_(), w.detach().clone().requires_grad_()
    ref = F.cross_entropy(x2 @ w2.t(), t)
    ref.backward()
    assert abs(loss.item() - ref.item()) < 1e-2
    # e4m3 operands and an e5m2 gradient: a few percent, not more
    assert rel(gx, x2.grad) < 0.06 and rel(gw, w2.grad) < 0.06
    assert gw.dtype == w.dtype and gx.shape == x.shape


@needs_fp8_mm
def test_gpt_fp8_head_only_in_training_loss():
    torch.manual_seed(0)
    model = GPT(GPTConfig.from_preset("d2", vocab_size=512, seq_len=64))
    with torch.no_grad():
        model.lm_head.weight.normal_(0, 0.02)
    idx = torch.randint(0, 512, (2, 64))
    ref, logits = model(idx, idx).item(), model(idx)
    model.fp8_head = True
    loss = model(idx, idx).item()
    assert loss != ref and abs(loss - ref) < 2e-2    # the training loss goes through FP8 ...
    assert torch.equal(model(idx), logits)          # ... logits for sampling do not
    model.eval()  # evaluation (val loss, bpb) runs in full precision
    assert model(idx, idx).item() == pytest.approx(ref, abs=1e-6)


def test_fp8_needs_a_gpu_with_fp8_tensor_cores():
    assert not fp8_supported("cpu")
