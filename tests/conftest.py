import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from chatforge.common import shared_data_dir


@pytest.fixture(scope="session")
def shared_data():
    """Path to ../shared/data; tests that need it skip (with the reason) when it is absent."""
    d = shared_data_dir()
    if d is None:
        pytest.skip("../shared/data is absent (set CHATFORGE_SHARED_DATA to point at it)")
    return d


@pytest.fixture(scope="session")
def tiny_tokenizer(tmp_path_factory):
    """A small real tokenizer (vocab 512, specials included), trained in about a second on
    tinyshakespeare from ../shared/data, or on this repo's own .py/.md files when that is absent.
    Saved to a temp dir: `tok.path` is its directory (run dirs can copy it)."""
    from chatforge.common import REPO_ROOT
    from chatforge.tokenizer import train_from_texts

    d = shared_data_dir()
    if d is not None and (d / "text" / "tinyshakespeare.txt").is_file():
        texts = [(d / "text" / "tinyshakespeare.txt").read_text(encoding="utf-8")[:300_000]]
    else:
        files = sorted(p for ext in ("*.py", "*.md") for p in (REPO_ROOT / "chatforge").rglob(ext))
        texts = [p.read_text(encoding="utf-8", errors="replace") for p in files]
    tok = train_from_texts(texts, 512, num_proc=1, progress=False)
    tok.save(tmp_path_factory.mktemp("tiny_tokenizer"))
    return tok


@pytest.fixture
def one_torch_thread():
    """Run a test with one torch intra-op thread. The test models are tiny: one thread is fastest,
    and on a busy machine OpenMP's spinning across threads makes each small op ~100x slower.
    Stage folders that need it opt in with an autouse fixture that requests this one."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


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


def _child_pids(pid: int) -> list[int]:
    """Direct children of pid, from /proc (Linux)."""
    kids = []
    for d in Path("/proc").glob("[0-9]*"):
        try:
            if int((d / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                kids.append(int(d.name))
        except (OSError, ValueError, IndexError):
            continue
    return kids


@pytest.fixture
def run_reporting_hangs():
    """run(cmd, timeout=300) -> CompletedProcess (text output), with one OpenMP thread a process,
    for torchrun commands. If cmd hangs, its child processes (torchrun's workers) get SIGABRT with
    faulthandler on, and the test fails showing where each one was stuck. (One CI run saw the
    2-process SFT test time out after its last step; 12 runs of that test alone did not.)"""
    def run(cmd, timeout=300):
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONFAULTHANDLER": "1"}
        p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        try:
            out, err = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            for pid in _child_pids(p.pid):
                os.kill(pid, signal.SIGABRT)
            try:
                out, err = p.communicate(timeout=60)
            except subprocess.TimeoutExpired:
                p.kill()
                out, err = p.communicate()
            pytest.fail(f"{' '.join(map(str, cmd[1:6]))} ... hung for {timeout} s; stdout:\n{out[-3000:]}\n"
                        f"stderr:\n{err[-8000:]}")
        return subprocess.CompletedProcess(cmd, p.returncode, out, err)
    return run

