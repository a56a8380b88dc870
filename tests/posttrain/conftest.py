"""Shared fixtures of the post-training tests (shared helpers: helpers.py)."""

import json

import pytest
import torch


@pytest.fixture
def sft_and_pairs(tiny_tokenizer, tmp_path):
    """make(n) -> (a tiny d2 "SFT" run with jittered weights, a TRL-style JSONL of n generated
    preference pairs): what reward-model, DPO and RLHF tests start from."""
    from chatforge.model import GPT, GPTConfig, save_run
    from chatforge.posttrain.pairs import synthetic_pairs

    def make(n: int):
        torch.manual_seed(0)
        m = GPT(GPTConfig.from_preset("d2", vocab_size=tiny_tokenizer.vocab_size, seq_len=128))
        with torch.no_grad():
            for p in m.parameters():
                p.add_(torch.randn_like(p) * 0.05)
        base = save_run(tmp_path / "sft", m, tiny_tokenizer, kind="sft", step=0)
        pairs = tmp_path / "pairs.jsonl"
        pairs.write_text("".join(json.dumps({"prompt": p.prompt, "chosen": p.chosen, "rejected": p.rejected}) + "\n"
                                 for p in synthetic_pairs(n, seed=0)))
        return base, pairs

    return make

