"""Training checkpoints: everything `--resume` needs to continue exactly where a run stopped.

    RUN/model.safetensors + RUN/config.json   the weights (HF names) and config, step included
    RUN/checkpoint/state.pt                   optimizer states, data-loader position, RNG states,
                                              step, tokens seen, the training config

Optimizer states are saved as *full* state dicts keyed by parameter name (torch.distributed.
checkpoint.state_dict), the same for one process, DDP and FSDP2; so a checkpoint written by any
world size / mode resumes under any other. The checkpoint folder is written beside the old one
and swapped in by rename; config.json's step is checked against state.pt's on resume, so a crash
between the two writes is detected instead of silently resuming mismatched weights.
SFT saves and resumes through the same two functions.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path

import numpy as np
import torch
from torch.distributed.checkpoint.state_dict import (StateDictOptions, get_optimizer_state_dict,
                                                     set_model_state_dict, set_optimizer_state_dict)

from chatforge.common import ChatforgeError
from chatforge.model.run_dir import model_state_dict, save_run, unwrap
from chatforge.train.distributed import barrier


def rng_state() -> dict:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def save_checkpoint(run_dir, model, optimizers, *, step: int, loader_state: dict, extra: dict | None = None,
                    tokenizer=None, is_main: bool = True, run_config: dict | None = None) -> None:
    """Collective under torchrun (every rank calls it); rank 0 writes."""
    raw = unwrap(model)
    if hasattr(raw, "reshard"):  # FSDP2: an eval forward leaves the root unsharded; state dicts want shards
        raw.reshard()
    full_opt = get_optimizer_state_dict(raw, optimizers, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    weights = model_state_dict(raw)  # gathers FSDP2 shards
    if is_main:
        run_dir = Path(run_dir)
        state = {"step": step, "optimizers": full_opt, "loader": loader_state, "rng": rng_state(), **(extra or {})}
        tmp = run_dir / f".checkpoint.tmp.{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        torch.save(state, tmp / "state.pt")
        save_run(run_dir, raw, tokenizer, state_dict=weights, step=step, **(run_config or {}))
        final = run_dir / "checkpoint"
        if final.exists():
            old = run_dir / f".checkpoint.old.{os.getpid()}"
            os.replace(final, old)
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
    barrier()


def has_checkpoint(run_dir) -> bool:
    return (Path(run_dir) / "checkpoint" / "state.pt").exists()


def load_checkpoint(run_dir, model, optimizers) -> dict:
    """Load weights + optimizer states into (possibly wrapped/sharded) model; returns the state dict
    (step, loader, rng, ...). Call on every rank, before compiling."""
    from safetensors.torch import load_file

    run_dir = Path(run_dir)
    if not has_checkpoint(run_dir):
        raise ChatforgeError(f"{run_dir} has no checkpoint to resume; drop --resume to start a new run")
    state = torch.load(run_dir / "checkpoint" / "state.pt", map_location="cpu", weights_only=False)
    cfg_step = json.loads((run_dir / "config.json").read_text()).get("step")
    if cfg_step != state["step"]:
        raise ChatforgeError(f"{run_dir}: weights are at step {cfg_step} but the checkpoint at step {state['step']} "
                             "(the run was killed while saving); start the run again in a fresh --out directory")
    raw = unwrap(model)
    weights = load_file(str(run_dir / "model.safetensors"))
    if raw.config.tie_embeddings:
        weights["lm_head.weight"] = weights["model.embed_tokens.weight"]
    set_model_state_dict(raw, weights, options=StateDictOptions(full_state_dict=True))
    set_optimizer_state_dict(raw, optimizers, state["optimizers"], options=StateDictOptions(full_state_dict=True))
    return state
