"""Run directories: what `train` / `sft` write and `sample`, `chat`, `serve`, `eval` read.

    RUN/config.json         {"model": GPTConfig fields, "kind": ..., "step": ..., ...}
    RUN/model.safetensors   weights, HF Llama names
    RUN/tokenizer/          the tokenizer the run was trained with
    RUN/checkpoint/         training state (written by chatforge.train.checkpoint)
    RUN/log.jsonl

Every file is written to a temp name and renamed, so a killed job leaves the old run intact.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import torch

from chatforge.common import ChatforgeError, atomic_path, atomic_write_json
from chatforge.model.gpt import GPT, GPTConfig


def unwrap(model):
    """The plain GPT under DDP (`.module`) and torch.compile (`._orig_mod`)."""
    while True:
        if hasattr(model, "_orig_mod"):
            model = model._orig_mod
        elif hasattr(model, "module") and isinstance(model.module, torch.nn.Module):
            model = model.module
        else:
            return model


def model_state_dict(model) -> dict[str, torch.Tensor]:
    """Full, contiguous CPU tensors with HF names (FSDP2 DTensors are gathered: call on every rank)."""
    model = unwrap(model)
    out = {}
    for name, t in model.state_dict().items():
        if hasattr(t, "full_tensor"):
            t = t.full_tensor()
        out[name] = t.detach().to("cpu").contiguous()
    if model.config.tie_embeddings:
        out.pop("lm_head.weight", None)  # safetensors refuses shared storage; HF re-ties on load
    return out


def save_weights(path, state_dict: dict[str, torch.Tensor]) -> None:
    from safetensors.torch import save_file

    with atomic_path(path) as tmp:
        save_file(state_dict, str(tmp), metadata={"format": "pt"})


def save_tokenizer(run_dir: Path, tokenizer) -> None:
    """Copy a tokenizer directory (path) or save a Tokenizer object into RUN/tokenizer, atomically."""
    dest = run_dir / "tokenizer"
    if tokenizer is None:
        return
    if isinstance(tokenizer, (str, os.PathLike)):
        src = Path(tokenizer)
        if src.resolve() == dest.resolve():
            return
        if not src.is_dir():
            raise ChatforgeError(f"tokenizer directory {src} does not exist; train one with `chatforge tokenizer train`")
    tmp = Path(tempfile.mkdtemp(prefix=".tokenizer.", dir=run_dir))
    try:
        if isinstance(tokenizer, (str, os.PathLike)):
            shutil.copytree(src, tmp, dirs_exist_ok=True)
        else:
            # Tokenizer.save points the object at where it saved; that is a temp dir renamed
            # away below, so keep the caller's object pointing where it pointed before
            before = getattr(tokenizer, "path", None)
            tokenizer.save(tmp)
            tokenizer.path = before
        if dest.exists():
            old = dest.with_name(f".tokenizer.old.{os.getpid()}")
            os.replace(dest, old)
            os.replace(tmp, dest)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def save_run(run_dir, model, tokenizer=None, state_dict=None, **config) -> Path:
    """Write config.json, model.safetensors and tokenizer/ into run_dir.

    `tokenizer`: a Tokenizer (saved) or a tokenizer directory (copied), or None to leave it alone.
    `config`: extra keys for config.json (kind, step, ...). Pass `state_dict` when it was already
    gathered (FSDP2) so that only rank 0 needs to call this.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    save_weights(run_dir / "model.safetensors", state_dict if state_dict is not None else model_state_dict(model))
    save_tokenizer(run_dir, tokenizer)
    cfg = {"model": unwrap(model).config.to_dict(), "kind": config.pop("kind", "base"), **config}
    atomic_write_json(run_dir / "config.json", cfg)
    return run_dir


def load_tokenizer(tok_dir):
    from chatforge.tokenizer import Tokenizer  # noqa: F401  (lands with the tokenizer stage)

    return Tokenizer.load(tok_dir)


def load_run(run_dir, device="cpu", dtype=None, model_cls=None):
    """-> (model in eval mode on `device`, tokenizer or None when RUN/tokenizer is absent, config dict).
    model_cls: a GPT subclass whose weights the run holds (the reward model's); default GPT."""
    from safetensors.torch import load_file

    run_dir = Path(run_dir)
    cfg_path = run_dir / "config.json"
    if not cfg_path.exists():
        raise ChatforgeError(f"{run_dir} is not a run directory (no config.json); train one with `chatforge train`")
    config = json.loads(cfg_path.read_text())
    gpt_cfg = GPTConfig.from_dict(config["model"])
    with torch.device("meta"):
        model = (model_cls or GPT)(gpt_cfg)
    state = load_file(str(run_dir / "model.safetensors"), device=str(device))
    if gpt_cfg.tie_embeddings:
        state["lm_head.weight"] = state["model.embed_tokens.weight"]
    model.load_state_dict(state, strict=True, assign=True)
    if gpt_cfg.tie_embeddings:
        model.lm_head.weight = model.model.embed_tokens.weight
    model._build_rope(gpt_cfg.seq_len, device=torch.device(device))
    if dtype is not None:
        model.to(dtype=dtype)
    model.eval()
    tokenizer = None
    if (run_dir / "tokenizer").is_dir():
        tokenizer = load_tokenizer(run_dir / "tokenizer")
    return model, tokenizer, config
