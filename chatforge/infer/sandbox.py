"""A python sandbox for the model's tool calls: run untrusted code, return its output as text.

Each call is a fresh process (sandbox_runner.py) with:
- a wall-clock timeout (the whole process tree is killed) and CPU/memory/file-size/process limits;
- no network: its own network namespace when we can make one (root or user namespaces via
  `unshare`), plus an audit hook in the child that refuses to create sockets either way;
- its own pid + mount namespace when available: a private /proc (the parent's environment is not
  readable through /proc), a private size-capped tmpfs over /tmp, and user `nobody` so nothing
  outside that tmpfs is writable; else ("bare" mode) a throwaway working directory;
- a scrubbed environment (PATH, LANG, HOME only: no secrets);
- output (stdout + stderr, interleaved) truncated at `max_output` bytes.
Nothing the code does raises here: every failure comes back as text in SandboxResult.
"""

from __future__ import annotations

import functools
import os
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

RUNNER = Path(__file__).with_name("sandbox_runner.py")
NS_FLAGS = ["--net", "--pid", "--fork", "--kill-child", "--mount-proc"]


@dataclass
class SandboxResult:
    output: str          # what the code printed (stdout and stderr interleaved), maybe truncated
    exit_code: int | None
    timed_out: bool = False
    truncated: bool = False
    isolation: str = "bare"
    seconds: float = 0.0
    pgid: int | None = None  # the process group it ran in (gone once run_python returns)

    def as_tool_output(self) -> str:
        """The text the model sees between <|output_start|> and <|output_end|>."""
        notes = []
        if self.truncated:
            notes.append("output truncated")
        if self.timed_out:
            notes.append("timed out, process killed")
        elif self.exit_code not in (0, None) and not self.truncated:
            notes.append(f"exit code {self.exit_code}")
        text = self.output
        if notes:
            text += ("" if not text or text.endswith("\n") else "\n") + f"[{'; '.join(notes)}]"
        return text


@functools.lru_cache(maxsize=None)
def best_isolation() -> str:
    """'ns' when we can make net/pid/mount namespaces and drop to nobody (root), else 'bare'."""
    if os.name != "posix" or not hasattr(os, "geteuid") or os.geteuid() != 0:
        return "bare"
    if not (shutil.which("unshare") and shutil.which("mount")):
        return "bare"
    try:
        r = subprocess.run(["unshare", *NS_FLAGS, "true"], capture_output=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return "bare"
    return "ns" if r.returncode == 0 else "bare"


def _kill_tree(proc: subprocess.Popen) -> None:
    # The child leads its own session/process group; in 'ns' mode killing unshare (the pid
    # namespace's parent, --kill-child) also takes down everything inside the namespace.
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        proc.kill()
    except ProcessLookupError:
        pass


def run_python(code: str, *, timeout: float = 5.0, memory_mb: int = 512, max_output: int = 8192,
               nproc: int = 64, fsize_mb: int = 16, isolation: str | None = None) -> SandboxResult:
    """Run `code` in a fresh sandboxed python process; never raises for anything the code does."""
    isolation = isolation or best_isolation()
    start = time.monotonic()
    workdir = tempfile.mkdtemp(prefix="chatforge-sandbox-")
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": "/tmp/work" if isolation == "ns" else workdir,
           "PYTHONIOENCODING": "utf-8", "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
           "MKL_NUM_THREADS": "1", "PYTHONDONTWRITEBYTECODE": "1"}
    limits = [str(memory_mb << 20), str(max(1, int(timeout + 1))), str(nproc), str(fsize_mb << 20)]
    cmd = [sys.executable, "-I", "-B", str(RUNNER), isolation, *limits]
    if isolation == "ns":
        cmd = ["unshare", *NS_FLAGS, *cmd]
    chunks: list[bytes] = []
    size = 0
    timed_out = truncated = False
    try:
        proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, cwd=workdir, env=env,
                                start_new_session=True)
    except OSError as e:
        shutil.rmtree(workdir, ignore_errors=True)
        return SandboxResult(f"sandbox failed to start: {e}", None, isolation=isolation)
    try:
        try:
            proc.stdin.write(code.encode("utf-8", "replace"))
            proc.stdin.close()
        except BrokenPipeError:
            pass
        sel = selectors.DefaultSelector()
        sel.register(proc.stdout, selectors.EVENT_READ)
        deadline = start + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                timed_out = True
                break
            if not sel.select(timeout=min(left, 0.1)):
                if proc.poll() is not None and not sel.select(timeout=0):
                    break  # exited; a leftover grandchild may hold the pipe, don't wait on it
                continue
            data = os.read(proc.stdout.fileno(), 65536)
            if not data:
                break
            chunks.append(data)
            size += len(data)
            if size > max_output:
                truncated = True
                break
        sel.close()
    finally:
        _kill_tree(proc)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
        proc.stdout.close()
        shutil.rmtree(workdir, ignore_errors=True)
    out = b"".join(chunks)[:max_output].decode("utf-8", "replace")
    code_ = proc.returncode if not (timed_out or truncated) else None
    return SandboxResult(out, code_, timed_out=timed_out, truncated=truncated,
                         isolation=isolation, seconds=time.monotonic() - start, pgid=proc.pid)
