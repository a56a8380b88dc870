import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture
def triton_interpreter():
    """run(script): the script in a fresh Python under TRITON_INTERPRET=1 (Triton kernels on CPU);
    it must print exactly "ok". Skips where triton is not installed."""
    pytest.importorskip("triton", reason="triton is not installed (the dev extras install it on Linux)")

    def run(script):
        env = {**os.environ, "TRITON_INTERPRET": "1", "PYTHONPATH": ROOT}
        r = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
        assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr[-2000:]
    return run


@pytest.fixture
def loss_and_grads():
    """run(model, x): (loss, {name: grad}) of one forward/backward with x as input and target."""
    def run(model, x):
        model.zero_grad()
        loss = model(x, targets=x)
        loss.backward()
        return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return run
