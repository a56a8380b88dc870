"""The network: shapes, causality, KV-cache equivalence, learning, and the exact HF Llama mapping."""

import pytest
import torch

from chatforge.model import GPT, GPTConfig, load_run, save_run

V = 300


def tiny(seed=0, **kw):
    torch.manual_seed(seed)
    cfg = GPTConfig.from_preset("d2", vocab_size=V, seq_len=64, **kw)
    m = GPT(cfg)
    # zero-init projections make every block the identity; randomise so the tests see real attention
    with torch.no_grad():
        for p in m.parameters():
            if p.dim() == 2:
                p.normal_(std=0.1)
    return m


def test_presets_follow_depth():
    # GQA (half the key/value heads) from d7 up where the head count is even; tiny CPU sizes keep MHA
    for name, width, heads, kv_heads in [("d2", 128, 2, 2), ("d6", 384, 6, 6), ("d8", 512, 4, 2),
                                         ("d12", 768, 6, 3), ("d20", 1280, 10, 5), ("d26", 1664, 13, 13)]:
        c = GPTConfig.from_preset(name, vocab_size=32768, seq_len=2048)
        assert (c.n_layer, c.n_embd, c.n_head, c.n_kv_head) == (int(name[1:]), width, heads, kv_heads)
        assert c.intermediate_size % 128 == 0 and c.intermediate_size >= 8 * width // 3
    with pytest.raises(Exception):
        GPTConfig.from_preset("big", vocab_size=10)


def test_shapes_and_ignored_targets():
    m = tiny()
    x = torch.randint(0, V, (2, 16))
    assert m(x).shape == (2, 16, V)
    y = x.clone()
    loss = m(x, targets=y)
    assert loss.ndim == 0 and torch.isfinite(loss)
    # targets == -1 are ignored: masking half changes nothing when we compare with manual CE
    y[:, :8] = -1
    logits = m(x)
    ref = torch.nn.functional.cross_entropy(logits[:, 8:].reshape(-1, V), x[:, 8:].reshape(-1))
    assert torch.allclose(m(x, targets=y), ref, atol=1e-5)


def test_causal():
    m = tiny()
    x = torch.randint(0, V, (1, 24))
    x2 = x.clone()
    x2[0, 12:] = torch.randint(0, V, (12,))
    a, b = m(x), m(x2)
    assert torch.allclose(a[:, :12], b[:, :12], atol=1e-5)
    assert not torch.allclose(a[:, 12:], b[:, 12:], atol=1e-3)


@pytest.mark.parametrize("n_kv_head", [2, 1])
def test_kv_cache_matches_full_forward(n_kv_head):
    m = tiny(n_kv_head=n_kv_head).eval()
    x = torch.randint(0, V, (3, 20))
    full = m(x)
    cache = m.new_kv_cache(3, 32)
    parts = [m(x[:, :9], kv_cache=cache)]                       # prefill
    parts += [m(x[:, t:t + 1], kv_cache=cache) for t in range(9, 16)]  # one-token decode
    parts.append(m(x[:, 16:], kv_cache=cache))                  # a multi-token chunk mid-sequence
    assert cache.pos == 20
    assert torch.allclose(torch.cat(parts, 1), full, atol=1e-5)
    with pytest.raises(ValueError):
        m(torch.zeros(3, 13, dtype=torch.long), kv_cache=cache)  # would overflow max_len


def test_left_padded_batch_matches_unpadded_rows():
    m = tiny().eval()
    a, b = torch.randint(0, V, (1, 7)), torch.randint(0, V, (1, 12))
    batch = torch.cat([torch.cat([torch.zeros(1, 5, dtype=torch.long), a], 1), b])
    mask = torch.ones(2, 12, dtype=torch.long)
    mask[0, :5] = 0
    cache = m.new_kv_cache(2, 16)
    out = m(batch, kv_cache=cache, attention_mask=mask)
    assert torch.allclose(out[0, 5:], m(a)[0], atol=1e-5)
    assert torch.allclose(out[1], m(b)[0], atol=1e-5)
    nxt = torch.tensor([[11], [12]])
    step = m(nxt, kv_cache=cache)[:, -1]
    assert torch.allclose(step[0], m(torch.cat([a, nxt[:1]], 1))[0, -1], atol=1e-5)
    assert torch.allclose(step[1], m(torch.cat([b, nxt[1:]], 1))[0, -1], atol=1e-5)


def test_tiny_model_overfits_a_batch():
    torch.manual_seed(0)
    m = GPT(GPTConfig.from_preset("d2", vocab_size=V, seq_len=32))
    x = torch.randint(0, V, (4, 33))
    opt = torch.optim.AdamW(m.parameters(), lr=3e-3)
    first = None
    for _ in range(80):
        loss = m(x[:, :-1], targets=x[:, 1:])
        first = first or loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert first > 5.0 and loss.item() < 0.3


def test_save_and_load_run(tmp_path):
    m = tiny(tie_embeddings=True)
    save_run(tmp_path / "run", m, None, step=7)
    m2, tok, cfg = load_run(tmp_path / "run")
    x = torch.randint(0, V, (2, 10))
    assert torch.equal(m.eval()(x), m2(x))
    assert cfg["step"] == 7 and cfg["kind"] == "base" and tok is None
    assert m2.lm_head.weight is m2.model.embed_tokens.weight


@pytest.mark.parametrize("kw", [{}, {"n_kv_head": 1, "norm_gains": True}, {"tie_embeddings": True}])
def test_weights_load_into_hf_llama_with_same_logits(kw):
    transformers = pytest.importorskip("transformers")
    m = tiny(**kw).eval()
    with torch.no_grad():  # non-trivial norm gains so the mapping of every weight is exercised
        for name, p in m.named_parameters():
            if p.dim() == 1:
                p.uniform_(0.5, 1.5)
    assert any(p.dim() == 1 for p in m.parameters()) == m.config.norm_gains
    hf = transformers.LlamaForCausalLM(transformers.LlamaConfig(**m.config.to_hf_llama())).eval()
    missing, unexpected = hf.load_state_dict(m.state_dict(), strict=False)
    assert not unexpected and set(missing) <= {"lm_head.weight"} and (not missing or m.config.tie_embeddings)
    x = torch.randint(0, V, (2, 17))
    with torch.no_grad():
        ours, theirs = m(x), hf(x).logits
    assert torch.allclose(ours, theirs, atol=1e-4), (ours - theirs).abs().max()


def test_save_run_leaves_the_tokenizer_object_usable(tiny_tokenizer, tmp_path):
    # regression: save_run pointed the caller's Tokenizer.path at a temp dir it then renamed away,
    # so the next run that copied the same (session-wide) tokenizer failed
    before = tiny_tokenizer.path
    m = GPTConfig.from_preset("d2", vocab_size=tiny_tokenizer.vocab_size, seq_len=32)
    save_run(tmp_path / "run1", GPT(m), tiny_tokenizer)
    assert tiny_tokenizer.path == before and (tmp_path / "run1" / "tokenizer").is_dir()
    save_run(tmp_path / "run2", GPT(m), tiny_tokenizer.path)  # copying from its path still works
    _, tok, _ = load_run(tmp_path / "run2")
    assert tok.encode("hello world") == tiny_tokenizer.encode("hello world")


def test_residual_stream_runs_in_the_autocast_dtype():
    """Under autocast the residual stream is bf16 (half the traffic of its adds and norms); without
    autocast, or with low_precision_residual off, it stays fp32. The loss barely moves."""
    m = tiny()
    seen = []
    for block in m.model.layers:
        block.register_forward_pre_hook(lambda mod, args: seen.append(args[0].dtype))
    x = torch.randint(0, V, (2, 32))
    full = m(x, targets=x)
    assert set(seen) == {torch.float32}
    seen.clear()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = m(x, targets=x)
        assert set(seen) == {torch.bfloat16}
        seen.clear()
        m.low_precision_residual = False
        m(x, targets=x)
        assert set(seen) == {torch.float32}
    assert abs(low.item() - full.item()) < 0.05
