"""FP8 training matmuls (model/fp8.py): close to the fp32 result, forward and backward."""

import pytest
import torch
import torch.nn.functional as F

from chatforge.model import GPT, GPTConfig
from chatforge.model.fp8 import fp8_head_cross_entropy, fp8_head_linear, fp8_linear, fp8_supported


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
    loss = F.cross_entropy(fp8_head_linear(x, w).float(), t)
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
    model.set_fp8("head")
    loss = model(idx, idx).item()
    assert loss != ref and abs(loss - ref) < 2e-2    # the training loss goes through FP8 ...
    assert torch.equal(model(idx), logits)          # ... logits for sampling do not
    model.eval()  # evaluation (val loss, bpb) runs in full precision
    assert model(idx, idx).item() == pytest.approx(ref, abs=1e-6)


@needs_fp8_mm
def test_fused_fp8_head_loss_matches_head_then_cross_entropy():
    """fp8_head_cross_entropy = F.cross_entropy(fp8_head_linear(x, w)): same loss, same gradients
    (the same FP8 scales; only where the gradient is cast differs), ignored targets included."""
    torch.manual_seed(0)
    M, K, N = 384, 64, 1000
    x = F.rms_norm(torch.randn(3, M // 3, K), (K,)).requires_grad_()
    w = (torch.randn(N, K) * 0.02).requires_grad_()
    t = torch.randint(0, N, (3, M // 3))
    t[0, :9] = -1
    loss = fp8_head_cross_entropy(x, w, t)
    (0.5 * loss).backward()
    gx, gw = x.grad, w.grad
    x2, w2 = x.detach().clone().requires_grad_(), w.detach().clone().requires_grad_()
    ref = F.cross_entropy(fp8_head_linear(x2, w2).float().view(M, N), t.view(-1), ignore_index=-1)
    (0.5 * ref).backward()
    assert loss.item() == pytest.approx(ref.item(), abs=1e-5)
    assert gx.shape == x.shape and gw.dtype == w.dtype
    assert rel(gx, x2.grad) < 1e-2 and rel(gw, w2.grad) < 1e-2  # one e5m2 step apart in a few places
    assert gx[0, :9].abs().max() == 0  # ignored rows get no gradient


def test_fp8_needs_a_gpu_with_fp8_tensor_cores():
    assert not fp8_supported("cpu")


@needs_fp8_mm
def test_fp8_linear_dynamic_scales_follow_the_tensors():
    """Block matmuls see inputs and gradients of any size: per-tensor scales measured each call."""
    torch.manual_seed(0)
    M, K, N = 256, 128, 192
    for x_mag, w_mag, g_mag in ((1.0, 0.05, 1.0), (3e3, 1e-4, 1e-6), (1e-3, 30.0, 1e4)):
        x = (torch.randn(M, K) * x_mag).requires_grad_()
        w = (torch.randn(N, K) * w_mag).requires_grad_()
        g = torch.randn(M, N) * g_mag
        y = fp8_linear(x, w)
        y.backward(g)
        x2, w2 = x.detach().clone().requires_grad_(), w.detach().clone().requires_grad_()
        y2 = x2 @ w2.t()
        y2.backward(g)
        assert torch.isfinite(y).all() and torch.isfinite(x.grad).all() and torch.isfinite(w.grad).all()
        assert rel(y.float(), y2) < 0.06, (x_mag, w_mag)
        assert rel(x.grad.float(), x2.grad) < 0.12 and rel(w.grad, w2.grad) < 0.12, (x_mag, w_mag, g_mag)


def _model_and_reference(**overrides):
    """A d2 model with nonzero o_proj/down_proj/head (so every matmul carries gradient), a batch,
    and its full-precision loss and gradients."""
    torch.manual_seed(0)
    model = GPT(GPTConfig.from_preset("d2", vocab_size=512, seq_len=64, **overrides))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 2 and "embed" not in name:
                p.normal_(0, 0.05)
    idx = torch.randint(0, 512, (2, 64))
    ref = model(idx, idx)
    ref.backward()
    ref_grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    return model, idx, ref.item(), ref_grads


def _count_fp8_forward_calls(monkeypatch):
    from chatforge.model import gpt as G

    calls, orig = [], G.fp8_forward_linear
    monkeypatch.setattr(G, "fp8_forward_linear", lambda x, w, s: calls.append(tuple(w.shape)) or orig(x, w, s))
    return calls


@needs_fp8_mm
def test_gpt_fp8_all_trains_close_to_full_precision():
    model, idx, ref, ref_grads = _model_and_reference()
    model.set_fp8("all")
    assert model.model.layers[0].mlp.fp8 == model.model.layers[1].self_attn.fp8 == "all"
    loss = model(idx, idx)
    loss.backward()
    assert loss.item() != ref and abs(loss.item() - ref) < 2e-2
    for name in ("model.layers.0.self_attn.q_proj.weight", "model.layers.1.self_attn.v_proj.weight",
                 "model.layers.0.self_attn.o_proj.weight", "model.layers.1.mlp.gate_proj.weight",
                 "model.layers.0.mlp.up_proj.weight", "model.layers.1.mlp.down_proj.weight", "lm_head.weight"):
        got = dict(model.named_parameters())[name].grad
        assert got.dtype == torch.float32 and rel(got, ref_grads[name]) < 0.15, name
    model.eval()  # evaluation stays in full precision
    assert model(idx, idx).item() == pytest.approx(ref, abs=1e-6)
    model.set_fp8("off")
    model.train()
    assert model(idx, idx).item() == pytest.approx(ref, abs=1e-6)
    with pytest.raises(ValueError, match="unknown fp8 mode"):
        model.set_fp8("blocks")


def test_rmsnorm_output_bound_gives_the_static_scale():
    """An RMSNorm without gains never outputs more than sqrt(width): the worst case is one-hot."""
    from chatforge.model.fp8 import E4M3_MAX, rmsnorm_output_scale

    width = 768
    one_hot = torch.zeros(width)
    one_hot[5] = 123.0
    x = torch.cat([one_hot[None], torch.randn(64, width) * 10])
    scale = rmsnorm_output_scale(width, norm_gains=False)
    assert F.rms_norm(x, (width,)).abs().max() <= scale * E4M3_MAX * (1 + 1e-5)
    assert F.rms_norm(one_hot, (width,)).abs().max() == pytest.approx(scale * E4M3_MAX, rel=1e-5)
    assert rmsnorm_output_scale(width, norm_gains=True) is None  # learnable gains: measured per call


def test_matmul_output_bound_holds_for_attention_and_swiglu():
    """The static scales of o_proj's and down_proj's inputs are bounds, not estimates."""
    from chatforge.model.fp8 import matmul_output_bound

    torch.manual_seed(0)
    d, n = 64, 96
    x = F.rms_norm(torch.randn(512, d) * 5, (d,))
    x[0] = 0
    x[0, 3] = d ** 0.5  # the worst case: all energy in one coordinate ...
    wv, wg, wu = torch.randn(n, d), torch.randn(n, d), torch.randn(n, d)
    wv[7] = 0
    wv[7, 3] = 2.0  # ... aligned with one weight row: the bound is reached
    v = x @ wv.t()
    p = torch.softmax(torch.randn(512, 512), -1)   # attention weights: rows sum to 1
    y = p @ v
    bound_v = matmul_output_bound(wv, d)
    assert (v.abs() <= bound_v * (1 + 1e-5)).all() and (y.abs().amax() <= bound_v.max() * (1 + 1e-5))
    assert v[0, 7].item() == pytest.approx(bound_v[7].item(), rel=1e-5)  # tight: reached here
    h = F.silu(x @ wg.t()) * (x @ wu.t())
    assert (h.abs() <= matmul_output_bound(wg, d) * matmul_output_bound(wu, d) * (1 + 1e-5)).all()


@needs_fp8_mm
def test_gpt_fp8_forward_mode_puts_every_block_forward_matmul_in_fp8(monkeypatch):
    model, idx, ref, ref_grads = _model_and_reference()
    model.set_fp8("forward")
    calls = _count_fp8_forward_calls(monkeypatch)
    loss = model(idx, idx)
    loss.backward()
    assert len(calls) == 4 * model.config.n_layer  # q/k/v, o_proj, gate/up, down_proj
    assert loss.item() != ref and abs(loss.item() - ref) < 2e-2
    for name, p in model.named_parameters():
        if p.grad is not None and p.dim() == 2:
            assert rel(p.grad, ref_grads[name]) < 0.15, name


@needs_fp8_mm
def test_fp8_forward_mode_needs_norms_without_gains(monkeypatch):
    """With learnable RMSNorm gains no input has a static bound: 'forward' leaves the blocks plain."""
    model, idx, ref, _ = _model_and_reference(norm_gains=True)
    model.set_fp8("forward")
    calls = _count_fp8_forward_calls(monkeypatch)
    loss = model(idx, idx)
    assert calls == [] and abs(loss.item() - ref) < 2e-2  # only the head ran in FP8


def test_trainer_checks_the_fp8_mode_and_runs_it_only_on_fp8_gpus():
    from chatforge.train.distributed import DistInfo
    from chatforge.train.trainer import Trainer

    model = GPT(GPTConfig.from_preset("d2", vocab_size=256, seq_len=32))
    with pytest.raises(ValueError, match="unknown fp8 mode"):
        Trainer(model, DistInfo(), compile=False, fp8="blocks")
    Trainer(model, DistInfo(), compile=False, fp8="all")
    assert model.fp8 == "off" and model.model.layers[0].mlp.fp8 == "off"  # a CPU has no FP8 tensor cores


def test_fp8_auto_mode_picks_by_width_and_is_off_without_fp8_tensor_cores(monkeypatch):
    import chatforge.model.fp8 as F8
    assert [F8.resolve_mode(m, 768, "cpu") for m in ("auto", "forward", "all", "off")] == ["off"] * 4
    monkeypatch.setattr(F8, "fp8_supported", lambda device: True)
    assert F8.resolve_mode("auto", 768, "cuda") == "forward"    # d12: forward measured fastest
    assert F8.resolve_mode("auto", 1280, "cuda") == "all"       # d20: all measured fastest
    assert F8.resolve_mode("auto", 1024, "cuda") == "all"
    assert F8.resolve_mode("head", 1280, "cuda") == "head"
    with pytest.raises(ValueError, match="unknown fp8 mode"):
        F8.resolve_mode("fast", 768, "cuda")
