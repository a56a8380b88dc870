import pytest
import torch

from chatforge.model import GPT, GPTConfig


def random_model(vocab_size: int, seq_len: int = 256, seed: int = 0) -> GPT:
    """A tiny GPT with every weight random (the stock init zeroes output projections, which would
    make the next token independent of the context and the tests below vacuous)."""
    torch.manual_seed(seed)
    cfg = GPTConfig.from_preset("d2", vocab_size=vocab_size, seq_len=seq_len)
    model = GPT(cfg)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 2:
                p.normal_(0, 1.0 if "embed" in name else 0.1)
    return model.eval()


@pytest.fixture(scope="session")
def tiny_model(tiny_tokenizer):
    return random_model(tiny_tokenizer.vocab_size)


@pytest.fixture(autouse=True)
def _one_torch_thread(one_torch_thread):
    """Every test here runs on one torch thread (see tests/conftest.py)."""
    yield
