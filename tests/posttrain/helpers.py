"""Helpers the post-training tests share: stopping a run between checkpoints, comparing weights."""

import pytest
import torch


def stop_at_call(monkeypatch, module, name: str, n: int, run) -> None:
    """Run `run()` with module.name raising KeyboardInterrupt (a Ctrl-C) on its n-th call, as a
    killed training run: the resume tests stop a run between checkpoints this way."""
    real, calls = getattr(module, name), {"n": 0}

    def dies(*a, **k):
        calls["n"] += 1
        if calls["n"] == n:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(module, name, dies)
    with pytest.raises(KeyboardInterrupt):
        run()
    monkeypatch.setattr(module, name, real)


def assert_same_weights(run_a, run_b) -> None:
    """The two run directories' model.safetensors hold exactly the same tensors."""
    from safetensors.torch import load_file

    a, b = load_file(str(run_a / "model.safetensors")), load_file(str(run_b / "model.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0)
