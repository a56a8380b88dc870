import pytest
import torch

from chatforge.model import GPT, GPTConfig
from chatforge.model.run_dir import save_run


def random_run(path, tok, seed=0, **overrides):
    """A tiny sft-kind run directory whose every weight is random (norm gains too), with non-default
    RoPE theta and norm eps so the export must carry them, and GQA (2 query heads, 1 key/value head)."""
    torch.manual_seed(seed)
    kw = dict(n_kv_head=1, norm_gains=True, rope_theta=50_000.0, norm_eps=1e-6)
    kw.update(overrides)
    cfg = GPTConfig.from_preset("d2", vocab_size=tok.vocab_size, seq_len=256, **kw)
    model = GPT(cfg)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 1:
                p.uniform_(0.5, 1.5)
            else:
                p.normal_(0, 1.0 if "embed" in name else 0.1)
    save_run(path, model, tok, kind="sft", step=1)
    return path


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory, tiny_tokenizer):
    return random_run(tmp_path_factory.mktemp("export") / "sft", tiny_tokenizer)


@pytest.fixture
def make_run():
    """random_run(path, tok, seed=0, **GPTConfig overrides) -> a run directory."""
    return random_run


@pytest.fixture(autouse=True)
def _one_torch_thread(one_torch_thread):
    yield
