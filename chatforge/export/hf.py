"""Export a run directory as a Hugging Face folder that transformers loads without chatforge.

    OUT/config.json              LlamaConfig (model_type "llama", LlamaForCausalLM)
    OUT/generation_config.json   eos = <|assistant_end|> (the end of an assistant turn)
    OUT/model.safetensors        the run's weights as they are (names are HF Llama's), in --dtype
    OUT/tokenizer.json           our BPE for `tokenizers` (tokenizer/hf_export.py: same ids)
    OUT/tokenizer_config.json    ... with the Jinja chat template (export/chat_template.py)
    OUT/README.md                model card (export/card.py)

Our model IS Llama by construction (model/gpt.py): rotate-half RoPE, RMSNorm with gains (fixed
ones are saved as ones), SwiGLU, no biases, GQA, tied or untied embeddings; no QK norm, no logit
soft-capping. So the export is a table of config fields, not a conversion. `check_llama` refuses a
run whose config holds a field the table does not know: a future architecture change must decide
how (or whether) it maps, instead of exporting a model that silently computes something else.
"""

from __future__ import annotations

import json
from pathlib import Path

from chatforge.common import ChatforgeError, atomic_path, atomic_write_json, atomic_write_text

# GPTConfig fields and what Llama makes of them (None: same math whatever the value).
LLAMA_FIELDS = {
    "vocab_size": "vocab_size", "seq_len": "max_position_embeddings", "n_layer": "num_hidden_layers",
    "n_head": "num_attention_heads", "n_kv_head": "num_key_value_heads", "n_embd": "hidden_size",
    "intermediate_size": "intermediate_size", "rope_theta": "rope_theta", "norm_eps": "rms_norm_eps",
    "tie_embeddings": "tie_word_embeddings", "norm_gains": None,
}
DTYPES = ("float32", "bfloat16", "float16")


def read_run(run_dir) -> tuple[Path, dict]:
    """(run dir, its config.json) after checking it is a run directory with weights and a tokenizer."""
    run_dir = Path(run_dir)
    cfg_path = run_dir / "config.json"
    if not cfg_path.is_file() or not (run_dir / "model.safetensors").is_file():
        raise ChatforgeError(f"{run_dir} is not a run directory (needs config.json and model.safetensors); "
                             "train one with `chatforge train` or `chatforge sft`")
    if not (run_dir / "tokenizer").is_dir():
        raise ChatforgeError(f"{run_dir} has no tokenizer/ directory; copy the tokenizer the run was trained "
                             "with there")
    return run_dir, json.loads(cfg_path.read_text())


def check_llama(model_cfg: dict, target: str) -> None:
    """One-line ChatforgeError naming what a Llama-architecture `target` cannot hold."""
    unknown = sorted(set(model_cfg) - set(LLAMA_FIELDS))
    if unknown:
        raise ChatforgeError(f"cannot export to {target}: the model config has {', '.join(unknown)}, which the "
                             "Llama mapping in chatforge/export/hf.py does not cover; add it there first")
    if model_cfg["n_head"] % model_cfg["n_kv_head"] or model_cfg["n_embd"] % model_cfg["n_head"]:
        raise ChatforgeError(f"cannot export to {target}: {model_cfg['n_head']} heads do not split evenly over "
                             f"{model_cfg['n_kv_head']} key/value heads and width {model_cfg['n_embd']}")


def hf_config(model_cfg: dict, tok, dtype: str) -> dict:
    from chatforge.model.gpt import GPTConfig

    cfg = GPTConfig.from_dict(model_cfg).to_hf_llama()
    return {"architectures": ["LlamaForCausalLM"], "model_type": "llama", **cfg,
            "rope_scaling": None, "initializer_range": 0.02, "use_cache": True,
            "bos_token_id": tok.bos_id, "eos_token_id": tok.special_id("assistant_end"),
            "torch_dtype": dtype}


def write_tokenizer_files(tok, out: Path) -> None:
    """tokenizer.json + tokenizer_config.json (ours, tokenizer/hf_export.py) with the chat template."""
    from chatforge.export.chat_template import CHAT_TEMPLATE
    from chatforge.tokenizer.hf_export import write_hf_files

    write_hf_files(tok, out)
    config = json.loads((out / "tokenizer_config.json").read_text())
    config["chat_template"] = CHAT_TEMPLATE
    atomic_write_json(out / "tokenizer_config.json", config)


def export_hf(run_dir, out, dtype: str = "float32") -> list[Path]:
    """Write the HF folder for `run_dir` into `out`; returns the files written."""
    import torch
    from safetensors.torch import load_file, save_file

    from chatforge.export.card import model_card
    from chatforge.tokenizer import Tokenizer

    if dtype not in DTYPES:
        raise ChatforgeError(f"unknown --dtype {dtype!r}; use one of {', '.join(DTYPES)}")
    run_dir, run_cfg = read_run(run_dir)
    check_llama(run_cfg["model"], "Hugging Face Llama")
    tok = Tokenizer.load(run_dir / "tokenizer")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)

    state = load_file(str(run_dir / "model.safetensors"))
    if run_cfg["model"].get("tie_embeddings"):
        state.pop("lm_head.weight", None)  # HF re-ties it from embed_tokens (tie_word_embeddings)
    state = {k: v.to(getattr(torch, dtype)).contiguous() for k, v in state.items()}
    with atomic_path(out / "model.safetensors") as tmp:
        save_file(state, str(tmp), metadata={"format": "pt"})
    config = hf_config(run_cfg["model"], tok, dtype)
    atomic_write_json(out / "config.json", config)
    atomic_write_json(out / "generation_config.json", {
        "bos_token_id": config["bos_token_id"], "eos_token_id": config["eos_token_id"],
        "pad_token_id": config["eos_token_id"], "do_sample": True, "temperature": 0.7, "top_k": 50})
    write_tokenizer_files(tok, out)
    atomic_write_text(out / "README.md", model_card(run_dir, run_cfg, tok, state))
    return [out / n for n in ("config.json", "generation_config.json", "model.safetensors", "tokenizer.json",
                              "tokenizer_config.json", "README.md")]
