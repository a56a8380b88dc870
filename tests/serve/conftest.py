import shutil
import socket
import threading
import time
from pathlib import Path

import httpx
import pytest
import torch

from chatforge.model import GPT, GPTConfig


def random_model(tok, seq_len=4096, seed=0) -> GPT:
    """Tiny random GPT whose special-token logits are pinned to a large negative value, so replies
    never end by themselves: tests control the length with max_tokens / stop strings / Stop."""
    torch.manual_seed(seed)
    model = GPT(GPTConfig.from_preset("d2", vocab_size=tok.vocab_size, seq_len=seq_len))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 2:
                p.normal_(0, 1.0 if "embed" in name else 0.1)
        special = torch.arange(tok.n_ordinary, tok.vocab_size)
        model.lm_head.weight[special] = 0.0
        model.model.norm.weight.abs_()
    # lm_head has no bias: add one through a forward hook on the logits
    bias = torch.zeros(tok.vocab_size)
    bias[special] = -1e4
    model.lm_head.register_forward_hook(lambda m, i, out: out + bias.to(out.dtype))
    return model.eval()


class LiveServer:
    def __init__(self, app):
        import uvicorn

        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)
        self.thread.start()
        for _ in range(200):
            try:
                if httpx.get(self.url + "/health", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.05)
        raise RuntimeError("server did not start")

    def stop(self):
        self.server.should_exit = True
        self.thread.join(timeout=10)


@pytest.fixture(scope="session")
def live_server(tiny_tokenizer):
    from chatforge.infer.engine import Engine
    from chatforge.infer.tools import default_tools
    from chatforge.serve.app import create_app

    engine = Engine(random_model(tiny_tokenizer), tiny_tokenizer, default_tools())
    srv = LiveServer(create_app(engine, "chatforge-test", max_batch=32))
    srv.engine = engine
    yield srv
    srv.stop()


CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


@pytest.fixture(scope="module")
def browser():
    """Debian's chromium, headless, driven by Playwright (the web UI tests)."""
    if not Path(CHROMIUM).exists():
        pytest.skip("chromium is not installed (apt-get install -y chromium); scripts/install.sh does it in CI")
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright (the Python package)")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--disable-sync"])
        yield b
        b.close()


@pytest.fixture(scope="session")
def make_random_model():
    return random_model


@pytest.fixture(autouse=True)
def _one_torch_thread(one_torch_thread):
    """Every test here runs on one torch thread (see tests/conftest.py)."""
    yield
