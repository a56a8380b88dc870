"""The GGUF export: read back with the gguf package (fast), and run in llama.cpp (slow, needs
llama-cpp-python: `bash scripts/test_llamacpp.sh`)."""

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from chatforge.common import ChatforgeError
from chatforge.export.chat_template import CHAT_TEMPLATE
from chatforge.export.gguf import export_gguf
from chatforge.model import load_run

gguf = pytest.importorskip("gguf")


def unpermute(w, n_head):
    """Inverse of rope_permute: GGML's interleaved pairs back to HF's rotate-half rows."""
    return w.reshape(n_head, w.shape[0] // n_head // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


@pytest.fixture(scope="module")
def exported(tiny_run, tmp_path_factory):
    out = tmp_path_factory.mktemp("gguf")
    files = export_gguf(tiny_run, out, quants=("f16", "q8_0"))
    return {p.name: p for p in files}


def test_metadata_tokenizer_and_tensors_read_back(tiny_run, exported):
    model, tok, cfg = load_run(tiny_run)
    r = gguf.GGUFReader(str(exported["sft-f16.gguf"]))
    f = {k: v.contents() for k, v in r.fields.items() if not k.startswith("GGUF.")}
    assert f["general.architecture"] == "llama" and f["tokenizer.ggml.model"] == "gpt2"
    assert f["tokenizer.ggml.pre"] == "llama-bpe" and f["tokenizer.chat_template"] == CHAT_TEMPLATE
    assert f["llama.rope.freq_base"] == 50_000.0 and abs(f["llama.attention.layer_norm_rms_epsilon"] - 1e-6) < 1e-12
    assert (f["llama.attention.head_count"], f["llama.attention.head_count_kv"]) == (2, 1)
    assert f["tokenizer.ggml.eos_token_id"] == tok.special_id("assistant_end")
    assert f["tokenizer.ggml.bos_token_id"] == tok.bos_id and f["tokenizer.ggml.add_bos_token"] is True
    tokens = f["tokenizer.ggml.tokens"]
    assert len(tokens) == tok.vocab_size and tokens[-len(tok.special_tokens):] == tok.special_tokens
    types = f["tokenizer.ggml.token_type"]
    assert set(types[:tok.n_ordinary]) == {gguf.TokenType.NORMAL}
    assert set(types[tok.n_ordinary:]) == {gguf.TokenType.CONTROL}

    state = model.state_dict()
    tensors = {t.name: t for t in r.tensors}
    assert len(tensors) == len(state)  # untied: output.weight is there too
    for name, w in state.items():
        from chatforge.export.gguf import gguf_name

        t = tensors[gguf_name(name)]
        a = np.asarray(t.data, dtype=np.float32).reshape(w.shape)
        if name.endswith("q_proj.weight"):
            a = unpermute(a, 2)
        elif name.endswith("k_proj.weight"):
            a = unpermute(a, 1)
        assert t.tensor_type == (gguf.GGMLQuantizationType.F32 if w.dim() == 1 else gguf.GGMLQuantizationType.F16)
        assert np.allclose(a, w.numpy(), rtol=1e-3, atol=1e-4), name


def test_q8_0_dequantizes_close_to_the_weights(tiny_run, exported):
    model, _, _ = load_run(tiny_run)
    r = gguf.GGUFReader(str(exported["sft-q8_0.gguf"]))
    t = {t.name: t for t in r.tensors}["blk.0.ffn_down.weight"]
    assert t.tensor_type == gguf.GGMLQuantizationType.Q8_0
    w = model.model.layers[0].mlp.down_proj.weight.detach().numpy()
    a = gguf.quants.dequantize(t.data, t.tensor_type).reshape(w.shape)
    assert np.abs(a - w).max() <= np.abs(w).max() / 127 + 1e-6


def test_modelfile_points_at_the_first_quant(exported):
    text = exported["Modelfile"].read_text()
    assert "FROM ./sft-f16.gguf" in text and 'PARAMETER stop "<|assistant_end|>"' in text


def test_what_gguf_cannot_hold_is_a_one_line_error(tiny_run, tmp_path):
    with pytest.raises(ChatforgeError, match="unknown --quant 'q4_k'"):
        export_gguf(tiny_run, tmp_path, quants=("q4_k",))
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    cfg = json.loads((run / "config.json").read_text())
    cfg["model"]["qk_norm"] = True
    (run / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ChatforgeError, match="qk_norm"):
        export_gguf(run, tmp_path / "out")
    shutil.copytree(tiny_run / "tokenizer", run / "tokenizer", dirs_exist_ok=True)
    bpe = json.loads((run / "tokenizer" / "chatforge_bpe.json").read_text())
    bpe["pattern"] = r"\p{L}+|\s+|."
    (run / "tokenizer" / "chatforge_bpe.json").write_text(json.dumps(bpe))
    cfg["model"].pop("qk_norm")
    (run / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ChatforgeError, match="split pattern"):
        export_gguf(run, tmp_path / "out")
    assert not list((tmp_path / "out").glob("*.gguf"))


def test_cli_writes_both_formats(tiny_run, tmp_path, capsys):
    from chatforge.cli import main

    assert main(["export", str(tiny_run), "--format", "hf,gguf", "--quant", "f16,q4_0", "--out", str(tmp_path)]) == 0
    names = {p.name for p in tmp_path.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "README.md", "sft-f16.gguf", "sft-q4_0.gguf",
            "Modelfile"} <= names
    assert "exported" in capsys.readouterr().out
    assert main(["export", str(tiny_run), "--format", "onnx", "--out", str(tmp_path)]) == 2


# ---- llama.cpp (slow: llama-cpp-python builds llama.cpp from source) ----------------------------

def _llama(path, n_ctx=512):
    llama_cpp = pytest.importorskip("llama_cpp",
                                    reason="llama-cpp-python is not installed: bash scripts/test_llamacpp.sh")
    return llama_cpp.Llama(model_path=str(path), n_ctx=n_ctx, n_threads=1, logits_all=True, verbose=False)


def _heldout_text(n_chars):
    from chatforge.common import shared_data_dir

    d = shared_data_dir()
    if d is None or not (d / "text" / "wikitext-2-valid.tokens.txt").is_file():
        pytest.skip("../shared/data/text/wikitext-2-valid.tokens.txt is absent")
    return (d / "text" / "wikitext-2-valid.tokens.txt").read_text(encoding="utf-8")[:n_chars]


@pytest.fixture(scope="module")
def slow_run(tiny_run):
    """The tiny random run, or a trained run named by $CHATFORGE_EXPORT_TEST_RUN (the speedrun's sft)."""
    return Path(os.environ["CHATFORGE_EXPORT_TEST_RUN"]) if os.environ.get("CHATFORGE_EXPORT_TEST_RUN") else tiny_run


@pytest.fixture(scope="module")
def slow_exported(slow_run, tmp_path_factory):
    files = export_gguf(slow_run, tmp_path_factory.mktemp("gguf_slow"), quants=("f16", "q8_0"))
    return dict(zip(("f16", "q8_0"), files))


def llama_greedy(llm, prompt, n):
    llm.reset()
    llm.eval(prompt)
    out = []
    for _ in range(n):
        nxt = int(np.argmax(llm.scores[llm.n_tokens - 1]))
        out.append(nxt)
        llm.eval([nxt])
    return out


@pytest.mark.slow
def test_llama_cpp_f16_greedy_equals_our_engine(slow_run, slow_exported):
    from chatforge.infer.engine import Engine, SamplingParams

    model, tok, _ = load_run(slow_run)
    llm = _llama(slow_exported["f16"])
    # llama.cpp's own tokenizer (llama-bpe pre-tokenizer) gives our ids, on real text and a chat prompt
    text = _heldout_text(20_000)
    assert llm.tokenize(text.encode(), add_bos=False, special=False) == tok.encode(text)
    chat = tok.render_for_completion([{"role": "user", "content": "What is 2 + 2?"}])
    assert llm.tokenize(tok.decode(chat).encode(), add_bos=False, special=True) == chat
    engine = Engine(model, tok)
    params = SamplingParams(max_tokens=32, temperature=0, stop_token_ids=(), use_tools=False)
    for prompt in (chat, [tok.bos_id] + tok.encode("First Citizen:\nBefore we proceed any further")):
        ours = engine.complete(prompt, params)[0].token_ids
        assert len(ours) == 32
        theirs = llama_greedy(llm, prompt, 32)
        print(f"greedy 32 tokens: llama.cpp f16 == chatforge engine: {theirs == ours}")
        assert theirs == ours


@pytest.mark.slow
def test_llama_cpp_chat_uses_our_template(slow_run, slow_exported):
    """llama-cpp-python's chat completion renders the template from the GGUF's metadata into our
    prompt ids, and its greedy reply is our engine's."""
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    from chatforge.infer.engine import Engine, SamplingParams

    model, tok, _ = load_run(slow_run)
    llm = _llama(slow_exported["f16"])
    msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is the capital of France?"}]
    fmt = Jinja2ChatFormatter(template=llm.metadata["tokenizer.chat_template"], eos_token="<|assistant_end|>",
                              bos_token="<|bos|>", add_generation_prompt=True)
    r = fmt(messages=msgs)
    assert llm.tokenize(r.prompt.encode(), add_bos=not r.added_special, special=True) == tok.render_for_completion(msgs)
    reply = llm.create_chat_completion(msgs, max_tokens=24, temperature=0)["choices"][0]["message"]["content"]
    ours = Engine(model, tok).complete(tok.render_for_completion(msgs),
                                       SamplingParams(max_tokens=24, temperature=0, use_tools=False))[0]
    # llama-cpp-python drops bytes that are not valid UTF-8 where we write U+FFFD (random weights emit them)
    assert reply == "".join(p["text"] for p in ours.parts).replace("\ufffd", "")


@pytest.mark.slow
def test_llama_cpp_q8_0_top1_agrees_on_heldout_text(slow_run, slow_exported):
    model, tok, _ = load_run(slow_run)
    ids = [tok.bos_id] + tok.encode(_heldout_text(5_000))[:500]
    llm = _llama(slow_exported["q8_0"])
    llm.reset()
    llm.eval(ids)
    theirs = np.asarray(llm.scores[:len(ids)]).argmax(-1)
    with torch.no_grad():
        ours = model(torch.tensor([ids]))[0].argmax(-1).numpy()
    agree = float((theirs == ours).mean())
    print(f"q8_0 top-1 agreement {agree:.4f} over {len(ids)} positions")
    assert agree >= 0.95


@pytest.mark.slow
def test_llama_cpp_runs_tied_embeddings(tiny_tokenizer, make_run, tmp_path):
    # no output.weight in the file: llama.cpp must fall back to token_embd as the output head
    from chatforge.infer.engine import Engine, SamplingParams

    run = make_run(tmp_path / "tied", tiny_tokenizer, seed=5, tie_embeddings=True, n_kv_head=2)
    f16 = export_gguf(run, tmp_path / "gguf", quants=("f16",))[0]
    assert "output.weight" not in {t.name for t in gguf.GGUFReader(str(f16)).tensors}
    model, tok, _ = load_run(run)
    prompt = [tok.bos_id] + tok.encode("To be, or not to be")
    params = SamplingParams(max_tokens=32, temperature=0, stop_token_ids=(), use_tools=False)
    assert llama_greedy(_llama(f16), prompt, 32) == Engine(model, tok).complete(prompt, params)[0].token_ids
