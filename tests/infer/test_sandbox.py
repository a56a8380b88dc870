"""The python sandbox: every class of escape, in every isolation mode this machine offers, run as
root and as an unprivileged user (created here when the tests run as root).

A "box" is one (mode, user) pair. Root's calls go through run_python in this process (or a child
process holding a secret in its environment); the unprivileged user's calls go through a small
driver run with `runuser` and Debian's /usr/bin/python3 (root's pyenv interpreter under /root is
not executable by other users). Every check looks from the host side where it can: files that must
not exist, a listener that must not be reached, processes that must not survive.
"""

from __future__ import annotations

import json
import os
import pwd
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

import chatforge
from chatforge.infer import sandbox
from chatforge.infer.sandbox import OFF_MESSAGE, available_modes, run_python
from chatforge.infer.tools import Tool, ToolRegistry, default_tools

REPO = Path(chatforge.__file__).resolve().parents[1]
USER = "chatforge-sbx"
SECRET = "hunter2-" + "%08x" % random.getrandbits(32)
ROOT = os.geteuid() == 0
DRIVER = """
import dataclasses, json, sys
sys.path.insert(0, {repo!r})
from chatforge.infer.sandbox import available_modes, run_python
req = json.loads(sys.stdin.read())
if req.get("probe"):
    print(json.dumps(list(available_modes())))
else:
    print(json.dumps(dataclasses.asdict(run_python(req["code"], isolation=req["mode"], **req["kw"]))))
"""


def driver(repo=REPO) -> str:
    return DRIVER.format(repo=str(repo))


# ------------------------------------------------------------------------- users and boxes
@pytest.fixture(scope="session")
def unprivileged():
    """(name, home) of an unprivileged user with a private ~/.ssh/id_rsa holding SECRET."""
    if not ROOT:
        pytest.skip("the tests already run unprivileged: the 'self' boxes are that user")
    if not (shutil.which("useradd") and shutil.which("runuser") and Path("/usr/bin/python3").exists()):
        pytest.skip("needs useradd, runuser and /usr/bin/python3 to run as an unprivileged user")
    try:
        pwd.getpwnam(USER)
    except KeyError:
        subprocess.run(["useradd", "--create-home", "--shell", "/bin/sh", USER], check=True)
    home = Path(pwd.getpwnam(USER).pw_dir)
    ssh = home / ".ssh"
    ssh.mkdir(mode=0o700, exist_ok=True)
    (ssh / "id_rsa").write_text(SECRET + "\n")
    os.chmod(ssh / "id_rsa", 0o600)
    for p in (ssh, ssh / "id_rsa"):
        shutil.chown(p, USER, USER)
    # the sandbox's two modules in a world-readable copy: the checkout may sit where USER cannot read
    pkg = Path(tempfile.mkdtemp(prefix="chatforge-sbx-pkg-", dir="/tmp"))
    os.chmod(pkg, 0o755)
    (pkg / "chatforge" / "infer").mkdir(parents=True)
    for rel in ("chatforge/__init__.py", "chatforge/infer/__init__.py", "chatforge/infer/sandbox.py",
                "chatforge/infer/sandbox_runner.py"):
        shutil.copy(REPO / rel, pkg / rel)
    for d in (pkg / "chatforge", pkg / "chatforge" / "infer"):
        os.chmod(d, 0o755)
    probe = subprocess.run(["runuser", "-u", USER, "--", "/usr/bin/python3", "-c", driver(pkg)],
                           input=json.dumps({"probe": True}), capture_output=True, text=True, timeout=60)
    if probe.returncode != 0:
        pytest.skip(f"user {USER} cannot run the sandbox: {probe.stderr.strip()[-200:]}")
    yield USER, home, tuple(json.loads(probe.stdout)), pkg
    shutil.rmtree(pkg, ignore_errors=True)


class Box:
    def __init__(self, mode: str, user: str | None, home: Path, pkg: Path = REPO):
        self.mode, self.user, self.home, self.pkg = mode, user, home, pkg

    def run(self, code: str, secret_env: bool = False, **kw) -> sandbox.SandboxResult:
        if self.user is None and not secret_env:
            return run_python(code, isolation=self.mode, **kw)
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "CHATFORGE_TEST_SECRET": SECRET}
        if self.user is None:
            cmd = [sys.executable, "-c", driver()]
        else:
            cmd = ["runuser", "-u", self.user, "--", "env", "-i", *(f"{k}={v}" for k, v in env.items()),
                   "/usr/bin/python3", "-c", driver(self.pkg)]
        r = subprocess.run(cmd, input=json.dumps({"code": code, "mode": self.mode, "kw": kw}), env=env,
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr[-2000:]
        return sandbox.SandboxResult(**json.loads(r.stdout))


@pytest.fixture(params=[(m, who) for m in sandbox.MODES for who in ("root", "user")],
                ids=lambda p: f"{p[0]}-{p[1] if ROOT else 'self'}")
def box(request):
    mode, who = request.param
    if who == "user":
        if not ROOT:
            pytest.skip("the tests run unprivileged: the other parameter covers this user")
        name, home, modes, pkg = request.getfixturevalue("unprivileged")
        if mode not in modes:
            pytest.skip(f"isolation mode {mode!r} is not available to an unprivileged user here")
        return Box(mode, name, home, pkg)
    if mode not in available_modes():
        pytest.skip(f"isolation mode {mode!r} is not available here ({sandbox.describe_isolation()})")
    return Box(mode, None, Path.home())


def outside_dir() -> Path:
    """A world-writable directory on the host, outside any sandbox."""
    d = Path(tempfile.mkdtemp(prefix="chatforge-outside-", dir="/tmp"))
    os.chmod(d, 0o777)
    return d


def processes_with(marker: str) -> list[int]:
    out = []
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                if marker.encode() in (p / "cmdline").read_bytes():
                    out.append(int(p.name))
            except OSError:
                pass
    return out


def assert_none_survive(marker: str) -> None:
    for _ in range(60):  # SIGKILLed processes may take a moment to be reaped
        if not processes_with(marker):
            return
        time.sleep(0.05)
    raise AssertionError(f"sandbox processes survived the call: {processes_with(marker)}")


# ------------------------------------------------------------------------- it works
def test_prints_and_shows_last_expression(box):
    r = box.run("print('hi')\nx = 6\nx * 7")
    assert r.output == "hi\n42\n" and r.exit_code == 0 and not r.timed_out and r.isolation == box.mode


def test_exception_is_output_not_crash(box):
    r = box.run("def f():\n    return 1/0\nf()")
    assert "ZeroDivisionError" in r.output and 'File "<cell>", line 2' in r.output
    assert "runner" not in r.output  # runner frames are hidden
    assert r.exit_code == 1 and "[exit code 1]" in r.as_tool_output()


def test_private_tmp_is_the_working_dir(box):
    r = box.run("import os\nopen('scratch.txt', 'w').write('ok')\n"
                "print(os.getcwd(), open('/tmp/scratch.txt').read(), os.listdir('/tmp'))")
    assert r.output == "/tmp ok ['scratch.txt']\n"


# ------------------------------------------------------------------------- escapes
def test_env_secrets(box):
    # the secret sits in the environment of the process that calls run_python (and, for the
    # unprivileged user, of its parents): neither the sandbox's env nor any /proc entry shows it
    code = ("import os\nprint(os.environ.get('CHATFORGE_TEST_SECRET'))\n"
            "for pid in os.listdir('/proc'):\n"
            "    for f in ('environ', 'cmdline'):\n"
            "        try:\n            data = open(f'/proc/{pid}/{f}', 'rb').read()\n"
            "        except OSError as e:\n            continue\n"
            "        if b'hunter2-' in data:\n            print(pid, f, data[data.index(b'hunter2-'):][:20])\n")
    r = box.run(code, secret_env=True)
    assert r.output == "None\n" and SECRET not in r.output, r.output


def test_proc_shows_only_the_sandbox(box):
    code = ("import os\npids = [p for p in os.listdir('/proc') if p.isdigit()]\nprint(len(pids))\n"
            f"print(os.path.exists('/proc/{os.getpid()}'))\n"
            "print(sorted(open('/proc/1/cmdline', 'rb').read().split(b'\\0'))[-1][:40])")
    r = box.run(code)
    n, host_pid_seen, init = r.output.splitlines()
    assert int(n) < 10, r.output  # its own pid namespace: a handful of processes, not the host's
    assert host_pid_seen == "False" or int(n) < 10
    assert b"systemd" not in init.encode() and "pytest" not in r.output


def test_users_private_files(box, tmp_path):
    if box.user is None:
        secret_file = tmp_path / "id_rsa"  # root's own private file
        secret_file.write_text(SECRET)
        os.chmod(secret_file, 0o600)
    else:
        secret_file = box.home / ".ssh" / "id_rsa"
    code = (f"import os\nfor p in [{str(secret_file)!r}, {str(box.home)!r} + '/.ssh/id_rsa']:\n"
            "    try:\n        print(open(p).read())\n    except OSError as e:\n        print('no', e.errno)\n"
            f"for d in [{str(box.home)!r}, '/home', '/etc', '/root', '/work']:\n"
            "    try:\n        print(d, os.listdir(d))\n    except OSError as e:\n        print(d, 'no', e.errno)\n")
    code += (f"try:\n    print('repo', os.listdir({str(REPO)!r}))\n"
             "except OSError as e:\n    print('repo no', e.errno)\n")
    r = box.run(code)
    assert SECRET not in r.output and "id_rsa" not in r.output and ".ssh" not in r.output
    assert "passwd" not in r.output and "shadow" not in r.output  # /etc holds only the loader cache
    # the checkout next to a venv inside it: only the venv's path is there, not the sources
    assert "pyproject.toml" not in r.output and "'chatforge'" not in r.output, r.output


def test_writes_outside_the_sandbox(box):
    out = outside_dir()
    targets = [out / "open.txt", out / "shell.txt", out / "ctypes.txt", REPO / f"escape-{SECRET}",
               Path("/usr") / f"escape-{SECRET}", Path("/") / f"escape-{SECRET}"]
    code = ("import ctypes, subprocess\n"
            f"for p in {[str(t) for t in targets]!r}:\n"
            "    try:\n        open(p, 'w').write('x'); print('wrote', p)\n"
            "    except OSError as e:\n        print('no', e.errno)\n"
            f"try:\n    subprocess.run(['sh', '-c', 'echo x > {targets[1]}'])\nexcept OSError as e:\n    print(e)\n"
            f"ctypes.CDLL(None).system(b'echo x > {targets[2]}')\n")
    try:
        r = box.run(code)
        assert not any(t.exists() for t in targets), r.output
        assert "wrote" not in r.output
    finally:
        shutil.rmtree(out, ignore_errors=True)
        for t in targets[3:]:
            t.unlink(missing_ok=True)


def test_network(box):
    host = socket.socket()
    host.bind(("127.0.0.1", 0))
    host.listen(8)
    host.setblocking(False)
    port = host.getsockname()[1]
    abstract = socket.socket(socket.AF_UNIX)
    abstract.bind(f"\0chatforge-test-{SECRET}")
    abstract.listen(8)
    abstract.setblocking(False)
    code = ("import socket, subprocess, ctypes\n"
            "def tcp():\n    s = socket.socket(); s.settimeout(1)\n"
            "    s.connect(('127.0.0.1', PORT)); print('tcp connected')\n"
            "def unix():\n    s = socket.socket(socket.AF_UNIX)\n"
            "    s.connect('\\0chatforge-test-SECRET'); print('unix connected')\n"
            "for f in (tcp, unix):\n"
            "    try:\n        f()\n    except OSError as e:\n        print('no', e.errno)\n"
            "try:\n    subprocess.run(['python3', '-c',\n"
            "                    'import socket; socket.create_connection((\"127.0.0.1\", PORT), 1)'],"
            " capture_output=True)\nexcept OSError as e:\n    print(e)\n"
            "libc = ctypes.CDLL(None, use_errno=True)\nprint('raw socket', libc.socket(2, 1, 0), ctypes.get_errno())\n"
            ).replace("PORT", str(port)).replace("SECRET", SECRET)
    try:
        r = box.run(code)
        assert "connected" not in r.output and "raw socket -1 97" in r.output, r.output  # seccomp: AF_INET off
        for s in (host, abstract):
            with pytest.raises(BlockingIOError):
                s.accept()
    finally:
        host.close()
        abstract.close()


def test_namespace_escapes_blocked_by_seccomp(box):
    if sandbox.seccomp_program() is None:
        pytest.skip(f"no seccomp table for {os.uname().machine}")
    code = ("import ctypes, os\nlibc = ctypes.CDLL(None, use_errno=True)\n"
            "print('unshare', libc.unshare(0x10000000), ctypes.get_errno())\n"  # CLONE_NEWUSER
            "print('mount', libc.mount(b'none', b'/tmp', b'tmpfs', 0, None), ctypes.get_errno())\n"
            "print('ptrace', libc.ptrace(16, 1, 0, 0), ctypes.get_errno())\n"  # PTRACE_ATTACH
            "print('uid', os.getuid(), 'caps', [l for l in open('/proc/self/status') if l.startswith('CapEff')])\n")
    r = box.run(code)
    assert "unshare -1 1\n" in r.output and "mount -1 1\n" in r.output and "ptrace -1 1\n" in r.output
    assert "CapEff:\\t0000000000000000" in r.output, r.output


def test_fork_bomb(box):
    fsize_mb = random.randint(100, 999)  # marks this call's runner processes
    code = "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass"
    r = box.run(code, timeout=1.5, fsize_mb=fsize_mb)
    assert r.timed_out or r.exit_code != 0
    assert_none_survive(f"{fsize_mb << 20}")


def test_memory(box):
    r = box.run("x = bytearray(4 * 1024**3)\nprint('allocated')", memory_mb=256)
    assert "MemoryError" in r.output and "allocated" not in r.output


def test_cpu_loop(box):
    t = time.monotonic()
    r = box.run("print('start', flush=True)\nwhile True: pass", timeout=1.0)
    assert r.timed_out and r.seconds < 3 and time.monotonic() - t < 10
    assert r.output.startswith("start") and "timed out" in r.as_tool_output()


def test_ignored_signals(box):
    marker = f"{random.randint(100, 999)}.{random.randint(100, 999)}"
    code = ("import os, signal, time\n"
            "for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):\n    signal.signal(s, signal.SIG_IGN)\n"
            f"if os.fork() == 0:\n    os.execvp('sleep', ['sleep', '{marker}'])\n"
            "print('ignoring', flush=True)\nwhile True:\n    time.sleep(0.01)\n")
    r = box.run(code, timeout=1.0)
    assert r.timed_out and r.output.startswith("ignoring") and r.seconds < 3
    assert_none_survive(marker)


def test_children_outliving_the_call(box):
    marker = f"{random.randint(100, 999)}.{random.randint(100, 999)}"
    code = ("import subprocess\n"
            f"subprocess.Popen(['sh', '-c', '(trap \"\" HUP TERM; setsid sleep {marker} &) &'],\n"
            "                 start_new_session=True)\n"
            "import time; time.sleep(0.2)\nprint('spawned')")
    r = box.run(code)
    assert r.output == "spawned\n" and r.exit_code == 0
    assert_none_survive(marker)


def test_output_floods(box):
    r = box.run("while True: print('x' * 1000)", max_output=5000)
    assert r.truncated and len(r.output) <= 5000 and "output truncated" in r.as_tool_output()
    r = box.run("import sys\nwhile True: sys.stderr.write('y' * 65536)", max_output=5000)
    assert r.truncated and r.output == "y" * 5000


def test_big_files(box):
    code = ("import os\n"
            "try:\n    open('/tmp/one', 'wb').write(b'x' * (32 << 20))\n"
            "except OSError as e:\n    print('one', e.errno, os.path.getsize('/tmp/one'))\nos.remove('/tmp/one')\n"
            "try:\n    for i in range(8):\n        open(f'/tmp/f{i}', 'wb').write(b'x' * (15 << 20))\n"
            "except OSError as e:\n    print('many', i, e.errno)\n")
    r = box.run(code, fsize_mb=16)
    assert f"one 27 {16 << 20}\n" in r.output  # EFBIG at RLIMIT_FSIZE
    assert "many 4 28\n" in r.output, r.output  # ENOSPC: the private /tmp holds 64 MiB


# ------------------------------------------------------------------------- the interpreter under /tmp
def test_interpreter_under_tmp(box):
    """A virtualenv (with its own copy of the interpreter) under /tmp, as CI and throwaway setups
    make them: the private /tmp of the sandbox must not hide it."""
    d = Path(tempfile.mkdtemp(prefix="chatforge-venv-", dir="/tmp"))
    try:
        venv = d / "venv"
        if box.user is None:
            base, run_as = getattr(sys, "_base_executable", sys.executable), []
        else:
            shutil.chown(d, box.user, box.user)
            base, run_as = "/usr/bin/python3", ["runuser", "-u", box.user, "--"]
        subprocess.run([*run_as, base, "-m", "venv", "--copies", "--without-pip", str(venv)], check=True,
                       timeout=120)
        py = venv / "bin" / "python"
        r = subprocess.run([*run_as, str(py), "-c", driver(box.pkg)], capture_output=True, text=True, timeout=120,
                           input=json.dumps({"code": "import sys, json\nprint(sys.executable)\n6 * 7",
                                             "mode": box.mode, "kw": {}}))
        assert r.returncode == 0, r.stderr[-2000:]
        res = json.loads(r.stdout)
        assert res["output"] == f"{py}\n42\n" and res["exit_code"] == 0, res
    finally:
        shutil.rmtree(d, ignore_errors=True)


# ------------------------------------------------------------------------- no isolation: the tool is off
def test_without_isolation_the_tool_is_off(monkeypatch):
    monkeypatch.setattr(sandbox, "available_modes", lambda: ())
    monkeypatch.delenv(sandbox.UNSAFE_ENV, raising=False)
    assert sandbox.best_isolation() == "off"
    out = default_tools().get("python").run("print('ran')")
    assert out == OFF_MESSAGE and "\n" not in out and "--unsafe-python-tool" in out
    assert "OFF" in sandbox.describe_isolation()
    monkeypatch.setenv(sandbox.UNSAFE_ENV, "0")
    assert sandbox.best_isolation() == "off"  # only the flag's exact value turns it on
    sandbox.allow_unsafe()
    assert sandbox.best_isolation() == "unsafe" and "UNSAFE" in sandbox.describe_isolation()
    r = run_python("print('ran')")
    assert r.output == "ran\n" and r.isolation == "unsafe"


def test_startup_banner_names_the_isolation(capsys, monkeypatch):
    from chatforge.infer.cli import announce_isolation

    monkeypatch.delenv(sandbox.UNSAFE_ENV, raising=False)
    announce_isolation(type("A", (), {"no_tools": False, "unsafe_python_tool": False})())
    line = capsys.readouterr().out
    assert line.startswith("python tool: ") and line.count("\n") == 1
    assert (available_modes() and "sandboxed" in line) or (not available_modes() and "OFF" in line)


def test_registry_reports_tool_failures():
    def broken(text):
        raise RuntimeError("boom")
    reg = ToolRegistry([Tool("search", "<|search_start|>", "<|search_end|>", broken)])
    assert reg.call(reg.get("search"), "q") == "[tool search failed: RuntimeError: boom]"
    with pytest.raises(ValueError):
        reg.register(Tool("search", "<|search_start|>", "<|search_end|>", broken))
    if available_modes():
        assert default_tools().get("python").run("2 ** 10") == "1024\n"


def test_seccomp_program_is_well_formed():
    prog = sandbox.seccomp_program()
    if prog is None:
        pytest.skip(f"no seccomp table for {os.uname().machine}")
    assert len(prog) % 8 == 0 and 20 < len(prog) // 8 < 256  # jump offsets are one byte


@pytest.mark.parametrize("mode", sandbox.MODES)
def test_sandbox_dies_with_its_caller(mode):
    """A server killed by SIGKILL (no cleanup code runs) leaves no sandbox behind."""
    if mode not in available_modes():
        pytest.skip(f"isolation mode {mode!r} is not available here")
    marker = f"{random.randint(100, 999)}.{random.randint(100, 999)}"
    code = (f"import os, time\nif os.fork() == 0:\n    os.execvp('sleep', ['sleep', '{marker}'])\n"
            "print('up', flush=True)\ntime.sleep(60)")
    caller = subprocess.Popen([sys.executable, "-c", driver()], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              text=True)
    caller.stdin.write(json.dumps({"code": code, "mode": mode, "kw": {"timeout": 60}}))
    caller.stdin.close()
    for _ in range(200):
        if processes_with(marker):
            break
        time.sleep(0.05)
    assert processes_with(marker), "the sandboxed child never started"
    caller.kill()
    caller.wait()
    assert_none_survive(marker)
