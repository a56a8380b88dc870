"""A python sandbox for the model's tool calls: run untrusted code, return its output as text.

Each call is a fresh process (sandbox_runner.py) in one of these isolation modes, best first:
- "bwrap": bubblewrap (Debian's `bubblewrap`): user/mount/net/pid/ipc/uts namespaces, a new root
  holding only read-only binds of the system libraries and the interpreter's prefixes (wherever
  they live, /tmp included), a private size-capped tmpfs /tmp as working dir, a private /proc,
  no capabilities, the seccomp filter of sandbox_runner.seccomp_program.
- "unshare": the same walls built by the runner itself, in namespaces made by util-linux
  `unshare` (with a user namespace when not root, so it needs no privileges); it ends as user
  nobody when started by root, without capabilities otherwise, then no-new-privs + seccomp.
  As root this mode comes first: bwrap keeps the kernel's uid 0 (minus capabilities), which
  RLIMIT_NPROC does not limit, while "unshare" ends as nobody, which it does.
- no isolation available: the python tool is OFF; each call answers one line naming
  --unsafe-python-tool, which selects "unsafe" (limits + an audit hook; no security boundary).
  Never a silently weaker mode.
Every mode: a wall-clock timeout (the whole process tree is killed: it is a pid namespace whose
init dies with us), CPU/memory/file-size/process limits, a scrubbed environment (no secrets),
output (stdout + stderr interleaved) truncated at `max_output` bytes. Nothing the code does
raises here: every failure comes back as text in SandboxResult.
"""

from __future__ import annotations

import functools
import marshal
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

from chatforge.infer.sandbox_runner import SANDBOX_TMP_BYTES, python_paths, seccomp_program, system_paths

RUNNER = Path(__file__).with_name("sandbox_runner.py")
# The runner arrives compiled, on stdin ahead of the model's code: compiling its source costs ~12 ms
# of CPU per call (and a .pyc is not always there: PYTHONDONTWRITEBYTECODE), and the sandbox
# needs no path to it.
BOOT = ("import sys, marshal; n = int(sys.argv.pop(1)); "
        "exec(marshal.loads(sys.stdin.buffer.read(n)), {'__name__': '__main__'})")
MODES = ("bwrap", "unshare")
UNSAFE_ENV = "CHATFORGE_UNSAFE_PYTHON_TOOL"  # set by --unsafe-python-tool (inherited by workers)
OFF_MESSAGE = ("[python tool is off: this machine allows no sandbox (neither bubblewrap nor user "
               "namespaces work); restart with --unsafe-python-tool to run code unisolated]")
_ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": "/tmp",
        "PYTHONIOENCODING": "utf-8", "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1", "PYTHONDONTWRITEBYTECODE": "1"}


@dataclass
class SandboxResult:
    output: str          # what the code printed (stdout and stderr interleaved), maybe truncated
    exit_code: int | None
    timed_out: bool = False
    truncated: bool = False
    isolation: str = "off"
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


# ------------------------------------------------------------------------- choosing a mode
def allow_unsafe() -> None:
    """--unsafe-python-tool: with no isolation available, run code in "unsafe" mode instead of off.
    An environment variable, so that worker processes (eval under torchrun) inherit the choice."""
    os.environ[UNSAFE_ENV] = "1"


def _is_root() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0


@functools.lru_cache(maxsize=None)
def available_modes() -> tuple[str, ...]:
    """The isolation modes that work on this machine for this user, best first (each is probed
    by running the sandbox once)."""
    if os.name != "posix" or sys.platform != "linux":
        return ()
    ok = [m for m in MODES if _probe(m)]
    if _is_root():
        ok.sort(key=lambda m: m != "unshare")
    return tuple(ok)


def _probe(mode: str) -> bool:
    r = run_python("print(6 * 7)", isolation=mode, timeout=10)
    return r.output == "42\n" and r.exit_code == 0


def best_isolation() -> str:
    """The mode run_python uses by default: the best available one, else "unsafe" if allowed,
    else "off"."""
    modes = available_modes()
    if modes:
        return modes[0]
    return "unsafe" if os.environ.get(UNSAFE_ENV) == "1" else "off"


def describe_isolation() -> str:
    """One line for start-up banners: which isolation the python tool runs under."""
    mode = best_isolation()
    seccomp = "seccomp" if seccomp_program() is not None else f"no seccomp table for {os.uname().machine}"
    if mode == "bwrap":
        return f"python tool: sandboxed by bubblewrap (namespaces, read-only root, no network, {seccomp})"
    if mode == "unshare":
        who = "user nobody" if _is_root() else "no capabilities"
        return (f"python tool: sandboxed by unshare namespaces (read-only root, no network, {who}, "
                f"{seccomp})")
    if mode == "unsafe":
        return ("python tool: UNSAFE, no isolation (--unsafe-python-tool): the model's code can "
                "read and write your files and reach the network")
    return ("python tool: OFF, no sandbox available (needs bubblewrap or user namespaces); "
            "--unsafe-python-tool runs it unisolated")


# ------------------------------------------------------------------------- one call
def _command(mode: str, limits: list[str]) -> tuple[list[str] | None, int | None]:
    """The argv for `mode` (None if its tool is missing) and the fd carrying the seccomp filter."""
    runner = [sys.executable, "-I", "-S", "-B", "-c", BOOT, str(len(_runner_code())), mode, *limits,
              os.pathsep.join(_python_paths()), os.pathsep.join(_site_dirs())]
    if mode == "unshare":
        if not shutil.which("unshare"):
            return None, None
        user = [] if _is_root() else ["--user", "--map-root-user"]
        # setpriv: if this process dies (even by SIGKILL), so does unshare, then the runner
        # (its own parent-death signal), then the whole pid namespace: bwrap's --die-with-parent
        die = ["setpriv", "--pdeathsig", "KILL"] if shutil.which("setpriv") else []
        return [*die, "unshare", *user, "--mount", "--net", "--pid", "--ipc", "--uts", "--fork",
                "--kill-child", *runner], None
    if mode == "bwrap":
        if not shutil.which("bwrap"):
            return None, None
        cmd = ["bwrap", "--unshare-all", "--die-with-parent", "--new-session", "--cap-drop", "ALL"]
        cmd += ["--uid", "65534", "--gid", "65534"] if _is_root() else []
        for p in system_paths():
            cmd += ["--symlink", os.readlink(p), p] if os.path.islink(p) else ["--ro-bind", p, p]
        cmd += ["--size", str(SANDBOX_TMP_BYTES), "--tmpfs", "/tmp"]  # before binds under /tmp
        for p in _python_paths():
            cmd += ["--ro-bind", p, p]
        cmd += ["--proc", "/proc", "--dev", "/dev", "--remount-ro", "/", "--chdir", "/tmp"]
        fd = None
        prog = seccomp_program()
        if prog is not None:
            r, w = os.pipe()
            os.write(w, prog)  # a few hundred bytes: fits the pipe buffer, no writer thread needed
            os.close(w)
            cmd += ["--seccomp", str(r)]
            fd = r
        return cmd + runner, fd
    if mode == "unsafe":
        return runner, None
    raise ValueError(f"unknown isolation mode {mode!r}")


@functools.lru_cache(maxsize=None)
def _runner_code() -> bytes:
    return marshal.dumps(compile(RUNNER.read_text(), str(RUNNER), "exec"))


@functools.lru_cache(maxsize=None)
def _python_paths() -> tuple[str, ...]:
    return tuple(python_paths())


@functools.lru_cache(maxsize=None)
def _site_dirs() -> tuple[str, ...]:
    import site
    return tuple(p for p in site.getsitepackages() if os.path.isdir(p))


def _kill_tree(proc: subprocess.Popen) -> None:
    # The child leads its own session/process group; killing unshare/bwrap (the pid namespace's
    # parent, --kill-child / --die-with-parent) also takes down everything inside the namespace.
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
    if isolation == "off":
        return SandboxResult(OFF_MESSAGE, None, isolation="off")
    start = time.monotonic()
    limits = [str(memory_mb << 20), str(max(1, int(timeout + 1))), str(nproc), str(fsize_mb << 20)]
    cmd, seccomp_fd = _command(isolation, limits)
    if cmd is None:
        return SandboxResult(f"sandbox failed to start: {isolation} is not installed", None,
                             isolation=isolation)
    workdir = tempfile.mkdtemp(prefix="chatforge-sandbox-") if isolation == "unsafe" else None
    env = dict(_ENV, HOME=workdir) if workdir else _ENV
    chunks: list[bytes] = []
    size = 0
    timed_out = truncated = False
    try:
        proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, cwd=workdir or "/", env=env,
                                start_new_session=True,
                                pass_fds=(seccomp_fd,) if seccomp_fd is not None else ())
    except OSError as e:
        if workdir:
            shutil.rmtree(workdir, ignore_errors=True)
        return SandboxResult(f"sandbox failed to start: {e}", None, isolation=isolation)
    finally:
        if seccomp_fd is not None:
            os.close(seccomp_fd)
    try:
        try:
            proc.stdin.write(_runner_code() + code.encode("utf-8", "replace"))
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
        if workdir:
            shutil.rmtree(workdir, ignore_errors=True)
    out = b"".join(chunks)[:max_output].decode("utf-8", "replace")
    code_ = proc.returncode if not (timed_out or truncated) else None
    return SandboxResult(out, code_, timed_out=timed_out, truncated=truncated,
                         isolation=isolation, seconds=time.monotonic() - start, pgid=proc.pid)
