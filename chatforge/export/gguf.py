"""Export a run directory as GGUF (llama.cpp, LM Studio, Ollama), written with the `gguf` package.

    OUT/<run>-<quant>.gguf   architecture "llama": tensors by llama.cpp's names, tokenizer, chat template
    OUT/Modelfile            for `ollama create NAME -f OUT/Modelfile`

Choices, each what llama.cpp's own convert_hf_to_gguf.py does for a Llama:
- Tensor names by table (TENSOR_NAMES). q_proj / k_proj rows are permuted from HF's rotate-half
  RoPE layout to GGML's interleaved pairs (`rope_permute`); with tied embeddings output.weight is
  left out and llama.cpp reuses token_embd.
- Norm gains stay F32; 2-D weights take --quant. A tensor whose rows do not split into the
  quant's blocks (32 values for q8_0 / q4_0 / ...) falls back to F16, as convert_hf_to_gguf does.
  Quantization is the `gguf` package's numpy code, so only its types with a Python quantizer
  are offered (QUANTS); k-quants need llama.cpp's `llama-quantize` on the f16 file.
- Tokenizer "gpt2" (byte-level BPE): the HF export's byte-to-unicode vocab and merges, every split
  of every token in rank order (tokenizer/hf_export.py says why). Pre-tokenizer "llama-bpe": its
  regex is exactly our split pattern (Llama 3's), and that type also turns on ignore_merges (a
  whole-piece token is taken as is), which our tiktoken encoding does too.
- bos <|bos|> added by llama.cpp (add_bos_token; llama.cpp strips the template's own leading bos),
  eos = eot = <|assistant_end|>; specials are CONTROL tokens (never made from plain text).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from chatforge.common import ChatforgeError, atomic_path, atomic_write_text

# llama.cpp's `llama-bpe` regex (Llama 3's), a fact about llama.cpp rather than a copy of our
# SPLIT_PATTERN: should ours ever change, the export must refuse instead of tokenizing differently
LLAMA3_PATTERN = (r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"""
                  r"""|\s*[\r\n]+|\s+(?!\S)|\s+""")

TENSOR_NAMES = {
    "model.embed_tokens.weight": "token_embd.weight",
    "model.norm.weight": "output_norm.weight",
    "lm_head.weight": "output.weight",
    "input_layernorm.weight": "attn_norm.weight",
    "self_attn.q_proj.weight": "attn_q.weight",
    "self_attn.k_proj.weight": "attn_k.weight",
    "self_attn.v_proj.weight": "attn_v.weight",
    "self_attn.o_proj.weight": "attn_output.weight",
    "post_attention_layernorm.weight": "ffn_norm.weight",
    "mlp.gate_proj.weight": "ffn_gate.weight",
    "mlp.up_proj.weight": "ffn_up.weight",
    "mlp.down_proj.weight": "ffn_down.weight",
}
QUANTS = ("f32", "f16", "bf16", "q8_0", "q5_1", "q5_0", "q4_1", "q4_0")


def gguf_name(name: str) -> str:
    if name in TENSOR_NAMES:
        return TENSOR_NAMES[name]
    parts = name.split(".")  # model.layers.N.<rest>
    rest = ".".join(parts[3:])
    if parts[:2] != ["model", "layers"] or rest not in TENSOR_NAMES:
        raise ChatforgeError(f"cannot export to GGUF: no llama.cpp name for tensor {name}; add it to "
                             "TENSOR_NAMES in chatforge/export/gguf.py")
    return f"blk.{parts[2]}.{TENSOR_NAMES[rest]}"


def rope_permute(w: np.ndarray, n_head: int) -> np.ndarray:
    """Rows of q_proj / k_proj from HF's rotate-half layout (first half, second half of each head) to
    GGML's interleaved pairs (convert_hf_to_gguf.py's LlamaModel.permute)."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _qtype(quant: str):
    from gguf import GGMLQuantizationType as Q

    return {"f32": Q.F32, "f16": Q.F16, "bf16": Q.BF16, "q8_0": Q.Q8_0, "q5_1": Q.Q5_1, "q5_0": Q.Q5_0,
            "q4_1": Q.Q4_1, "q4_0": Q.Q4_0}[quant]


def _file_type(quant: str):
    from gguf import LlamaFileType as F

    return {"f32": F.ALL_F32, "f16": F.MOSTLY_F16, "bf16": F.MOSTLY_BF16, "q8_0": F.MOSTLY_Q8_0,
            "q5_1": F.MOSTLY_Q5_1, "q5_0": F.MOSTLY_Q5_0, "q4_1": F.MOSTLY_Q4_1, "q4_0": F.MOSTLY_Q4_0}[quant]


def add_tokenizer(writer, tok) -> None:
    import gguf

    from chatforge.export.chat_template import CHAT_TEMPLATE
    from chatforge.tokenizer.hf_export import _show, hf_merges

    if tok.pattern != LLAMA3_PATTERN:
        raise ChatforgeError("cannot export to GGUF: the tokenizer's split pattern is not the Llama 3 one, the only "
                             "pre-tokenizer of llama.cpp's list that chatforge maps (tokenizer.ggml.pre llama-bpe)")
    tokens = [_show(tok.token_bytes(i)) for i in range(tok.n_ordinary)] + list(tok.special_tokens)
    types = [gguf.TokenType.NORMAL] * tok.n_ordinary + [gguf.TokenType.CONTROL] * len(tok.special_tokens)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("llama-bpe")
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(hf_merges(tok))
    writer.add_bos_token_id(tok.bos_id)
    writer.add_eos_token_id(tok.special_id("assistant_end"))
    writer.add_eot_token_id(tok.special_id("assistant_end"))
    writer.add_add_bos_token(True)
    writer.add_add_eos_token(False)
    writer.add_chat_template(CHAT_TEMPLATE)


def write_gguf(path: Path, model_cfg: dict, state: dict, tok, quant: str, name: str, progress: bool = False) -> None:
    import gguf
    from tqdm import tqdm

    if quant not in QUANTS:
        raise ChatforgeError(f"unknown --quant {quant!r}; the gguf package quantizes to {', '.join(QUANTS)} "
                             "(k-quants: run llama.cpp's llama-quantize on the f16 file)")
    n_head, n_kv = model_cfg["n_head"], model_cfg["n_kv_head"]
    head_dim = model_cfg["n_embd"] // n_head
    with atomic_path(path) as tmp:
        w = gguf.GGUFWriter(str(tmp), "llama")
        w.add_name(name)
        w.add_context_length(model_cfg["seq_len"])
        w.add_embedding_length(model_cfg["n_embd"])
        w.add_block_count(model_cfg["n_layer"])
        w.add_feed_forward_length(model_cfg["intermediate_size"])
        w.add_head_count(n_head)
        w.add_head_count_kv(n_kv)
        w.add_key_length(head_dim)
        w.add_value_length(head_dim)
        w.add_rope_dimension_count(head_dim)
        w.add_rope_freq_base(float(model_cfg["rope_theta"]))
        w.add_layer_norm_rms_eps(float(model_cfg["norm_eps"]))
        w.add_vocab_size(model_cfg["vocab_size"])
        w.add_file_type(_file_type(quant))
        add_tokenizer(w, tok)
        qtype = _qtype(quant)
        for hf_name, t in tqdm(state.items(), desc=f"{path.name}", unit="tensor", disable=not progress):
            if hf_name == "lm_head.weight" and model_cfg.get("tie_embeddings"):
                continue
            a = t.float().numpy()
            if hf_name.endswith("q_proj.weight"):
                a = rope_permute(a, n_head)
            elif hf_name.endswith("k_proj.weight"):
                a = rope_permute(a, n_kv)
            q = gguf.GGMLQuantizationType.F32 if a.ndim == 1 else qtype
            block = gguf.GGML_QUANT_SIZES[q][0]
            if a.shape[-1] % block:
                q = gguf.GGMLQuantizationType.F16
            data = gguf.quants.quantize(a, q)
            w.add_tensor(gguf_name(hf_name), data, raw_dtype=q)  # quantized bytes: the writer derives the shape
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()


def modelfile(gguf_file: str, seq_len: int) -> str:
    from chatforge.export.chat_template import OLLAMA_TEMPLATE

    return (f"# ollama create NAME -f Modelfile && ollama run NAME\nFROM ./{gguf_file}\n"
            f'TEMPLATE """{OLLAMA_TEMPLATE}"""\n'
            'PARAMETER stop "<|assistant_end|>"\n'
            f"PARAMETER num_ctx {seq_len}\n"
            "PARAMETER temperature 0.7\n")


def export_gguf(run_dir, out, quants=("f16",), progress: bool = False) -> list[Path]:
    """One GGUF per quant in `out`, plus an Ollama Modelfile for the first; returns the files written."""
    from safetensors.torch import load_file

    from chatforge.export.hf import check_llama, read_run
    from chatforge.tokenizer import Tokenizer

    run_dir, run_cfg = read_run(run_dir)
    check_llama(run_cfg["model"], "GGUF")
    for q in quants:
        if q not in QUANTS:
            raise ChatforgeError(f"unknown --quant {q!r}; the gguf package quantizes to {', '.join(QUANTS)} "
                                 "(k-quants: run llama.cpp's llama-quantize on the f16 file)")
    tok = Tokenizer.load(run_dir / "tokenizer")
    state = load_file(str(run_dir / "model.safetensors"))
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    name = run_dir.resolve().name
    written = []
    for q in quants:
        path = out / f"{name}-{q}.gguf"
        write_gguf(path, run_cfg["model"], state, tok, q, name, progress)
        written.append(path)
    atomic_write_text(out / "Modelfile", modelfile(written[0].name, run_cfg["model"]["seq_len"]))
    return written + [out / "Modelfile"]
